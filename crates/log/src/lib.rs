//! The logging setup shared by `keelson`, `keelson-server`, `keelson-agent` and
//! `keelson-firstboot`: `tracing` events to stderr, filtered by `KEELSON_LOG` (or `RUST_LOG`;
//! `info` by default), with colour only when stderr is a terminal, and without timestamps when
//! stderr goes to the journal (journald stamps lines itself) or when `KEELSON_LOG_TIME=0` (a
//! caller that shows the lines to a user and times the steps itself: `cargo xtask demo`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How a binary's log lines look.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Leave out the module path of each event (the first-boot console wants short lines).
    pub no_target: bool,
}

/// Install the global subscriber. Call once, first thing in `main`.
pub fn init(style: Style) {
    let filter = EnvFilter::try_from_env("KEELSON_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let no_time = journald || std::env::var_os("KEELSON_LOG_TIME").is_some_and(|v| v == "0");
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::stderr().is_terminal())
        .with_target(!style.no_target);
    if no_time {
        b.without_time().init();
    } else {
        b.init();
    }
}
