//! `keelson config apply`: run the provisioning engine's files stage (and, when asked, the
//! disks stage) for one config against a target root directory.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use keelson_provision::engine::{self, Change, Outcome, files::FilesOptions};
use keelson_provision::fetch::{DEFAULT_MAX_SIZE, Fetcher};
use keelson_provision::http::{HttpClient, RetryPolicy};
use keelson_provision::target::TargetRoot;
use serde::Serialize;

/// Arguments of `keelson config apply`.
#[derive(Args)]
pub struct ApplyArgs {
    /// Target root directory (`/sysroot` in the initrd).
    #[arg(long)]
    root: PathBuf,
    /// Print what would change, as a tree, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the changes as JSON (the same data as the tree).
    #[arg(long)]
    json: bool,
    /// Directory for `local` paths when the config is YAML.
    #[arg(short = 'd', long)]
    files_dir: Option<PathBuf>,
    /// Also run the disks stage: partition and format the devices the config names. Off by
    /// default because those are host devices, not paths under --root.
    #[arg(long)]
    disks: bool,
    /// Config: Ignition JSON (spec 3.0-3.6) or the YAML front end; `-` for stdin.
    config: String,
}

/// What `apply` did (or would do); printed as a tree or as JSON.
#[derive(Serialize)]
struct ApplyOutput {
    root: String,
    dry_run: bool,
    changes: Vec<Change>,
    warnings: Vec<String>,
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

/// Parse JSON, or translate YAML and then parse its JSON so both go through one validator.
fn load_config(
    bytes: &[u8],
    name: &str,
    files_dir: Option<PathBuf>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<keelson_config::Config> {
    let text = String::from_utf8_lossy(bytes);
    let json = if text.trim_start().starts_with('{') {
        bytes.to_vec()
    } else {
        let opts = keelson_config::yaml::Options {
            files_dir,
            strict: false,
        };
        let t = keelson_config::yaml::translate(&text, &opts)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("translating YAML config {name}"))?;
        for e in &t.report.entries {
            warnings.push(format!("{name}: {e}"));
        }
        serde_json::to_vec(&t.config).context("serializing translated config")?
    };
    let (config, report) = keelson_config::parse(&json)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("parsing config {name}"))?;
    for e in &report.entries {
        warnings.push(format!("{name}: {e}"));
    }
    Ok(config)
}

pub fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let mut warnings = Vec::new();
    let bytes = read_input(&args.config)?;
    let config = load_config(&bytes, &args.config, args.files_dir.clone(), &mut warnings)?;
    let fetcher = Fetcher::new(
        HttpClient::new(RetryPolicy::default()).context("building HTTP client")?,
        DEFAULT_MAX_SIZE,
    );
    let fetcher = engine::fetcher_for(&config, &fetcher)
        .context("applying ignition.timeouts/proxy/security")?;
    let config = engine::render_config(config, &fetcher, &mut warnings, 0)
        .context("fetching configs referenced by ignition.config")?;
    let fetcher = engine::fetcher_for(&config, &fetcher)
        .context("applying ignition.timeouts/proxy/security of the merged config")?;
    let target = TargetRoot::new(&args.root).context("checking --root")?;

    let mut outcome = Outcome::default();
    let storage = &config.storage;
    if !storage.disks.is_empty() || !storage.filesystems.is_empty() {
        if args.disks {
            let plan = engine::disks::plan_disks(&config).context("planning the disks stage")?;
            if args.dry_run {
                outcome.extend(plan.outcome().clone());
            } else {
                outcome.extend(plan.apply().context("applying the disks stage")?);
            }
        } else {
            warnings.push(
                "storage.disks/filesystems skipped: they name host devices; pass --disks to partition and format them"
                    .into(),
            );
        }
    }
    let mut opts = FilesOptions::current();
    opts.dry_run = args.dry_run;
    if !opts.chown {
        warnings.push("not running as root: file ownership is not changed".into());
    }
    let files = engine::apply_files(&config, &target, &fetcher, &opts).with_context(|| {
        format!(
            "{} the files stage to {}",
            if args.dry_run { "planning" } else { "applying" },
            args.root.display()
        )
    })?;
    outcome.extend(files);
    warnings.extend(outcome.warnings.iter().cloned());

    let out = ApplyOutput {
        root: target.root().display().to_string(),
        dry_run: args.dry_run,
        changes: outcome.changes,
        warnings,
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string_pretty(&out).context("serializing the changes")?;
        writeln!(stdout, "{text}").context("writing output")?;
    } else {
        for w in &out.warnings {
            tracing::warn!("{w}");
        }
        let verb = if out.dry_run {
            "would change"
        } else {
            "changed"
        };
        writeln!(stdout, "{} {verb}:", out.root).context("writing output")?;
        write!(stdout, "{}", engine::render_tree(&out.changes)).context("writing output")?;
    }
    Ok(ExitCode::SUCCESS)
}
