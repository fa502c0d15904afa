//! `keelson sysext build|check|sign|publish`: system extensions over `keelson-sysext`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keelson_sysext::check::{CheckOptions, CheckReport};
use keelson_sysext::ddi::{BuildOutput, BuildSpec, SigningKey};
use keelson_sysext::deb::{self, AptSource, BasePackages};
use keelson_sysext::publish::{self, PublishOptions, Published};
use keelson_sysext::release::{self, ReleaseFile};
use serde::Serialize;

/// Subcommands of `keelson sysext`.
#[derive(Subcommand)]
pub enum SysextCommand {
    /// Build an extension image (erofs + dm-verity DDI) from a directory or Debian packages.
    Build(Box<BuildArgs>),
    /// Check an image: structure, verity tree, signature, and systemd-sysext's matching rules.
    Check(CheckArgs),
    /// Sign an image's verity root hash (adds or replaces the signature partition).
    Sign(SignArgs),
    /// Publish images for systemd-sysupdate: versioned files, SHA256SUMS, a .transfer each.
    Publish(PublishArgs),
}

/// `keelson sysext build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Extension name: the image is installed as NAME.raw.
    #[arg(long)]
    name: String,
    /// The extension's version.
    #[arg(long)]
    version: String,
    /// A directory holding only usr/ and opt/.
    #[arg(long, conflicts_with = "deb", required_unless_present = "deb")]
    dir: Option<PathBuf>,
    /// Debian packages (with the dependencies the OS image lacks).
    #[arg(long, num_args = 1.., requires = "base_packages")]
    deb: Vec<String>,
    /// The OS image's package set (keelson_<v>.packages from `keelson image build`).
    #[arg(long)]
    base_packages: Option<PathBuf>,
    /// The image file to write.
    #[arg(long)]
    out: PathBuf,
    /// OS definition directory: ID, SYSEXT_LEVEL and the Debian archive come from it.
    #[arg(long, default_value = "os")]
    os_dir: PathBuf,
    /// ID= (default: the OS definition's name).
    #[arg(long)]
    id: Option<String>,
    /// SYSEXT_LEVEL= (default: the OS definition's sysext_level).
    #[arg(long)]
    sysext_level: Option<String>,
    /// Bind the extension to this OS version (VERSION_ID=, no SYSEXT_LEVEL).
    #[arg(long, value_name = "OS_VERSION")]
    os_bound: Option<String>,
    /// Architecture in systemd's naming (x86-64, arm64).
    #[arg(long, default_value = release::host_arch())]
    arch: String,
    /// Private key (PEM) to sign the verity root hash with.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Certificate (PEM) of --key: the one nodes trust in /usr/lib/verity.d or /etc/verity.d.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Timestamp of every file.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = keelson_image::build::DEFAULT_SOURCE_DATE_EPOCH)]
    source_date_epoch: u64,
    /// apt's package list cache (for --deb).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson sysext check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The image.
    file: PathBuf,
    /// The host's os-release to match against (default: /etc/os-release, else
    /// /usr/lib/os-release).
    #[arg(long)]
    os_release: Option<PathBuf>,
    /// Only check structure and signature, match against no host.
    #[arg(long, conflicts_with = "os_release")]
    no_host: bool,
    /// The host architecture in systemd's naming.
    #[arg(long, default_value = release::host_arch())]
    arch: String,
    /// The name it is installed under (default: the file name without .raw).
    #[arg(long)]
    name: Option<String>,
    /// Refuse an image whose root hash signature does not verify with --cert.
    #[arg(long, requires = "cert")]
    require_signature: bool,
    /// Certificate (PEM) to verify the signature with.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson sysext sign`.
#[derive(Args)]
pub struct SignArgs {
    /// The image.
    file: PathBuf,
    /// Private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Its certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Write the signed image here instead of replacing FILE.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson sysext publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// Output directory (served to nodes, or read locally).
    #[arg(long)]
    dir: PathBuf,
    /// Base URL the directory is served at (default: the directory itself as the source).
    #[arg(long)]
    url: Option<String>,
    /// Where nodes keep the versions.
    #[arg(long, default_value = publish::DEFAULT_TARGET_DIR)]
    target_dir: String,
    /// Where the NAME.raw symlink to the current version goes.
    #[arg(long, default_value = publish::DEFAULT_LINK_DIR)]
    link_dir: String,
    /// Versions kept on a node (at least 2).
    #[arg(long, default_value_t = 2)]
    instances_max: u32,
    /// The images.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `keelson sysext` subcommand.
pub fn run(cmd: SysextCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SysextCommand::Build(a) => build(*a),
        SysextCommand::Check(a) => check(a),
        SysextCommand::Sign(a) => sign(a),
        SysextCommand::Publish(a) => publish_cmd(a),
    }
}

fn print_build(o: &BuildOutput, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(o)?);
    } else {
        println!("image:     {}", o.path.display());
        if !o.name.is_empty() {
            println!("extension: {} {} ({})", o.name, o.version, o.arch);
        }
        println!("root hash: {}", o.root_hash);
        println!("signed:    {}", if o.signed { "yes" } else { "no" });
        println!("size:      {} bytes, sha256 {}", o.size, o.sha256);
        if !o.extension_release.is_empty() {
            print!("extension-release:\n{}", o.extension_release);
        }
    }
    Ok(())
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let def = if a.os_dir.join("os.yaml").is_file() {
        Some(keelson_image::OsDefinition::load(&a.os_dir)?)
    } else {
        None
    };
    let os_id =
        a.id.clone()
            .or_else(|| def.as_ref().map(|d| d.name.clone()))
            .unwrap_or_else(|| keelson_sysext::ddi::DEFAULT_OS_ID.to_string());
    let sysext_level = match (&a.os_bound, &a.sysext_level) {
        (Some(_), Some(_)) => bail!("--os-bound and --sysext-level exclude each other"),
        (Some(_), None) => None,
        (None, Some(l)) => Some(l.clone()),
        (None, None) => Some(
            def.as_ref()
                .map(|d| d.sysext_level.clone())
                .context("no --sysext-level and no OS definition (--os-dir) to take it from")?,
        ),
    };
    let spec = BuildSpec {
        name: a.name.clone(),
        version: a.version.clone(),
        arch: a.arch.clone(),
        os_id,
        sysext_level,
        os_version: a.os_bound.clone(),
        source_date_epoch: a.source_date_epoch,
        signing: match (&a.key, &a.cert) {
            (Some(key), Some(cert)) => Some(SigningKey {
                key: key.clone(),
                cert: cert.clone(),
            }),
            _ => None,
        },
    };
    spec.validate()?;
    let out = match &a.dir {
        Some(dir) => keelson_sysext::build_from_dir(&spec, dir, &a.out)?,
        None => {
            let def = def.with_context(|| {
                format!(
                    "--deb needs the OS definition for its Debian archive: no {}",
                    a.os_dir.join("os.yaml").display()
                )
            })?;
            let base_path = a
                .base_packages
                .as_deref()
                .context("--deb needs --base-packages")?;
            let arch = deb::debian_arch(&a.arch)
                .with_context(|| format!("no Debian architecture for {}", a.arch))?;
            let base = BasePackages::read(base_path, arch)?;
            let source = AptSource {
                suite: def.suite.clone(),
                mirror: def.mirror.clone(),
                components: def.components.clone(),
                arch: arch.to_string(),
                keyring: PathBuf::from(deb::DEFAULT_KEYRING),
            };
            let cache = a
                .cache_dir
                .clone()
                .unwrap_or_else(keelson_image::build::default_cache_dir);
            let parent = match a.out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            let work = tempfile::Builder::new()
                .prefix(".keelson-sysext-deb-")
                .tempdir_in(&parent)
                .with_context(|| {
                    format!("creating a temporary directory in {}", parent.display())
                })?;
            let fetched = deb::fetch(&a.deb, &base, &source, &cache, work.path())?;
            for f in &fetched {
                tracing::info!(package = %f.name, version = %f.version, "into the extension");
            }
            let tree = work.path().join("tree");
            deb::unpack(&fetched, &tree)?;
            keelson_sysext::build_from_dir(&spec, &tree, &a.out)?
        }
    };
    print_build(&out, a.json)?;
    Ok(ExitCode::SUCCESS)
}

fn read_host(path: Option<&Path>) -> anyhow::Result<ReleaseFile> {
    if let Some(p) = path {
        return Ok(ReleaseFile::read(p)?);
    }
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if Path::new(p).is_file() {
            return Ok(ReleaseFile::read(Path::new(p))?);
        }
    }
    bail!("no /etc/os-release or /usr/lib/os-release: give --os-release or --no-host")
}

fn print_check(r: &CheckReport) {
    println!("image:      {}", r.path.display());
    println!("name:       {}", r.name);
    println!("arch:       {}", r.layout.arch);
    println!("root hash:  {}", r.root_hash);
    println!(
        "verity:     {}",
        if r.verity_ok { "ok" } else { "MISMATCH" }
    );
    let s = &r.signature;
    let sig = match (s.present, s.verified) {
        (false, _) => format!("none ({})", s.reason.clone().unwrap_or_default()),
        (true, Some(true)) => "present, verified".to_string(),
        (true, Some(false)) => format!("present, BAD: {}", s.reason.clone().unwrap_or_default()),
        (true, None) => "present, not verified (no --cert)".to_string(),
    };
    println!("signature:  {sig}");
    if let Some(rel) = &r.extension_release {
        for (k, v) in &rel.fields {
            println!("  {k}={v}");
        }
    }
    if let Some(m) = &r.matching {
        println!(
            "host match: {} ({})",
            if m.matches { "yes" } else { "NO" },
            m.reason
        );
    }
    for p in &r.problems {
        println!("problem:    {p}");
    }
    println!("result:     {}", if r.ok { "ok" } else { "REFUSED" });
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let host = if a.no_host {
        None
    } else {
        Some(read_host(a.os_release.as_deref())?)
    };
    let opts = CheckOptions {
        name: a.name.clone(),
        host,
        host_arch: a.arch.clone(),
        require_signature: a.require_signature,
        cert: a.cert.clone(),
    };
    let r = keelson_sysext::check(&a.file, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_check(&r);
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKey {
        key: a.key.clone(),
        cert: a.cert.clone(),
    };
    let out = a.out.clone().unwrap_or_else(|| a.file.clone());
    let o = keelson_sysext::sign_image(&a.file, &key, &out)?;
    print_build(&o, a.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct PublishReport {
    dir: PathBuf,
    published: Vec<Published>,
    sha256sums: PathBuf,
}

fn publish_cmd(a: PublishArgs) -> anyhow::Result<ExitCode> {
    let opts = PublishOptions {
        dir: a.dir.clone(),
        url: a.url.clone(),
        target_dir: a.target_dir.clone(),
        link_dir: a.link_dir.clone(),
        instances_max: a.instances_max,
    };
    let published = keelson_sysext::publish(&a.files, &opts)?;
    let report = PublishReport {
        sha256sums: a.dir.join("SHA256SUMS"),
        dir: a.dir.clone(),
        published,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.published {
            println!(
                "{} {} ({}) -> {}  sha256 {}",
                p.name,
                p.version,
                p.arch,
                p.path.display(),
                p.sha256
            );
            println!("  transfer: {}", p.transfer.display());
        }
        println!("SHA256SUMS: {}", report.sha256sums.display());
    }
    Ok(ExitCode::SUCCESS)
}
