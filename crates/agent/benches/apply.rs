//! `cargo xtask bench update`, part 1: the agent's apply throughput next to its physical peer,
//! measured side by side in one process and one run.
//!
//! - **agent**: `keelson_agent::apply::apply`, the daemon's own code path: the payload header
//!   by range request and every manifest check, then each chunk by range request from a real
//!   keelson-server (SQLite, on 127.0.0.1, the payload uploaded through its REST API) ->
//!   zstd decode -> chunk sha256 -> write at its offset in the inactive slot of a GPT disk
//!   image -> part sha256 -> progress persisted through the agent's `Store` (as its `download`
//!   does) -> GPT UUIDs and labels -> the UKI renamed to `keelson_<v>+3.efi`.
//! - **peer**: the same uncompressed bytes (the usr, usr-verity and UKI files) copied with
//!   `std::io::copy` through a SHA-256 writer into a target file, synced once at the end, and
//!   `cp` + `sha256sum` + `sync` of the same files.
//! - **diagnostic**: the agent's `Fetcher` fetching the header and every chunk, nothing else,
//!   to show how much of the agent's time is HTTP.
//!
//! Input: `--image-dir DIR` (the output of `keelson image build`: `<name>_<v>.usr.erofs`, its
//! verity tree, UKI and build record), else generated data of realistic compressibility.
//! Each measurement runs once unmeasured (page cache, block allocation), then `--runs` times
//! alternating; medians are printed.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use clap::Parser;
use keelson_agent::apply::{self, Fetcher, Node};
use keelson_agent::boot::{self, OsRelease};
use keelson_agent::paths::Paths;
use keelson_agent::state::{Progress, Record, State, Store, Target};
use keelson_disk::{Disk, UsrSlot};
use keelson_payload::testing::{MACHINE_X86_64, minimal_pe, noise};
use keelson_payload::{BuildInput, BuildOptions, Manifest, PartName, SigningKeyFile};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// Root hash of the running slot A (any value: slot A is only read for its UUIDs).
const HASH_A: &str = "11111111111111111111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// Root hash the generated UKI pins (the generated verity tree is not a real tree of usr).
const HASH_GEN: &str = "22222222222222222222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[derive(Parser)]
#[command(about = "keelson-agent apply throughput next to a raw copy plus sha256")]
struct Args {
    /// Work directory (payload, node root, disk image, server data); emptied first. Without
    /// it, a temporary directory.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Output directory of `keelson image build` with a `<name>_<version>.usr.erofs`; without
    /// it, a usr of `--size-mib` is generated.
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Size of the generated usr part, in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Timed runs of each measurement (medians are printed).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Added by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    ensure!(args.runs >= 1, "--runs must be at least 1");
    // `cargo test --all-targets` runs this without `--bench`: then it is a smoke test of the
    // same path on 4 MiB (every hash checked, slot B and the UKI installed), not a measurement.
    if !args.bench {
        args.size_mib = 4;
        args.image_dir = None;
        args.runs = 1;
    }
    let tmp = tempfile::tempdir()?;
    let work = match &args.work {
        Some(w) => {
            if w.exists() {
                fs::remove_dir_all(w).with_context(|| format!("emptying {}", w.display()))?;
            }
            fs::create_dir_all(w).with_context(|| format!("creating {}", w.display()))?;
            std::path::absolute(w)?
        }
        None => tmp.path().to_path_buf(),
    };

    let (input, source) = match &args.image_dir {
        Some(dir) => image_input(dir)?,
        None => generated_input(&work.join("gen"), args.size_mib * MIB)?,
    };
    eprintln!("==> input: {source}");

    // A dev key made now; the payload built unsigned and then signed, as a release is.
    let keys_dir = work.join("keys");
    fs::create_dir_all(&keys_dir)?;
    let key = keelson_payload::generate_key(&keys_dir, "bench")?;
    let payload = work.join(format!("keelson_{}.payload", input.version));
    eprintln!("==> building {}", payload.display());
    let started = Instant::now();
    let manifest = keelson_payload::build(&input, &payload, &BuildOptions::default())?;
    keelson_payload::sign(&payload, &SigningKeyFile::load(&key.private)?)?;
    let build_time = started.elapsed();
    let payload_size = fs::metadata(&payload)?.len();

    let node = NodeFixture::new(&work, &input, &manifest, &key.public)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let url = rt.block_on(start_server(&work, &payload, &http))?;
    let target = Target {
        version: manifest.version.clone(),
        url: url.clone(),
        size: payload_size,
        sha256: String::new(),
        extensions: vec![],
    };

    let parts: Vec<(PathBuf, String)> = [PartName::Usr, PartName::UsrVerity, PartName::Uki]
        .into_iter()
        .map(|n| {
            let sha = manifest
                .part(n)
                .map(|p| p.sha256.clone())
                .unwrap_or_default();
            (input.part_path(n).to_path_buf(), sha)
        })
        .collect();
    let total: u64 = manifest.parts.iter().map(|p| p.size).sum();
    let raw_target = work.join("raw-target.img");
    let cp_dir = work.join("cp-target");
    fs::create_dir_all(&cp_dir)?;

    eprintln!("==> warm-up: one unmeasured run of each");
    copy_and_hash(&parts, &raw_target)?;
    cp_and_sha256sum(&parts, &cp_dir)?;
    rt.block_on(node.apply(&http, &target))?;
    let load = loadavg();

    let mut raw = Vec::new();
    let mut cp = Vec::new();
    let mut agent = Vec::new();
    let mut fetch = Vec::new();
    for run in 1..=args.runs {
        eprintln!("==> run {run} of {}", args.runs);
        raw.push(timed(|| copy_and_hash(&parts, &raw_target))?);
        cp.push(timed(|| cp_and_sha256sum(&parts, &cp_dir))?);
        agent.push(timed(|| rt.block_on(node.apply(&http, &target)))?);
        fetch.push(timed(|| rt.block_on(fetch_only(&http, &url, &manifest)))?);
    }
    let (raw, cp, agent, fetch) = (median(raw), median(cp), median(agent), median(fetch));

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks: usize = manifest.parts.iter().map(|p| p.chunks.len()).sum();
    println!("update apply: {source}");
    for p in &manifest.parts {
        println!(
            "  part {:<11} {:>9.1} MiB in {:>4} chunks",
            p.name.as_str(),
            p.size as f64 / MIB as f64,
            p.chunks.len()
        );
    }
    println!(
        "  payload       {:>9.1} MiB (zstd level {}, {:.0}% of the {:.1} MiB uncompressed), \
         built and signed in {:.1} s",
        payload_size as f64 / MIB as f64,
        keelson_payload::DEFAULT_LEVEL,
        100.0 * payload_size as f64 / total as f64,
        total as f64 / MIB as f64,
        build_time.as_secs_f64()
    );
    println!(
        "median of {} run(s), {cores} cores, load average {load} before timing (other builds share the machine):",
        args.runs
    );
    let line = |name: &str, s: Sample| {
        println!(
            "  {name:<36} {:>7.3} s {:>7.0} MiB/s  cpu {:>5.2} s",
            s.wall.as_secs_f64(),
            total as f64 / MIB as f64 / s.wall.as_secs_f64(),
            s.cpu
        );
    };
    line("raw copy + sha256 (io::copy, 1 sync)", raw);
    line("cp + sha256sum + sync", cp);
    line(&format!("agent apply (HTTP, {chunks} chunks)"), agent);
    // Measured in its own run: the download half of the agent's apply, not a share of it.
    line("HTTP range requests alone (own run)", fetch);
    println!(
        "  ratio agent / raw copy + sha256      {:.2} (throughput; 1.00 = as fast as the copy)",
        raw.wall.as_secs_f64() / agent.wall.as_secs_f64()
    );
    println!(
        "  ratio agent / cp + sha256sum         {:.2}",
        cp.wall.as_secs_f64() / agent.wall.as_secs_f64()
    );
    drop(rt);
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// A timed run: wall clock and this process's CPU time (server, agent and copies all run in
/// it; `cp`/`sha256sum` children are added from their rusage).
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: f64,
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Sample> {
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    f()?;
    let wall = start.elapsed();
    Ok(Sample {
        wall,
        cpu: cpu_seconds() - cpu0,
    })
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by_key(|s| s.wall);
    v[v.len() / 2]
}

/// User + system CPU seconds of this process and its waited-for children, from
/// /proc/self/stat (`utime`, `stime`, `cutime`, `cstime`, in ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The newest `<name>_<version>.usr.erofs` in `dir` and its build record.
fn image_input(dir: &Path) -> Result<(BuildInput, String)> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".usr.erofs")
            && let Some((_, version)) = stem.split_once('_')
        {
            found.push((e.metadata()?.modified()?, version.to_owned(), e.path()));
        }
    }
    found.sort();
    let Some((_, version, usr)) = found.pop() else {
        bail!("no <name>_<version>.usr.erofs in {}", dir.display());
    };
    let input = BuildInput::from_image_dir(dir, &version)?;
    Ok((
        input,
        format!("the usr erofs of image build {version} ({})", usr.display()),
    ))
}

/// A usr of `size` bytes mixing incompressible noise, text and zeros in 64 KiB runs (about
/// what an erofs of /usr holds: binaries, text, padding), a verity-sized noise file and a
/// UKI-shaped PE pinning `HASH_GEN`.
fn generated_input(dir: &Path, size: u64) -> Result<(BuildInput, String)> {
    fs::create_dir_all(dir)?;
    let usr = dir.join("usr.erofs");
    let mut w = std::io::BufWriter::new(File::create(&usr)?);
    const RUN: usize = 64 * 1024;
    let words: &[&str] = &[
        "keelson",
        "usr",
        "lib",
        "systemd",
        "the",
        "of",
        "and",
        "config",
        "0x7f",
        "error",
        "return",
        "static",
        "const",
        "/etc/",
        "=",
        "\n",
        "{",
        "}",
        "GLIBC_2.34",
        "init",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        let n = usize::try_from((size - written).min(RUN as u64))?;
        let block: Vec<u8> = match next() % 100 {
            0..45 => noise(n, i),
            45..75 => {
                let mut t = Vec::with_capacity(n + 16);
                while t.len() < n {
                    t.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
                    t.push(b' ');
                }
                t.truncate(n);
                t
            }
            75..90 => vec![0; n],
            _ => {
                let mut b = noise(n, i);
                b[n / 2..].fill(0);
                b
            }
        };
        w.write_all(&block)?;
        written += n as u64;
        i += 1;
    }
    w.flush()?;
    let verity = dir.join("usr.verity");
    // A dm-verity tree of a 4096/sha256 usr is about 1/128 of it, plus the superblock block.
    fs::write(&verity, noise((size / 128 + 4096) as usize, 2))?;
    let uki = dir.join("uki.efi");
    let cmdline = format!("console=ttyS0 usrhash={HASH_GEN} mount.usrfstype=erofs\n");
    fs::write(
        &uki,
        minimal_pe(
            MACHINE_X86_64,
            &[
                (".osrel", b"ID=keelson\n"),
                (".cmdline", cmdline.as_bytes()),
                (".linux", &noise(12 << 20, 9)),
            ],
        ),
    )?;
    let input = BuildInput {
        os_id: "keelson".into(),
        arch: boot::systemd_arch().into(),
        version: "2.0.0".into(),
        usr_root_hash: HASH_GEN.into(),
        usr,
        usr_verity: verity,
        uki,
    };
    Ok((
        input,
        format!(
            "generated usr of {} MiB (45% noise, 30% text, 15% zeros, 10% half-zero noise in 64 KiB runs)",
            size / MIB
        ),
    ))
}

/// A node root under `work/root` running an older version from slot A of a GPT disk image
/// whose slots fit the payload's parts.
struct NodeFixture {
    paths: Paths,
    layout: boot::Layout,
    os: OsRelease,
    store: Store,
}

impl NodeFixture {
    fn new(work: &Path, input: &BuildInput, m: &Manifest, public_key: &Path) -> Result<Self> {
        let root = work.join("root");
        let running = "0";
        let keys = root.join("usr/share/keelson/update-keys");
        fs::create_dir_all(&keys)?;
        fs::copy(public_key, keys.join("bench.pem"))?;
        let os_release = root.join("usr/lib/os-release");
        fs::create_dir_all(root.join("usr/lib"))?;
        fs::write(
            &os_release,
            format!("ID={}\nVERSION_ID={running}\n", input.os_id),
        )
        .with_context(|| format!("writing {}", os_release.display()))?;
        let up = |n: u64| n.div_ceil(MIB) * MIB + MIB;
        let size = |name| m.part(name).map_or(0, |p| p.size);
        let layout = keelson_disk::Layout {
            esp_size: MIB,
            usr_size: up(size(PartName::Usr)),
            usr_verity_size: up(size(PartName::UsrVerity)),
            root_min_size: MIB,
            ..keelson_disk::Layout::new(0)
        };
        let layout = keelson_disk::Layout {
            disk_size: layout.esp_size
                + 2 * (layout.usr_size + layout.usr_verity_size)
                + layout.root_min_size
                + 4 * MIB,
            ..layout
        };
        let disk = work.join("disk.img");
        keelson_disk::create(&disk, &layout)?;
        let (a_usr, a_verity) = (work.join("a.usr"), work.join("a.verity"));
        fs::write(&a_usr, noise(MIB as usize, 1))?;
        fs::write(&a_verity, noise(4096, 2))?;
        let hash_a = hex::decode(HASH_A)?;
        let mut d = Disk::open_rw(&disk)?;
        d.install_usr_slot(UsrSlot::A, running, &hash_a, &a_usr, &a_verity)?;
        d.commit()?;
        let mut paths = Paths::under(&root);
        paths.disk = Some(disk);
        fs::create_dir_all(paths.esp_linux())?;
        let layout = boot::layout(&paths, &hash_a)?;
        let os = boot::read_os_release(&paths.os_release())?;
        let store = Store::new(paths.state_file(), paths.lock_file());
        Ok(NodeFixture {
            paths,
            layout,
            os,
            store,
        })
    }

    /// One whole apply into slot B, progress persisted after every chunk as the daemon does.
    async fn apply(&self, http: &reqwest::Client, target: &Target) -> Result<()> {
        let node = Node {
            paths: &self.paths,
            layout: &self.layout,
            os: &self.os,
            now: Utc::now(),
        };
        let mut record = Record::default();
        let store = &self.store;
        let mut save = |p: &Progress| -> Result<(), String> {
            record.state = State::Downloading {
                target: target.clone(),
                progress: p.clone(),
                previous_version: self.os.version_id.clone(),
            };
            store.save(&record).map_err(|e| e.to_string())
        };
        let slot = apply::apply(&node, http, target, Progress::default(), &mut save).await?;
        ensure!(slot == UsrSlot::B, "apply wrote slot {}", slot.name());
        let staged = self
            .paths
            .esp_linux()
            .join(format!("keelson_{}+3.efi", target.version));
        ensure!(staged.is_file(), "{} was not installed", staged.display());
        Ok(())
    }
}

/// keelson-server on 127.0.0.1:0 with the payload ([`common::serve_payload`]). Returns the
/// payload's URL.
async fn start_server(work: &Path, payload: &Path, http: &reqwest::Client) -> Result<String> {
    let (base, path) = common::serve_payload(work, payload, http).await?;
    Ok(format!("{base}{path}"))
}

/// The peer: each part file copied through a SHA-256 writer into one target file, the hashes
/// checked against the manifest (the same bytes the agent writes), one sync at the end.
fn copy_and_hash(parts: &[(PathBuf, String)], target: &Path) -> Result<()> {
    struct HashingWriter<'a> {
        out: &'a mut File,
        sha: Sha256,
    }
    impl Write for HashingWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.out.write(buf)?;
            self.sha.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)?;
    out.seek(SeekFrom::Start(0))?;
    for (path, want) in parts {
        let mut src = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut w = HashingWriter {
            out: &mut out,
            sha: Sha256::new(),
        };
        std::io::copy(&mut src, &mut w)?;
        let got = hex::encode(w.sha.finalize());
        ensure!(
            &got == want,
            "{}: sha256 {got}, manifest {want}",
            path.display()
        );
    }
    out.sync_data()?;
    Ok(())
}

/// The same with the coreutils: `cp` each part over a preallocated copy, `sha256sum` them,
/// `sync` the copies.
fn cp_and_sha256sum(parts: &[(PathBuf, String)], dir: &Path) -> Result<()> {
    let mut copies = Vec::new();
    for (i, (path, _)) in parts.iter().enumerate() {
        let copy = dir.join(format!("part{i}"));
        run(Command::new("cp").arg(path).arg(&copy))?;
        copies.push(copy);
    }
    let out = run(Command::new("sha256sum").args(&copies))?;
    for ((_, want), line) in parts.iter().zip(out.lines()) {
        ensure!(line.starts_with(want.as_str()), "sha256sum: {line}");
    }
    run(Command::new("sync").args(&copies))?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<String> {
    Ok(keelson_cmd::run(cmd)?)
}

/// The diagnostic: the agent's range requests for the header and every chunk, nothing else.
async fn fetch_only(http: &reqwest::Client, url: &str, m: &Manifest) -> Result<()> {
    let f = Fetcher::new(http.clone(), url);
    let header = f.header().await?;
    for p in &m.parts {
        for c in &p.chunks {
            f.range(header.data_start + c.data_offset, c.data_size)
                .await?;
        }
    }
    Ok(())
}
