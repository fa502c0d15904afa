//! Named points in the apply path where a test can stop the agent, to cut the power there.
//!
//! `KEELSON_AGENT_FAILPOINT=<name>` makes the agent print `keelson-agent: failpoint <name>
//! reached` on stderr when it gets there and then wait forever, so that a VM test can kill
//! QEMU at exactly that point (issue [6/12] (c): power cuts during the download, the usr and
//! verity writes and around the UKI's rename). Nothing else reads the variable; unset, a
//! failpoint is one environment lookup.
//!
//! Names, in the order an apply reaches them: `fetched:<part>:<chunk>` in the fetch phase,
//! right after chunk `<chunk>` of `<part>` (`usr`, `usr-verity`, `uki`) was checked (and, if
//! downloaded, put in the chunk store), before the next checkpoint; `fetched` once every chunk
//! and part passed and the write phase is saved, before the slot is cleared; `<part>:<chunk>`
//! right after chunk `<chunk>` of `<part>` was written, before the next checkpoint syncs it and
//! saves the progress; `uki-before-rename` after the GPT switch, before the UKI's rename;
//! `uki-after-rename` after the rename, before the state says `staged`.

/// The environment variable naming the failpoint to stop at.
pub const ENV: &str = "KEELSON_AGENT_FAILPOINT";

/// Stops here for good when [`ENV`] names `name`.
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        eprintln!("keelson-agent: failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// [`hit`] for chunk `index` of `part`.
pub fn chunk(part: &str, index: usize) {
    if std::env::var_os(ENV).is_some() {
        hit(&format!("{part}:{index}"));
    }
}

/// [`hit`] for chunk `index` of `part` in the fetch phase (`fetched:<part>:<index>`).
pub fn fetched(part: &str, index: usize) {
    if std::env::var_os(ENV).is_some() {
        hit(&format!("fetched:{part}:{index}"));
    }
}
