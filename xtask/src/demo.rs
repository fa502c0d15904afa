//! `cargo xtask demo`: the main job. It runs every part of Keelson that exists, end to end, on
//! this machine, and says plainly what is still missing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{deps, util};

/// What the talk's three demos need that this tree does not do yet.
const MISSING: &[&str] = &[
    "update agent (keelson-agent): stage a release in slot B, reboot, bless, roll back ([5/7])",
    "signed release payloads (manifest, chunks) published to keelson-server ([5/7])",
    "system extensions: keelson sysext build/publish/update ([6/7])",
];

pub fn run() -> Result<()> {
    deps::run(false)?;
    util::step("building keelson and keelson-server (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "keelson",
        "-p",
        "keelson-server",
    ]))?;
    let bin = util::workspace_root().join("target/release");
    let keelson = bin.join("keelson");
    let work = util::workspace_root().join("target/demo");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    demo_verity(&keelson, &work)?;
    demo_disk(&keelson, &work)?;

    util::step("still missing");
    for m in MISSING {
        eprintln!("  - {m}");
    }
    Ok(())
}

/// Write `len` bytes of deterministic pseudo-random data (xorshift) to `path`.
fn pseudo_random_file(path: &Path, len: usize) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

fn root_hash_of(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
}

/// dm-verity: keelson and veritysetup build the same tree; a flipped byte is caught by block.
fn demo_verity(keelson: &Path, work: &Path) -> Result<()> {
    util::step("dm-verity: keelson next to veritysetup");
    let data = work.join("verity-data.img");
    pseudo_random_file(&data, 64 << 20)?;
    let salt = "e48da609055204e89ae53b655ca2216dd983cf3cb829f34f63a297d106d53e2d";
    let ours = util::output(
        Command::new(keelson)
            .args(["verity", "format", "--salt", salt])
            .arg(&data)
            .arg(work.join("verity-hash.keelson")),
    )?;
    let theirs = util::output(
        Command::new("veritysetup")
            .args(["format", "--salt", salt])
            .arg(&data)
            .arg(work.join("verity-hash.veritysetup")),
    )?;
    let (a, b) = (root_hash_of(&ours), root_hash_of(&theirs));
    eprintln!("keelson     root hash: {}", a.as_deref().unwrap_or("?"));
    eprintln!("veritysetup root hash: {}", b.as_deref().unwrap_or("?"));
    let (Some(a), Some(b)) = (a, b) else {
        bail!("a root hash is missing from the output")
    };
    if a != b {
        bail!("root hashes differ");
    }
    let same = fs::read(work.join("verity-hash.keelson"))?
        == fs::read(work.join("verity-hash.veritysetup"))?;
    eprintln!("hash areas byte-identical: {same}");
    if !same {
        bail!("hash areas differ");
    }
    // Flip one byte in data block 1000 and let verify find it.
    let mut bytes = fs::read(&data)?;
    bytes[1000 * 4096 + 17] ^= 0xff;
    fs::write(&data, &bytes)?;
    let out = Command::new(keelson)
        .args(["verity", "verify"])
        .arg(&data)
        .arg(work.join("verity-hash.keelson"))
        .arg(&a)
        .output()
        .context("running keelson verity verify")?;
    eprintln!(
        "after flipping a byte in data block 1000, verify says: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if out.status.success() {
        bail!("verify accepted corrupted data");
    }
    Ok(())
}

/// GPT: the Keelson A/B layout, read back with the slot state.
fn demo_disk(keelson: &Path, work: &Path) -> Result<()> {
    util::step("disk: the Keelson A/B layout");
    let img: PathBuf = work.join("disk.img");
    util::output(
        Command::new(keelson)
            .args(["disk", "create", "--size", "4G"])
            .arg(&img),
    )?;
    let show = util::output(Command::new(keelson).args(["disk", "show"]).arg(&img))?;
    eprintln!("{show}");
    Ok(())
}
