//! `keelson config ...`: validate and translate (config work) and apply (provisioning work,
//! in `config_apply.rs`).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use keelson_config::{Error, Kind, Report};
use serde::Serialize;

use crate::config_apply;

/// Subcommands of `keelson config`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Apply a config to a target root directory.
    Apply(config_apply::ApplyArgs),
    /// Validate an Ignition 3.0-3.6 config (or a YAML config); exits 1 only on errors.
    Validate(ValidateArgs),
    /// Translate a YAML config (variant flatcar 1.0.0/1.1.0 or keelson 1.0.0) to Ignition JSON.
    Translate(TranslateArgs),
}

/// Arguments of `keelson config validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// Config file, or `-` for stdin.
    input: String,
    /// Directory for `local` paths when the input is YAML.
    #[arg(short = 'd', long)]
    files_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `keelson config translate`.
#[derive(Args)]
pub struct TranslateArgs {
    /// YAML config file, or `-` for stdin.
    input: String,
    /// Fail on warnings too.
    #[arg(short, long)]
    strict: bool,
    /// Directory that `local` paths (and `storage.trees`) are relative to.
    #[arg(short = 'd', long)]
    files_dir: Option<PathBuf>,
    /// Indent the JSON output.
    #[arg(short, long)]
    pretty: bool,
    /// Write to this file (atomically) instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Apply(args) => config_apply::run(args),
        ConfigCommand::Validate(args) => validate(&args),
        ConfigCommand::Translate(args) => translate(&args),
    }
}

fn read_input(input: &str) -> anyhow::Result<Vec<u8>> {
    if input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading config from stdin")?;
        Ok(buf)
    } else {
        std::fs::read(input).with_context(|| format!("reading config {input}"))
    }
}

/// JSON configs start with `{`; anything else is taken as the YAML front end.
fn is_json(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with('{') || t.starts_with('[') || t.is_empty()
}

/// The output of `keelson config validate`, printed as lines or as JSON.
#[derive(Serialize)]
struct ValidateOutput {
    /// The input as given.
    input: String,
    /// False when at least one entry is an error.
    valid: bool,
    /// Every report entry.
    entries: Vec<keelson_config::Entry>,
}

fn validate(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_input(&a.input)?;
    let report = if is_json(&bytes) {
        keelson_config::validate_bytes(&bytes)
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let opts = keelson_config::yaml::Options {
            files_dir: a.files_dir.clone(),
            strict: false,
        };
        match keelson_config::yaml::translate(&text, &opts) {
            Ok(t) => t.report,
            Err(e) => e.report(),
        }
    };
    let out = ValidateOutput {
        input: a.input.clone(),
        valid: !report.is_fatal(),
        entries: report.entries.clone(),
    };
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let text = serde_json::to_string_pretty(&out).context("serializing report")?;
        writeln!(stdout, "{text}").context("writing report")?;
    } else {
        for e in &out.entries {
            writeln!(stdout, "{e}").context("writing report")?;
        }
    }
    Ok(if out.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(report: &Report) {
    let mut stderr = std::io::stderr().lock();
    for e in &report.entries {
        // Best effort: a closed stderr must not hide the exit code.
        let _ = writeln!(stderr, "{e}");
    }
}

fn translate(a: &TranslateArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_input(&a.input)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{}: config is not valid UTF-8", a.input))?;
    let opts = keelson_config::yaml::Options {
        files_dir: a.files_dir.clone(),
        strict: a.strict,
    };
    let translated = match keelson_config::yaml::translate(&text, &opts) {
        Ok(t) => t,
        Err(e) => {
            let report = e.report();
            print_report(&report);
            if matches!(e, Error::Invalid { .. })
                && !report.entries.iter().any(|x| x.kind == Kind::Error)
            {
                eprintln!("error: {}: config is not valid", a.input);
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    print_report(&translated.report);
    let mut json = if a.pretty {
        serde_json::to_string_pretty(&translated.config)
    } else {
        serde_json::to_string(&translated.config)
    }
    .context("serializing Ignition config")?;
    json.push('\n');
    match &a.output {
        None => std::io::stdout()
            .lock()
            .write_all(json.as_bytes())
            .context("writing Ignition config to stdout")?,
        Some(path) => write_atomic(path, json.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Write next to the target and rename, so a reader never sees a half-written file.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: output path has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
