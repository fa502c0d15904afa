//! Named points in the apply path where a test can stop the agent, to cut the power there.
//!
//! `KEELSON_AGENT_FAILPOINT=<name>` makes the agent print `keelson-agent: failpoint <name>
//! reached` on stderr when it gets there and then wait forever, so that a VM test can kill
//! QEMU at exactly that point (issue [6/12] (c): power cuts during the download, the usr and
//! verity writes and around the UKI's rename). Nothing else reads the variable. It is read
//! once, at start ([`init`]) or at the first failpoint; after that a failpoint is one load.
//!
//! Names, in the order an apply reaches them: `fetched:<part>:<chunk>` in the fetch phase,
//! right after chunk `<chunk>` of `<part>` (`usr`, `usr-verity`, `uki`) was checked (and, if
//! downloaded, put in the chunk store), before the next checkpoint; `fetched` once every chunk
//! and part passed and the write phase is saved, before the slot is cleared; `<part>:<chunk>`
//! right after chunk `<chunk>` of `<part>` was written, before the next checkpoint syncs it and
//! saves the progress; `uki-before-rename` after the GPT switch, before the UKI's rename;
//! `uki-after-rename` after the rename, before the state says `staged`.

use std::sync::OnceLock;

/// The environment variable naming the failpoint to stop at.
pub const ENV: &str = "KEELSON_AGENT_FAILPOINT";

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// The failpoint [`ENV`] names, read from the environment on the first call only.
fn armed() -> Option<&'static str> {
    ARMED.get_or_init(|| std::env::var(ENV).ok()).as_deref()
}

/// Reads [`ENV`] now (the binary calls it at start); later changes of the variable are ignored.
pub fn init() {
    armed();
}

/// Stops here for good when [`ENV`] names `name`.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        stop(name);
    }
}

/// [`hit`] for chunk `index` of `part`; formats the name only when a failpoint is armed.
pub fn chunk(part: &str, index: usize) {
    if armed().is_some() {
        hit(&format!("{part}:{index}"));
    }
}

/// [`hit`] for chunk `index` of `part` in the fetch phase (`fetched:<part>:<index>`).
pub fn fetched(part: &str, index: usize) {
    if armed().is_some() {
        hit(&format!("fetched:{part}:{index}"));
    }
}

fn stop(name: &str) -> ! {
    eprintln!("keelson-agent: failpoint {name} reached");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
