//! `keelson payload build|sign|verify|inspect`: signed release payloads over `keelson-payload`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use keelson_payload::{
    BuildInput, BuildOptions, Expectations, Manifest, PartName, PayloadFile, Signature,
    SigningKeyFile, TrustedKeys, verify_file,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Subcommands of `keelson payload`.
#[derive(Subcommand)]
pub enum PayloadCommand {
    /// Build a payload from the output directory of `keelson image build`.
    Build(BuildArgs),
    /// Add a signature to a payload (the manifest stays byte for byte the same).
    Sign(SignArgs),
    /// Check signatures, manifest, every chunk and part, and the UKI's usrhash=.
    Verify(VerifyArgs),
    /// Show a payload's header and manifest (no checks).
    Inspect(InspectArgs),
}

/// `keelson payload build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Output directory of `keelson image build` (holds the build record NAME_VERSION.json).
    #[arg(long)]
    image_dir: PathBuf,
    /// The version to package (the record's version).
    #[arg(long)]
    version: String,
    /// Private key (PKCS#8 PEM) to sign with; without it the payload is unsigned.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Days until the manifest expires.
    #[arg(long, default_value_t = 90)]
    expires_in: u32,
    /// zstd level.
    #[arg(long, default_value_t = keelson_payload::DEFAULT_LEVEL)]
    level: i32,
    /// The payload file to write.
    #[arg(long)]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson payload sign`.
#[derive(Args)]
pub struct SignArgs {
    /// Private key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// The payload file (rewritten through a temporary name and a rename).
    file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson payload verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Directory of trusted public keys (every *.pem).
    #[arg(long)]
    keys: PathBuf,
    /// The running version; the payload's must be newer.
    #[arg(long, default_value = "0")]
    running_version: String,
    /// The os-release ID the payload must be for.
    #[arg(long, default_value = "keelson")]
    os_id: String,
    /// The systemd architecture name the payload must be for.
    #[arg(long, default_value = "x86-64")]
    arch: String,
    /// The payload file.
    file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson payload inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The payload file.
    file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: PayloadCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PayloadCommand::Build(a) => build(a),
        PayloadCommand::Sign(a) => sign(a),
        PayloadCommand::Verify(a) => verify(a),
        PayloadCommand::Inspect(a) => inspect(a),
    }
}

/// Print to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn to_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v).context("serializing the report")?;
    s.push('\n');
    Ok(s)
}

/// One part in a report.
#[derive(Serialize)]
struct PartSummary {
    name: PartName,
    size: u64,
    sha256: String,
    chunks: usize,
    /// Compressed bytes of the chunks, counting a shared copy once per part.
    stored_bytes: u64,
}

fn summarise(m: &Manifest) -> Vec<PartSummary> {
    m.parts
        .iter()
        .map(|p| {
            let mut seen = std::collections::HashSet::new();
            let stored_bytes = p
                .chunks
                .iter()
                .filter(|c| seen.insert(c.data_offset))
                .map(|c| c.data_size)
                .sum();
            PartSummary {
                name: p.name,
                size: p.size,
                sha256: p.sha256.clone(),
                chunks: p.chunks.len(),
                stored_bytes,
            }
        })
        .collect()
}

fn write_parts(s: &mut String, parts: &[PartSummary]) {
    for p in parts {
        let _ = writeln!(
            s,
            "  {:<11} {:>12} bytes  {:>5} chunks  {:>12} stored  sha256 {}",
            p.name, p.size, p.chunks, p.stored_bytes, p.sha256
        );
    }
}

/// The whole file's size and sha256 (hex, and base64 as Omaha's postinstall action carries it).
fn file_digest(path: &Path) -> anyhow::Result<(u64, String, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let d = h.finalize();
    Ok((
        size,
        hex::encode(d),
        base64::engine::general_purpose::STANDARD.encode(d),
    ))
}

/// What `build` and `sign` report.
#[derive(Serialize)]
struct WriteReport {
    payload: PathBuf,
    os_id: String,
    arch: String,
    version: String,
    usr_root_hash: String,
    expires: DateTime<Utc>,
    size: u64,
    sha256: String,
    sha256_base64: String,
    signed_by: Vec<String>,
    parts: Vec<PartSummary>,
}

impl WriteReport {
    fn new(path: &Path) -> anyhow::Result<Self> {
        let file =
            PayloadFile::open(path).with_context(|| format!("reading {}", path.display()))?;
        let m = Manifest::from_bytes(&file.header().manifest_bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let (size, sha256, sha256_base64) = file_digest(path)?;
        Ok(WriteReport {
            payload: path.to_path_buf(),
            os_id: m.os_id.clone(),
            arch: m.arch.clone(),
            version: m.version.clone(),
            usr_root_hash: m.usr_root_hash.clone(),
            expires: m.expires,
            size,
            sha256,
            sha256_base64,
            signed_by: file
                .header()
                .signatures
                .iter()
                .map(|s| s.key_id.clone())
                .collect(),
            parts: summarise(&m),
        })
    }

    fn render(&self, json: bool) -> anyhow::Result<String> {
        if json {
            return to_json(self);
        }
        let mut s = String::new();
        let _ = writeln!(s, "payload:   {}", self.payload.display());
        let _ = writeln!(
            s,
            "release:   {} {} {}",
            self.os_id, self.version, self.arch
        );
        let _ = writeln!(s, "root hash: {}", self.usr_root_hash);
        let _ = writeln!(s, "expires:   {}", self.expires.to_rfc3339());
        let _ = writeln!(s, "size:      {} bytes", self.size);
        let _ = writeln!(
            s,
            "sha256:    {} (base64 {})",
            self.sha256, self.sha256_base64
        );
        let signed = if self.signed_by.is_empty() {
            "nobody (unsigned)".to_string()
        } else {
            self.signed_by.join(", ")
        };
        let _ = writeln!(s, "signed by: {signed}");
        write_parts(&mut s, &self.parts);
        Ok(s)
    }
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let input = BuildInput::from_image_dir(&a.image_dir, &a.version)
        .with_context(|| format!("reading the image build in {}", a.image_dir.display()))?;
    let key = a
        .key
        .as_deref()
        .map(SigningKeyFile::load)
        .transpose()
        .context("loading the signing key")?;
    let total: u64 = PartName::ALL
        .iter()
        .filter_map(|&n| std::fs::metadata(input.part_path(n)).ok())
        .map(|m| m.len())
        .sum();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let progress = |n: u64| bar.inc(n);
    let opts = BuildOptions {
        level: a.level,
        expires_in: chrono::Duration::days(i64::from(a.expires_in)),
        keys: key.iter().collect(),
        progress: Some(&progress),
        ..BuildOptions::default()
    };
    keelson_payload::build(&input, &a.out, &opts)
        .with_context(|| format!("building {}", a.out.display()))?;
    bar.finish_and_clear();
    print(&WriteReport::new(&a.out)?.render(a.json)?)?;
    Ok(ExitCode::SUCCESS)
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKeyFile::load(&a.key).context("loading the signing key")?;
    keelson_payload::sign(&a.file, &key)
        .with_context(|| format!("signing {}", a.file.display()))?;
    print(&WriteReport::new(&a.file)?.render(a.json)?)?;
    Ok(ExitCode::SUCCESS)
}

/// What `verify` reports, accepted or refused.
#[derive(Serialize)]
struct VerifyReport {
    payload: PathBuf,
    verified: bool,
    /// The stable reason slug of a refusal (`bad_signature`, `chunk_hash`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usr_root_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks_checked: Option<usize>,
}

impl VerifyReport {
    fn render(&self, json: bool) -> anyhow::Result<String> {
        if json {
            return to_json(self);
        }
        let mut s = String::new();
        if self.verified {
            let _ = writeln!(s, "{}: verified", self.payload.display());
            let _ = writeln!(s, "version:   {}", self.version.as_deref().unwrap_or(""));
            let _ = writeln!(s, "signed by: {}", self.key_id.as_deref().unwrap_or(""));
            let _ = writeln!(
                s,
                "root hash: {} (equals the UKI's usrhash=)",
                self.usr_root_hash.as_deref().unwrap_or("")
            );
            if let Some(e) = self.expires {
                let _ = writeln!(s, "expires:   {}", e.to_rfc3339());
            }
            let _ = writeln!(s, "chunks:    {} checked", self.chunks_checked.unwrap_or(0));
        }
        Ok(s)
    }
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys = TrustedKeys::load_dir(&a.keys).context("loading the trusted keys")?;
    let expect = Expectations {
        os_id: &a.os_id,
        arch: &a.arch,
        running_version: &a.running_version,
        now: Utc::now(),
    };
    let mut report = VerifyReport {
        payload: a.file.clone(),
        verified: false,
        reason: None,
        error: None,
        key_id: None,
        version: None,
        usr_root_hash: None,
        expires: None,
        chunks_checked: None,
    };
    let code = match verify_file(&a.file, &keys, &expect) {
        Ok(v) => {
            report.verified = true;
            report.key_id = Some(v.key_id);
            report.version = Some(v.manifest.version.clone());
            report.usr_root_hash = Some(v.manifest.usr_root_hash.clone());
            report.expires = Some(v.manifest.expires);
            report.chunks_checked = Some(v.chunks_checked);
            ExitCode::SUCCESS
        }
        Err(e) => {
            report.reason = Some(e.reason());
            report.error = Some(e.to_string());
            if !a.json {
                eprintln!("{}: refused ({}): {e}", a.file.display(), e.reason());
            }
            ExitCode::FAILURE
        }
    };
    print(&report.render(a.json)?)?;
    Ok(code)
}

/// What `inspect` reports: the header and the manifest as stored.
#[derive(Serialize)]
struct InspectReport {
    payload: PathBuf,
    size: u64,
    manifest_len: u64,
    data_start: u64,
    signatures: Vec<Signature>,
    parts: Vec<PartSummary>,
    manifest: Manifest,
}

impl InspectReport {
    fn render(&self, json: bool) -> anyhow::Result<String> {
        if json {
            return to_json(self);
        }
        let m = &self.manifest;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "payload:    {} ({} bytes)",
            self.payload.display(),
            self.size
        );
        let _ = writeln!(
            s,
            "header:     {} bytes, manifest {} bytes",
            self.data_start, self.manifest_len
        );
        let _ = writeln!(s, "release:    {} {} {}", m.os_id, m.version, m.arch);
        let _ = writeln!(s, "root hash:  {}", m.usr_root_hash);
        let _ = writeln!(s, "created:    {}", m.created.to_rfc3339());
        let _ = writeln!(s, "expires:    {}", m.expires.to_rfc3339());
        if self.signatures.is_empty() {
            let _ = writeln!(s, "signatures: none");
        }
        for sig in &self.signatures {
            let _ = writeln!(s, "signature:  key {}", sig.key_id);
        }
        let _ = writeln!(s, "parts:");
        write_parts(&mut s, &self.parts);
        Ok(s)
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let file =
        PayloadFile::open(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let h = file.header();
    let manifest = Manifest::from_bytes(&h.manifest_bytes)
        .with_context(|| format!("reading the manifest of {}", a.file.display()))?;
    let report = InspectReport {
        payload: a.file.clone(),
        size: file.len(),
        manifest_len: h.manifest_bytes.len() as u64,
        data_start: h.data_start,
        signatures: h.signatures.clone(),
        parts: summarise(&manifest),
        manifest,
    };
    print(&report.render(a.json)?)?;
    Ok(ExitCode::SUCCESS)
}
