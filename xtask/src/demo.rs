//! `cargo xtask demo`: the main job. It runs every part of Keelson that exists, end to end, on
//! this machine, and says plainly what is still missing.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{deps, util};

/// What the talk's three demos need that this tree does not do yet.
const MISSING: &[&str] = &[
    "the update shown on a node: keelson-agent and signed payloads are built and tested \
     against keelson-server (crates/agent/tests), but no demo step boots a node through v2 yet",
    "reboot coordination on the node (FleetLock, etcd locks)",
    "system extensions: keelson sysext build/publish/update",
];

/// Application id the demo registers (Flatcar's, so update_engine requests work unchanged).
const DEMO_APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
/// Where the demo's server listens.
const DEMO_LISTEN: &str = "127.0.0.1:8080";

pub fn run(no_vm: bool) -> Result<()> {
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
    let record = if no_vm {
        let record = util::workspace_root()
            .join(crate::vm::VM_DIR)
            .join("keelson_0.1.0.json");
        eprintln!(
            "\n--no-vm: no image build and no boot; using {}",
            record.display()
        );
        record
    } else {
        let record = demo_image()?;
        demo_provisioning(&record)?;
        record
    };
    demo_server(&bin, &record, &work)?;

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
    // Same salt and superblock UUID for both, so the whole hash areas can be compared.
    let salt = "e48da609055204e89ae53b655ca2216dd983cf3cb829f34f63a297d106d53e2d";
    let uuid = "5a7e1e5c-0000-4000-8000-6b656c736f6e";
    let ours = util::output(
        Command::new(keelson)
            .args(["verity", "format", "--salt", salt, "--uuid", uuid])
            .arg(&data)
            .arg(work.join("verity-hash.keelson")),
    )?;
    let theirs = util::output(
        Command::new("veritysetup")
            .args(["format", "--salt", salt, "--uuid", uuid])
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
    let verify = util::output(
        Command::new(keelson)
            .args(["verity", "verify"])
            .arg(&data)
            .arg(work.join("verity-hash.keelson"))
            .arg(&a),
    );
    match verify {
        Ok(_) => bail!("verify accepted corrupted data"),
        Err(e) => {
            let said = e
                .downcast_ref::<keelson_cmd::CmdError>()
                .map(|c| c.stderr_tail.trim().to_string())
                .unwrap_or_else(|| format!("{e:#}"));
            eprintln!("after flipping a byte in data block 1000, verify says: {said}");
        }
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

/// The OS image: built from Debian packages, /usr on dm-verity, A/B slots (the VM tests' build).
fn demo_image() -> Result<PathBuf> {
    util::step("the OS image: Debian trixie -> erofs /usr -> dm-verity -> UKI -> GPT A/B");
    let dir = util::workspace_root().join(crate::vm::VM_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keelson = crate::vm::keelson_binary()?;
    let record = crate::vm::build_image(&keelson, &dir, "0.1.0", &[])?;
    let image = dir.join("keelson_0.1.0.img");
    let show = util::output(Command::new(&keelson).args(["disk", "show"]).arg(&image))?;
    eprintln!("{show}");
    Ok(record)
}

/// Talk demo 1: a stock image boots with a config (fw_cfg) and comes up running a container
/// app, fetched over HTTP in the initrd and checked by sha256; the first-boot VM test does
/// exactly that and shows the guest's answers.
fn demo_provisioning(record: &Path) -> Result<()> {
    util::step(
        "provisioning: boot the stock image with a config; it comes up running a container app",
    );
    let dir = util::workspace_root().join(crate::vm::VM_DIR);
    let busybox = crate::vm::busybox(&dir)?;
    util::run(&mut crate::vm::vm_test(
        "vm_provision",
        Some("first_boot_provisions_user_files_and_app"),
        record,
        &busybox,
    )?)
    .context("the provisioning demo failed")
}

/// Fleet control: keelson-server with the image's update parts as a package, a group on the
/// stable channel, and an update check the way Flatcar's update_engine sends it.
fn demo_server(bin: &Path, record: &Path, work: &Path) -> Result<()> {
    util::step("fleet control: keelson-server (Omaha, REST API, dashboard, FleetLock)");
    let state = work.join("server");
    let _ = fs::remove_dir_all(&state);
    fs::create_dir_all(&state)?;
    let db = format!("sqlite://{}", state.join("keelson.db").display());
    let token = util::output(Command::new(bin.join("keelson-server")).args([
        "token",
        "create",
        "--role",
        "admin",
        "--database-url",
        &db,
    ]))?;
    let token = token
        .split_whitespace()
        .find(|w| w.starts_with("kt_"))
        .context("keelson-server token create printed no token")?
        .to_string();
    let mut server = Command::new(bin.join("keelson-server"))
        .args(["--database-url", &db, "--listen", DEMO_LISTEN, "--data-dir"])
        .arg(state.join("data"))
        .spawn()
        .context("starting keelson-server")?;
    let result = (|| -> Result<()> {
        let base = format!("http://{DEMO_LISTEN}");
        wait_for_http(&format!("{base}/health"))?;
        let admin = |args: &[&str]| -> Result<String> {
            util::output(
                Command::new(bin.join("keelson"))
                    .arg("admin")
                    .args(args)
                    .env("KEELSON_SERVER", &base)
                    .env("KEELSON_TOKEN", &token)
                    .env("KEELSON_APP", DEMO_APP),
            )
        };
        admin(&["app", "create", "--name", "Keelson", DEMO_APP])?;
        // The update part of the built version: its usr image.
        let parts = record.parent().unwrap_or(Path::new("."));
        let usr = parts.join("keelson_0.1.0.usr.erofs");
        admin(&[
            "package",
            "upload",
            "--version",
            "0.1.0",
            &usr.to_string_lossy(),
        ])?;
        admin(&["channel", "create", "stable"])?;
        admin(&["channel", "set", "stable", "--version", "0.1.0"])?;
        admin(&["group", "create", "stable", "--channel", "stable"])?;
        admin(&[
            "policy",
            "set",
            "stable",
            "--rollout-percent",
            "50",
            "--failure-threshold",
            "10",
        ])?;
        // A node on an older version asks, as update_engine does.
        let request = include_str!("../../crates/omaha/tests/data/update_check.xml")
            .replace("version=\"3975.2.0\"", "version=\"0.0.9\"");
        let answer = util::output(Command::new("curl").args([
            "-sS",
            "--data-binary",
            &request,
            "-H",
            "Content-Type: text/xml",
            &format!("{base}/v1/update/"),
        ]))?;
        eprintln!("update_engine-style check from a node on 0.0.9, the server answers:\n{answer}");
        eprintln!("{}", admin(&["group", "list"])?);
        eprintln!("dashboard: {base}/  (admin token: {token})");
        eprintln!(
            "look at: Groups -> stable (version breakdown, rollout progress, policy), Instances, Activity"
        );
        if std::io::stdin().is_terminal() {
            eprintln!("press Enter to stop the server");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Poll `url` with curl until it answers (10 s at most).
fn wait_for_http(url: &str) -> Result<()> {
    for _ in 0..100 {
        if util::output_with_timeout(
            Command::new("curl").args(["-sSf", "-o", "/dev/null", url]),
            std::time::Duration::from_secs(5),
        )
        .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("{url} did not answer within 10 s")
}
