//! `keelson verity format|verify|dump`: veritysetup's commands and flags over `keelson-verity`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use keelson_verity::{
    HashAlgorithm, HashType, SaltSpec, VerityError, VerityInfo, VerityParams, check_block_size,
    decode_root_hash, parse_uuid,
};
use serde::Serialize;

/// Subcommands of `keelson verity`.
#[derive(Subcommand)]
pub enum VerityCommand {
    /// Build the hash tree of DATA and write it to HASH (like `veritysetup format`).
    Format(FormatArgs),
    /// Check DATA and HASH against ROOT_HASH; names the first bad block (like `veritysetup verify`).
    Verify(VerifyArgs),
    /// Show the superblock of HASH (like `veritysetup dump`).
    Dump(DumpArgs),
}

/// Tree parameters, named like veritysetup's flags.
#[derive(Args)]
pub struct TreeArgs {
    /// Data block size in bytes (512..4096, power of two).
    #[arg(long, default_value_t = 4096)]
    data_block_size: u64,
    /// Hash block size in bytes (512..4096, power of two).
    #[arg(long, default_value_t = 4096)]
    hash_block_size: u64,
    /// Number of data blocks (default: the whole data file, or up to --hash-offset when DATA
    /// and HASH are the same file).
    #[arg(long)]
    data_blocks: Option<u64>,
    /// Byte offset of the hash area (superblock first) in HASH; a multiple of 512.
    #[arg(long, default_value_t = 0)]
    hash_offset: u64,
    /// Salt as hex, or `-` for none (default: 32 random bytes).
    #[arg(long, allow_hyphen_values = true)]
    salt: Option<String>,
    /// Do not write (or read) a superblock.
    #[arg(long)]
    no_superblock: bool,
    /// Hash format: 1 (normal) or 0 (ChromeOS).
    #[arg(long, default_value_t = 1)]
    format: u64,
    /// Hash algorithm: sha1, sha256 or sha512.
    #[arg(long, default_value = "sha256")]
    hash: String,
}

/// `keelson verity format`.
#[derive(Args)]
pub struct FormatArgs {
    /// Data file or device.
    data: PathBuf,
    /// Hash file or device (may be DATA itself with --hash-offset).
    hash_device: PathBuf,
    #[command(flatten)]
    tree: TreeArgs,
    /// UUID for the superblock (default: random).
    #[arg(long)]
    uuid: Option<String>,
    /// Print every parameter as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson verity verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Data file or device.
    data: PathBuf,
    /// Hash file or device.
    hash_device: PathBuf,
    /// Expected root hash (hex).
    root_hash: String,
    #[command(flatten)]
    tree: TreeArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `keelson verity dump`.
#[derive(Args)]
pub struct DumpArgs {
    /// Hash file or device holding a superblock.
    hash_device: PathBuf,
    /// Byte offset of the superblock.
    #[arg(long, default_value_t = 0)]
    hash_offset: u64,
    /// Print every parameter as JSON.
    #[arg(long)]
    json: bool,
}

impl TreeArgs {
    fn params(&self, salt_default: SaltSpec) -> anyhow::Result<VerityParams> {
        let salt = match &self.salt {
            Some(s) => SaltSpec::parse_hex(s).context("--salt")?,
            None => salt_default,
        };
        Ok(VerityParams {
            hash_type: HashType::from_number(self.format).context("--format")?,
            algorithm: self.hash.parse::<HashAlgorithm>().context("--hash")?,
            data_block_size: check_block_size("data", self.data_block_size)
                .context("--data-block-size")?,
            hash_block_size: check_block_size("hash", self.hash_block_size)
                .context("--hash-block-size")?,
            data_blocks: self.data_blocks,
            hash_offset: self.hash_offset,
            salt,
            uuid: None,
            superblock: !self.no_superblock,
        })
    }
}

/// What `format`, `verify` and `dump` report: printed as veritysetup does, or as JSON.
#[derive(Serialize)]
struct Report {
    /// The file the header describes (the hash file).
    hash_device: PathBuf,
    /// The data file, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    /// `verify` only: did everything match?
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    /// `verify` only: the first bad block or root mismatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Every parameter of the tree.
    #[serde(flatten)]
    info: Option<VerityInfo>,
}

impl Report {
    /// The human text (veritysetup's labels and spacing) or the JSON document.
    fn render(&self, json: bool) -> anyhow::Result<String> {
        use std::fmt::Write as _;
        if json {
            let mut s = serde_json::to_string_pretty(self).context("serializing report")?;
            s.push('\n');
            return Ok(s);
        }
        let mut s = String::new();
        if let Some(i) = &self.info {
            // Same labels and spacing as veritysetup 2.6.1.
            let _ = writeln!(
                s,
                "VERITY header information for {}",
                self.hash_device.display()
            );
            let _ = writeln!(s, "UUID:            \t{}", i.uuid_string());
            let _ = writeln!(s, "Hash type:       \t{}", i.hash_type.number());
            let _ = writeln!(s, "Data blocks:     \t{}", i.data_blocks);
            let _ = writeln!(s, "Data block size: \t{}", i.data_block_size);
            let _ = writeln!(s, "Hash blocks:     \t{}", i.hash_blocks);
            let _ = writeln!(s, "Hash block size: \t{}", i.hash_block_size);
            let _ = writeln!(s, "Hash algorithm:  \t{}", i.algorithm);
            let _ = writeln!(s, "Salt:            \t{}", i.salt_hex());
            if i.root_hash.is_some() {
                let _ = writeln!(s, "Root hash:      \t{}", i.root_hash_hex());
            }
            let _ = writeln!(s, "Hash device size: \t{} [bytes]", i.hash_device_size);
        }
        if self.verified == Some(true) {
            let _ = writeln!(s, "Verification succeeded.");
        }
        Ok(s)
    }

    /// Print to stdout (a closed pipe, as with `| head`, is not an error); a verification
    /// failure also goes to stderr in human mode.
    fn print(&self, json: bool) -> anyhow::Result<()> {
        use std::io::Write as _;
        let text = self.render(json)?;
        match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing to stdout");
            }
            _ => {}
        }
        if let (false, Some(e)) = (json, &self.error) {
            eprintln!("Verification failed: {e}");
        }
        Ok(())
    }
}

pub fn run(cmd: VerityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VerityCommand::Format(a) => format(a),
        VerityCommand::Verify(a) => verify(a),
        VerityCommand::Dump(a) => dump(a),
    }
}

fn describe(data: &Path, hash: &Path) -> String {
    format!("{} with hash area in {}", data.display(), hash.display())
}

fn format(a: FormatArgs) -> anyhow::Result<ExitCode> {
    let mut params = a
        .tree
        .params(SaltSpec::Random(keelson_verity::DEFAULT_SALT_SIZE))?;
    if let Some(u) = &a.uuid {
        params.uuid = Some(parse_uuid(u).context("--uuid")?);
    }
    let info = {
        let _span = tracing::info_span!("verity_format", data = %a.data.display()).entered();
        keelson_verity::format(&a.data, &a.hash_device, &params)
            .with_context(|| format!("formatting {}", describe(&a.data, &a.hash_device)))?
    };
    Report {
        hash_device: a.hash_device,
        data: Some(a.data),
        verified: None,
        error: None,
        info: Some(info),
    }
    .print(a.json)?;
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    // Without a superblock every parameter (salt included) must be given again.
    let params = a.tree.params(SaltSpec::Fixed(Vec::new()))?;
    let root = decode_root_hash(&a.root_hash).context("ROOT_HASH")?;
    let result = keelson_verity::verify(&a.data, &a.hash_device, &root, &params);
    let (info, error) = match result {
        Ok(info) => (Some(info), None),
        Err(e) if e.is_mismatch() => (None, Some(e)),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("verifying {}", describe(&a.data, &a.hash_device)));
        }
    };
    let failed = error.is_some();
    Report {
        hash_device: a.hash_device,
        data: Some(a.data),
        verified: Some(!failed),
        error: error.as_ref().map(VerityError::to_string),
        info,
    }
    .print(a.json)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn dump(a: DumpArgs) -> anyhow::Result<ExitCode> {
    // The library error already names the file and offset.
    let info = keelson_verity::dump(&a.hash_device, a.hash_offset)
        .context("reading the verity superblock")?;
    Report {
        hash_device: a.hash_device,
        data: None,
        verified: None,
        error: None,
        info: Some(info),
    }
    .print(a.json)?;
    Ok(ExitCode::SUCCESS)
}
