//! `cargo xtask bench delta`: how much of a release a node downloads when it already runs the
//! one before, and how long the apply takes next to a full one.
//!
//! Two image builds (`--v1-dir`/`--v1-version`, `--v2-dir`/`--v2-version`, outputs of
//! `keelson image build`). v2's payload is built as `keelson payload build` does (FastCDC,
//! zstd) and served by a real keelson-server (SQLite, 127.0.0.1). Then
//! `keelson_agent::apply::apply`, the daemon's code path, runs twice on GPT disk image files:
//!
//! - **reuse**: slot A holds v1's usr erofs and verity tree and the ESP v1's UKI, as on a node
//!   running v1: the agent cuts them with the manifest's chunking and downloads only the
//!   chunks it does not find there;
//! - **full**: slot A holds unrelated bytes and the ESP no UKI: every chunk is downloaded.
//!
//! Printed: the full payload size, the bytes the server sent in each run (counted by a proxy
//! in front of it: headers and chunk data), their ratio, and each apply's wall time.
//! Without `--bench` (`cargo test --all-targets`), a smoke test on small generated parts.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::response::Response;
use chrono::Utc;
use clap::Parser;
use keelson_agent::apply::{self, Node};
use keelson_agent::boot::{self, OsRelease};
use keelson_agent::paths::Paths;
use keelson_agent::state::{Progress, Target};
use keelson_disk::{Disk, UsrSlot};
use keelson_payload::testing::noise;
use keelson_payload::{BuildInput, BuildOptions, Manifest, PartName, SigningKeyFile};

const MIB: u64 = 1 << 20;

#[derive(Parser)]
#[command(about = "bytes downloaded and apply time from v1 to v2, with chunk reuse and without")]
struct Args {
    /// Output directory of v1's image build.
    #[arg(long)]
    v1_dir: Option<PathBuf>,
    /// v1's version.
    #[arg(long)]
    v1_version: Option<String>,
    /// Output directory of v2's image build.
    #[arg(long)]
    v2_dir: Option<PathBuf>,
    /// v2's version (newer than v1's).
    #[arg(long)]
    v2_version: Option<String>,
    /// Only compare two usr images (OLD NEW): the bytes of NEW's chunks OLD lacks, zstd
    /// compressed as a payload stores them, next to all of NEW's; no payload, no agent. For
    /// measuring mkfs.erofs options.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    compare: Option<Vec<PathBuf>>,
    /// With `--compare`: FastCDC sizes MIN/AVG/MAX in bytes (default: the payload's).
    #[arg(long, value_name = "MIN/AVG/MAX")]
    chunking: Option<String>,
    /// Work directory (payload, node roots, disk images, server data); emptied first.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Added by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(files) = &args.compare {
        let chunking = match &args.chunking {
            None => keelson_payload::Chunking::default(),
            Some(spec) => {
                let v: Vec<u64> = spec
                    .split('/')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--chunking {spec:?}: want MIN/AVG/MAX"))?;
                ensure!(v.len() == 3, "--chunking {spec:?}: want MIN/AVG/MAX");
                keelson_payload::Chunking::fastcdc(v[0], v[1], v[2])
            }
        };
        return compare(&files[0], &files[1], &chunking);
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
    let (v1, v2) = match (
        &args.v1_dir,
        &args.v1_version,
        &args.v2_dir,
        &args.v2_version,
    ) {
        (Some(d1), Some(n1), Some(d2), Some(n2)) if args.bench => (
            BuildInput::from_image_dir(d1, n1)?,
            BuildInput::from_image_dir(d2, n2)?,
        ),
        _ => {
            ensure!(
                !args.bench,
                "--v1-dir, --v1-version, --v2-dir and --v2-version are required"
            );
            generated(&work.join("gen"))?
        }
    };

    let keys_dir = work.join("keys");
    fs::create_dir_all(&keys_dir)?;
    let key = keelson_payload::generate_key(&keys_dir, "bench")?;
    let signing = SigningKeyFile::load(&key.private)?;
    let payload = work.join(format!("keelson_{}.payload", v2.version));
    eprintln!("==> building {}", payload.display());
    let started = Instant::now();
    let opts = BuildOptions {
        keys: vec![&signing],
        ..BuildOptions::default()
    };
    let manifest = keelson_payload::build(&v2, &payload, &opts)?;
    let build_time = started.elapsed();
    let payload_size = fs::metadata(&payload)?.len();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let served = Arc::new(AtomicU64::new(0));
    let url = rt.block_on(start_server(&work, &payload, &http, served.clone()))?;
    let target = Target {
        version: v2.version.clone(),
        url,
        size: payload_size,
        sha256: String::new(),
        extensions: vec![],
    };

    let mut results = Vec::new();
    for (name, reuse) in [("reuse", true), ("full", false)] {
        let node = NodeFixture::new(&work.join(name), &v1, &manifest, &key.public, reuse)?;
        served.store(0, Ordering::SeqCst);
        eprintln!("==> apply v{} -> v{} ({name})", v1.version, v2.version);
        let started = Instant::now();
        let progress = rt.block_on(node.apply(&http, &target))?;
        let wall = started.elapsed().as_secs_f64();
        results.push((name, served.load(Ordering::SeqCst), progress, wall));
        let _ = fs::remove_dir_all(work.join(name));
    }

    let chunking = manifest.effective_chunking();
    println!("delta v{} -> v{}", v1.version, v2.version);
    for p in &manifest.parts {
        println!(
            "  part {:<11} {:>9.1} MiB in {:>6} chunks",
            p.name.as_str(),
            p.size as f64 / MIB as f64,
            p.chunks.len()
        );
    }
    println!(
        "  payload        {:>9.1} MiB ({} {}/{}/{} B, zstd level {}), built in {:.1} s",
        payload_size as f64 / MIB as f64,
        chunking.algorithm,
        chunking.min_size,
        chunking.avg_size,
        chunking.max_size,
        keelson_payload::DEFAULT_LEVEL,
        build_time.as_secs_f64()
    );
    for (name, served, progress, wall) in &results {
        println!(
            "  {name:<6} served {:>9.1} MiB = {:>5.1}% of the payload; reused {:>7.1} MiB; apply {:>6.1} s",
            *served as f64 / MIB as f64,
            100.0 * *served as f64 / payload_size as f64,
            progress.bytes_reused as f64 / MIB as f64,
            wall
        );
    }
    if let [(_, reuse, _, tr), (_, _, _, tf)] = results.as_slice() {
        println!(
            "  ratio downloaded v1 -> v2 / full payload: {:.3} (goal <= 0.25); apply time reuse / full: {:.2}",
            *reuse as f64 / payload_size as f64,
            tr / tf
        );
    }
    drop(rt);
    if args.work.is_some() {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

/// [`Args::compare`].
fn compare(old: &Path, new: &Path, chunking: &keelson_payload::Chunking) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut have = std::collections::HashSet::new();
    for c in chunking.chunks(std::io::BufReader::new(fs::File::open(old)?))? {
        have.insert(Sha256::digest(c?.1));
    }
    let mut seen = std::collections::HashSet::new();
    let (mut size, mut full, mut missing, mut missing_raw) = (0u64, 0u64, 0u64, 0u64);
    for c in chunking.chunks(std::io::BufReader::new(fs::File::open(new)?))? {
        let bytes = c?.1;
        size += bytes.len() as u64;
        let h = Sha256::digest(&bytes);
        if !seen.insert(h) {
            continue;
        }
        let z = zstd::bulk::compress(&bytes, keelson_payload::DEFAULT_LEVEL)?.len() as u64;
        full += z;
        if !have.contains(&h) {
            missing += z;
            missing_raw += bytes.len() as u64;
        }
    }
    println!(
        "compare {} -> {} ({}/{}/{}): new {:.1} MiB, stored {:.1} MiB, to download {:.2} MiB ({:.2} MiB raw) = {:.2}%",
        old.display(),
        new.display(),
        chunking.min_size,
        chunking.avg_size,
        chunking.max_size,
        size as f64 / MIB as f64,
        full as f64 / MIB as f64,
        missing as f64 / MIB as f64,
        missing_raw as f64 / MIB as f64,
        100.0 * missing as f64 / full as f64
    );
    Ok(())
}

/// Small v1 and v2 for the smoke test: v2's usr is v1's with an insertion and a new tail.
fn generated(dir: &Path) -> Result<(BuildInput, BuildInput)> {
    let usr1 = noise(3 * MIB as usize, 1);
    let mut usr2 = usr1[..MIB as usize].to_vec();
    usr2.extend(noise(10_000, 2));
    usr2.extend_from_slice(&usr1[MIB as usize..]);
    usr2.extend(noise(200_000, 3));
    let verity = noise(64 * 1024, 4);
    let make = |v: &str, usr: &[u8], root: &str| -> Result<BuildInput> {
        let d = dir.join(v);
        keelson_payload::testing::fake_image_dir(
            &d,
            "keelson",
            v,
            root,
            usr,
            &verity,
            &format!("console=ttyS0 usrhash={root}"),
        )?;
        let mut input = BuildInput::from_image_dir(&d, v)?;
        input.arch = boot::systemd_arch().into();
        Ok(input)
    };
    let (r1, r2) = (
        format!("{}{}", "1".repeat(32), "a".repeat(32)),
        format!("{}{}", "2".repeat(32), "b".repeat(32)),
    );
    Ok((make("0.1.0", &usr1, &r1)?, make("0.2.0", &usr2, &r2)?))
}

/// A node root running v1 from slot A of a GPT disk image whose slots fit both versions.
struct NodeFixture {
    paths: Paths,
    layout: boot::Layout,
    os: OsRelease,
}

impl NodeFixture {
    fn new(
        work: &Path,
        v1: &BuildInput,
        m: &Manifest,
        public_key: &Path,
        reuse: bool,
    ) -> Result<Self> {
        fs::create_dir_all(work)?;
        let root = work.join("root");
        let keys = root.join("usr/share/keelson/update-keys");
        fs::create_dir_all(&keys)?;
        fs::copy(public_key, keys.join("bench.pem"))?;
        fs::create_dir_all(root.join("usr/lib"))?;
        fs::write(
            root.join("usr/lib/os-release"),
            format!("ID={}\nVERSION_ID={}\n", v1.os_id, v1.version),
        )?;
        let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let up = |n: u64| n.div_ceil(MIB) * MIB + MIB;
        let size = |name| m.part(name).map_or(0, |p| p.size);
        let usr_size = up(size(PartName::Usr).max(len(&v1.usr)));
        let verity_size = up(size(PartName::UsrVerity).max(len(&v1.usr_verity)));
        let layout = keelson_disk::Layout {
            esp_size: MIB,
            usr_size,
            usr_verity_size: verity_size,
            root_min_size: MIB,
            ..keelson_disk::Layout::new(0)
        };
        let layout = keelson_disk::Layout {
            disk_size: layout.esp_size + 2 * (usr_size + verity_size) + MIB + 4 * MIB,
            ..layout
        };
        let disk = work.join("disk.img");
        keelson_disk::create(&disk, &layout)?;
        let (a_usr, a_verity) = if reuse {
            (v1.usr.clone(), v1.usr_verity.clone())
        } else {
            let (u, v) = (work.join("a.usr"), work.join("a.verity"));
            fs::write(&u, noise(MIB as usize, 99))?;
            fs::write(&v, noise(4096, 2))?;
            (u, v)
        };
        let hash_a = hex::decode(&v1.usr_root_hash)?;
        let mut d = Disk::open_rw(&disk)?;
        d.install_usr_slot(UsrSlot::A, &v1.version, &hash_a, &a_usr, &a_verity)?;
        d.commit()?;
        let mut paths = Paths::under(&root);
        paths.disk = Some(disk);
        fs::create_dir_all(paths.esp_linux())?;
        if reuse {
            fs::copy(
                &v1.uki,
                paths
                    .esp_linux()
                    .join(format!("keelson_{}.efi", v1.version)),
            )?;
        }
        let layout = boot::layout(&paths, &hash_a)?;
        let os = boot::read_os_release(&paths.os_release())?;
        Ok(NodeFixture { paths, layout, os })
    }

    /// One whole apply into slot B; returns the last progress saved.
    async fn apply(&self, http: &reqwest::Client, target: &Target) -> Result<Progress> {
        let node = Node {
            paths: &self.paths,
            layout: &self.layout,
            os: &self.os,
            now: Utc::now(),
        };
        let mut last = Progress::default();
        let mut save = |p: &Progress| -> Result<(), String> {
            last = p.clone();
            Ok(())
        };
        let slot = apply::apply(&node, http, target, Progress::default(), &mut save).await?;
        ensure!(slot == UsrSlot::B, "apply wrote slot {}", slot.name());
        let staged = self
            .paths
            .esp_linux()
            .join(format!("keelson_{}+3.efi", target.version));
        ensure!(staged.is_file(), "{} was not installed", staged.display());
        Ok(last)
    }
}

#[derive(Clone)]
struct Counter {
    upstream: String,
    http: reqwest::Client,
    served: Arc<AtomicU64>,
}

/// Forwards payload GETs (with their Range) to the server and counts the body bytes sent.
async fn count(AxumState(c): AxumState<Counter>, req: Request) -> Response {
    let mut up = c.http.get(format!("{}{}", c.upstream, req.uri()));
    if let Some(r) = req.headers().get("range") {
        up = up.header("range", r.clone());
    }
    let fail = |e: String| {
        Response::builder()
            .status(502)
            .body(Body::from(e))
            .unwrap_or_default()
    };
    let r = match up.send().await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = match r.bytes().await {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    c.served.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    let mut b = Response::builder().status(status);
    for (k, v) in headers.iter() {
        b = b.header(k, v);
    }
    b.body(Body::from(bytes)).unwrap_or_default()
}

/// keelson-server on 127.0.0.1:0 (SQLite) with the payload uploaded through the REST API,
/// behind a counting proxy. Returns the payload's URL through the proxy.
async fn start_server(
    work: &Path,
    payload: &Path,
    http: &reqwest::Client,
    served: Arc<AtomicU64>,
) -> Result<String> {
    let (base, path) = common::serve_payload(work, payload, http).await?;
    let proxy_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_base = format!("http://{}", proxy_l.local_addr()?);
    let counter = Counter {
        upstream: base.clone(),
        http: http.clone(),
        served,
    };
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(count).with_state(counter);
        if let Err(e) = axum::serve(proxy_l, app).await {
            eprintln!("counting proxy stopped: {e}");
        }
    });
    Ok(format!("{proxy_base}{path}"))
}
