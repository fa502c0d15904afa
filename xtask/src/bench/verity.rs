//! `cargo xtask bench verity`: `keelson verity format` next to `veritysetup format` on the same
//! 1 GiB of pseudo-random data, same salt and UUID, both from the page cache; best of 3 each.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

const DATA_SIZE: u64 = 1 << 30;
const RUNS: usize = 3;
const SALT: &str = "6b65656c736f6e2d62656e63682d73616c742d666f722d7665726974792d3031";
const UUID: &str = "4b45454c-534f-4e00-8000-000000000001";

/// Fill `path` with `DATA_SIZE` bytes from xorshift64*: incompressible, reproducible, and cheap
/// to make without extra dependencies.
fn make_data(path: &Path) -> Result<()> {
    if std::fs::metadata(path).map(|m| m.len()).ok() == Some(DATA_SIZE) {
        eprintln!("reusing {}", path.display());
        return Ok(());
    }
    util::step(&format!(
        "writing 1 GiB of pseudo-random data to {}",
        path.display()
    ));
    let tmp = path.with_extension("partial");
    let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..DATA_SIZE / chunk.len() as u64 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        w.write_all(&chunk)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Read the whole file once so both tools start from the page cache.
fn warm_cache(path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    while f
        .read(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?
        > 0
    {}
    Ok(())
}

fn root_hash(stdout: &str, tool: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|r| r.trim().to_string())
        .with_context(|| format!("no `Root hash:` line in the output of {tool}:\n{stdout}"))
}

/// CPU seconds (user + system) used so far by waited-for children, from /proc/self/stat
/// (`cutime` and `cstime`, in clock ticks of 1/100 s on Linux).
fn children_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) / 100.0)
}

/// One timed run: wall clock and, when /proc allows, CPU time.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Option<f64>,
}

/// Run `cmd` (after removing `hash`, so each run creates it), returning its time and root hash.
fn timed(mut cmd: Command, hash: &Path, tool: &str) -> Result<(Sample, String)> {
    if hash.exists() {
        std::fs::remove_file(hash).with_context(|| format!("removing {}", hash.display()))?;
    }
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = util::output(&mut cmd)?;
    let wall = start.elapsed();
    let cpu = cpu_before.zip(children_cpu()).map(|(a, b)| b - a);
    Ok((Sample { wall, cpu }, root_hash(&out, tool)?))
}

/// The fastest of several samples.
fn best(a: Option<Sample>, b: Sample) -> Option<Sample> {
    match a {
        Some(a) if a.wall <= b.wall => Some(a),
        _ => Some(b),
    }
}

fn report_line(name: &str, s: Sample) {
    let cpu = match s.cpu {
        Some(c) => format!(
            "  cpu {c:>6.2} s ({:.2} cores busy)",
            c / s.wall.as_secs_f64()
        ),
        None => String::new(),
    };
    println!(
        "  {name:<12} {:>7.3} s  {:>7.0} MiB/s{cpu}",
        s.wall.as_secs_f64(),
        throughput(s.wall)
    );
}

fn format_cmd(program: &Path, data: &Path, hash: &Path) -> Command {
    let mut c = Command::new(program);
    if program.ends_with("keelson") {
        c.arg("verity");
    }
    c.arg("format")
        .arg(data)
        .arg(hash)
        .arg(format!("--salt={SALT}"))
        .arg(format!("--uuid={UUID}"));
    c
}

fn throughput(d: Duration) -> f64 {
    DATA_SIZE as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

pub fn run() -> Result<()> {
    util::cd_workspace_root()?;
    let veritysetup = ["/usr/sbin/veritysetup", "/sbin/veritysetup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(veritysetup) = veritysetup else {
        bail!(
            "veritysetup not found in /usr/sbin or /sbin: run `cargo xtask deps` (package cryptsetup-bin)"
        );
    };
    let dir = util::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let data = dir.join("verity-data.img");
    make_data(&data)?;

    util::step("building the release keelson binary");
    util::run(util::cargo().args(["build", "--release", "-p", "keelson"]))?;
    let keelson = util::workspace_root().join("target/release/keelson");

    let ours_hash = dir.join("verity-keelson.hash");
    let theirs_hash = dir.join("verity-veritysetup.hash");
    util::step("warm-up: page cache and one run of each tool");
    warm_cache(&data)?;
    timed(
        format_cmd(&keelson, &data, &ours_hash),
        &ours_hash,
        "keelson",
    )?;
    timed(
        format_cmd(&veritysetup, &data, &theirs_hash),
        &theirs_hash,
        "veritysetup",
    )?;

    // Both tools compete with whatever else runs; say so, since a loaded machine hides the
    // parallel speed-up. Read before timing so our own runs do not count.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    util::step(&format!("timing {RUNS} runs of each, alternating"));
    let mut best_ours = None;
    let mut best_theirs = None;
    let mut roots = (String::new(), String::new());
    for run in 1..=RUNS {
        let (t, r) = timed(
            format_cmd(&keelson, &data, &ours_hash),
            &ours_hash,
            "keelson",
        )?;
        eprintln!("run {run}: keelson     {:.3} s", t.wall.as_secs_f64());
        best_ours = best(best_ours, t);
        roots.0 = r;
        let (t, r) = timed(
            format_cmd(&veritysetup, &data, &theirs_hash),
            &theirs_hash,
            "veritysetup",
        )?;
        eprintln!("run {run}: veritysetup {:.3} s", t.wall.as_secs_f64());
        best_theirs = best(best_theirs, t);
        roots.1 = r;
    }
    let (Some(ours_best), Some(theirs_best)) = (best_ours, best_theirs) else {
        bail!("no runs were timed");
    };
    if roots.0 != roots.1 {
        bail!(
            "root hashes differ: keelson {} vs veritysetup {}",
            roots.0,
            roots.1
        );
    }
    let ours =
        std::fs::read(&ours_hash).with_context(|| format!("reading {}", ours_hash.display()))?;
    let theirs = std::fs::read(&theirs_hash)
        .with_context(|| format!("reading {}", theirs_hash.display()))?;
    if ours != theirs {
        bail!(
            "hash areas differ: {} vs {}",
            ours_hash.display(),
            theirs_hash.display()
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "verity format of 1 GiB (sha256, 4096/4096, page cache), best of {RUNS}, {cores} cores, load average {load}:"
    );
    report_line("keelson", ours_best);
    report_line("veritysetup", theirs_best);
    println!(
        "  ratio        {:.2}x (veritysetup time / keelson time; goal >= 2x on 2 idle cores)",
        theirs_best.wall.as_secs_f64() / ours_best.wall.as_secs_f64()
    );
    println!(
        "  root hash    {} from both, hash areas byte-identical",
        roots.0
    );
    if load.parse::<f64>().is_ok_and(|l| l > 1.0) {
        println!(
            "  note: the machine was busy (load {load}); the ratio is lower than on idle cores"
        );
    }
    Ok(())
}
