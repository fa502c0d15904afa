//! The first-boot stages, defined once: [`Stage`] names them in order and says what each
//! does, [`run_stage`] runs one and returns a [`StageOutcome`] (what changed, and where the
//! config came from as a [`ConfigSource`]). `keelson-firstboot --stage <name>` (one process
//! per stage, one initrd unit per stage) is a thin caller of this module.
//!
//! `fetch` finds, renders and caches the config (and records its source) next to the cache;
//! the later stages read only that cache, so each stage can fail, and be reported, on its
//! own, as in Ignition.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::engine::{self, ApplyError, Outcome, files::FilesOptions};
use crate::fetch::Fetcher;
use crate::http::HttpClient;
use crate::providers::{
    AwsProvider, AzureProvider, CmdlineProvider, FileProvider, FwCfgProvider, GcpProvider,
    OpenStackProvider, Provider, cmdline_value,
};
use crate::target::TargetRoot;

/// Where the rendered config is cached between stages (Ignition: `/run/ignition.json`).
pub const DEFAULT_CACHE: &str = "/run/keelson/config.json";

/// The first-boot marker, relative to the ESP (Flatcar: `flatcar/first_boot`): present until
/// the `done` stage of a successful first boot removes it. A system credential file, so
/// that systemd-stub hands it to the initrd ([`FIRST_BOOT_MARKER_IN_INITRD`]), as Flatcar's
/// GRUB turns its marker into a kernel argument: no boot mounts the ESP to look for it.
pub const FIRST_BOOT_MARKER: &str = "loader/credentials/keelson.first_boot.cred";

/// Where the initrd sees [`FIRST_BOOT_MARKER`]: systemd-stub packs the ESP's
/// `loader/credentials/*.cred` into an initrd of its own, unpacked here.
pub const FIRST_BOOT_MARKER_IN_INITRD: &str = "/.extra/global_credentials/keelson.first_boot.cred";

/// One first-boot stage; [`Stage::ALL`] lists them in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Find the config, follow merge/replace, fetch every remote resource, cache it all.
    Fetch,
    /// Partition, assemble RAID, set up LUKS and format.
    Disks,
    /// Mount filesystems under the target.
    Mount,
    /// Users, files, directories, links, units.
    Files,
    /// Drop the stage-only state (resource cache, LUKS keys); the caller then clears the
    /// first-boot marker.
    Done,
}

impl Stage {
    /// Every stage, in the order the initrd runs them.
    pub const ALL: [Stage; 5] = [
        Stage::Fetch,
        Stage::Disks,
        Stage::Mount,
        Stage::Files,
        Stage::Done,
    ];

    /// The stage's name on the command line, in unit names and in messages (`fetch`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Disks => "disks",
            Stage::Mount => "mount",
            Stage::Files => "files",
            Stage::Done => "done",
        }
    }

    /// Its position in [`Stage::ALL`], from 1.
    pub fn order(self) -> usize {
        match self {
            Stage::Fetch => 1,
            Stage::Disks => 2,
            Stage::Mount => 3,
            Stage::Files => 4,
            Stage::Done => 5,
        }
    }

    /// What the stage does, in one line (for `--help` and the docs).
    pub fn description(self) -> &'static str {
        match self {
            Stage::Fetch => {
                "find the config (providers), render merge/replace, fetch and verify every remote resource, cache them under /run"
            }
            Stage::Disks => "partitions, RAID, LUKS and file systems from the cached config",
            Stage::Mount => "mount the config's file systems under the target root",
            Stage::Files => {
                "accounts, files, directories, links, units and presets in the target root"
            }
            Stage::Done => {
                "remove the resource cache and LUKS keys; then clear the first-boot marker"
            }
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stage name that is not one of [`Stage::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {0:?} (fetch, disks, mount, files, done)")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

/// Where the rendered config came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// The provider of that name had it (`cmdline`, `qemu`, `aws`, `gcp`, `azure`,
    /// `openstack`, `file`).
    Provider(String),
    /// No provider had a config: an empty one was applied.
    Empty,
}

impl ConfigSource {
    /// The provider's name, or `none`.
    pub fn name(&self) -> &str {
        match self {
            ConfigSource::Provider(p) => p,
            ConfigSource::Empty => "none",
        }
    }

    fn parse_record(text: &str) -> Option<ConfigSource> {
        let name = text.trim().strip_prefix("from ")?.trim();
        match name {
            "" => None,
            "none" => Some(ConfigSource::Empty),
            p => Some(ConfigSource::Provider(p.to_string())),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageOutcome {
    /// The stage that ran.
    pub stage: Stage,
    /// Where the config came from: found by `fetch`, read back from its record by the later
    /// stages; `None` when there is no record (no fetch ran against this cache).
    pub config_source: Option<ConfigSource>,
    /// The changes made and the warnings.
    pub outcome: Outcome,
}

/// The file the fetch stage records the config source in: `config-source` next to the config
/// cache (`/run/keelson/config-source`), holding `from <provider>`.
pub fn config_source_file(config_cache: &Path) -> PathBuf {
    state_dir(config_cache).join("config-source")
}

/// The config source the fetch stage recorded next to `config_cache`, if any.
pub fn recorded_config_source(config_cache: &Path) -> Option<ConfigSource> {
    let text = std::fs::read_to_string(config_source_file(config_cache)).ok()?;
    ConfigSource::parse_record(&text)
}

/// Whether the kernel command line forces a first boot without the ESP marker
/// (`keelson.first_boot=1`; Flatcar: `flatcar.first_boot=1`), for boots with no disk marker to
/// go by (PXE).
pub fn forced_first_boot(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|a| a == "keelson.first_boot=1")
}

fn state_dir(config_cache: &Path) -> &Path {
    config_cache.parent().unwrap_or(Path::new("."))
}

/// The platform named on the kernel command line (`keelson.platform=`, Ignition's
/// `ignition.platform.id=`, or Flatcar's `flatcar.oem.id=` with its old names mapped).
pub fn platform_from_cmdline(cmdline: &str) -> Option<String> {
    let raw = [
        "keelson.platform",
        "ignition.platform.id",
        "flatcar.oem.id",
        "coreos.oem.id",
    ]
    .iter()
    .find_map(|k| cmdline_value(cmdline, k))?;
    Some(
        match raw.as_str() {
            "ec2" => "aws",
            "gce" => "gcp",
            "pxe" => "metal",
            other => other,
        }
        .to_string(),
    )
}

/// Providers to ask, in order: the kernel command line first, then the platform's own.
pub fn providers_for(
    cmdline: &str,
    platform: &str,
    http: &HttpClient,
    fetcher: &Fetcher,
) -> Result<Vec<Box<dyn Provider>>, ApplyError> {
    let mut v: Vec<Box<dyn Provider>> = vec![Box::new(CmdlineProvider {
        cmdline: cmdline.into(),
        fetcher: fetcher.clone(),
    })];
    match platform {
        "qemu" => v.push(Box::new(FwCfgProvider::default())),
        "aws" => v.push(Box::new(AwsProvider::new(http.clone()))),
        "gcp" => v.push(Box::new(GcpProvider::new(http.clone()))),
        "azure" => v.push(Box::new(AzureProvider::new(http.clone()))),
        "openstack" => v.push(Box::new(OpenStackProvider::new(http.clone()))),
        "file" => v.push(Box::new(FileProvider {
            path: std::env::var_os("KEELSON_CONFIG_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| "config.ign".into()),
        })),
        "metal" => {}
        other => {
            return Err(ApplyError::Invalid {
                field: "platform".into(),
                reason: format!("unknown platform {other:?}"),
            });
        }
    }
    Ok(v)
}

/// What a stage needs (`done` uses only `cache`).
pub struct StageContext<'a> {
    /// Providers for the fetch stage.
    pub providers: Vec<Box<dyn Provider + 'a>>,
    /// Fetcher for resources.
    pub fetcher: Fetcher,
    /// Target root for mount and files.
    pub root: PathBuf,
    /// Rendered-config cache shared by the stages.
    pub cache: PathBuf,
    /// Files-stage options; their `kernel_cmdline` is what the fetch stage checks
    /// `kernelArguments` against.
    pub files: FilesOptions,
}

/// The directory the fetch stage caches remote resources in: `resources/` next to the
/// config cache (`/run/keelson/resources`).
pub fn resource_cache(config_cache: &Path) -> PathBuf {
    state_dir(config_cache).join("resources")
}

/// The stamp the fetch stage leaves next to the config cache (`/run/keelson/storage`) when
/// the config partitions, assembles, opens or formats anything (`storage.disks`, `raid`,
/// `luks` or `filesystems`): only then does the initrd switch the kernel's module loader to
/// /sysusr/usr for xfs, md RAID and dm-crypt (`keelson-firstboot-modprobe.service` is
/// conditioned on it).
pub fn storage_stamp(config_cache: &Path) -> PathBuf {
    state_dir(config_cache).join("storage")
}

/// Where the disks stage leaves LUKS keys and UUIDs for the files stage: `luks/` next to
/// the config cache (`/run/keelson/luks`).
pub fn luks_dir(config_cache: &Path) -> PathBuf {
    state_dir(config_cache).join("luks")
}

fn read_cache(cache: &Path) -> Result<keelson_config::Config, ApplyError> {
    let bytes = std::fs::read(cache).map_err(ApplyError::io(
        "reading cached config (run the fetch stage first)",
        cache,
    ))?;
    let (config, _) = keelson_config::parse(&bytes).map_err(|e| ApplyError::Config {
        source_name: cache.display().to_string(),
        error: Box::new(e),
    })?;
    Ok(config)
}

/// Run one stage; returns what it changed and where the config came from.
pub fn run_stage(stage: Stage, ctx: &StageContext<'_>) -> Result<StageOutcome, ApplyError> {
    let _span = tracing::info_span!("stage", %stage).entered();
    let (outcome, config_source) = match stage {
        Stage::Fetch => {
            let (outcome, source) = fetch(ctx)?;
            (outcome, Some(source))
        }
        Stage::Disks => {
            let config = read_cache(&ctx.cache)?;
            engine::disks::wait_for_disks(&config, engine::disks::DEVICE_WAIT)?;
            let opts = engine::disks::DisksOptions {
                fetcher: Some(ctx.fetcher.offline(&resource_cache(&ctx.cache))),
                luks_dir: luks_dir(&ctx.cache),
            };
            let out = engine::disks::plan_disks_with(&config, &opts)?.apply()?;
            (out, recorded_config_source(&ctx.cache))
        }
        Stage::Mount => {
            let target = TargetRoot::new(&ctx.root)?;
            let mounted = engine::mount::mount_filesystems(&read_cache(&ctx.cache)?, &target)?;
            let mut out = Outcome::default();
            for m in mounted {
                out.push(target.display(&m), engine::NodeKind::Directory, "mount");
            }
            (out, recorded_config_source(&ctx.cache))
        }
        Stage::Files => {
            let target = TargetRoot::new(&ctx.root)?;
            let mut config = read_cache(&ctx.cache)?;
            // The LUKS keys and crypttab lines go through the same all-or-nothing plan.
            let luks = engine::crypt::luks_files(&config, &luks_dir(&ctx.cache))?;
            config.storage.files.extend(luks);
            // Offline: everything remote was fetched (and verified) by the fetch stage.
            let fetcher = ctx.fetcher.offline(&resource_cache(&ctx.cache));
            let out = engine::apply_files(&config, &target, &fetcher, &ctx.files)?;
            (out, recorded_config_source(&ctx.cache))
        }
        Stage::Done => {
            let source = recorded_config_source(&ctx.cache);
            (done(ctx, source.as_ref())?, source)
        }
    };
    Ok(StageOutcome {
        stage,
        config_source,
        outcome,
    })
}

fn fetch(ctx: &StageContext<'_>) -> Result<(Outcome, ConfigSource), ApplyError> {
    let providers: Vec<&dyn Provider> = ctx
        .providers
        .iter()
        .map(|p| p.as_ref() as &dyn Provider)
        .collect();
    let fetched = engine::fetch_config(&providers, &ctx.fetcher)?;
    if let Some(cmdline) = &ctx.files.kernel_cmdline {
        engine::kargs::check_kernel_arguments(&fetched.config, cmdline)?;
    }
    let cached =
        engine::cache_resources(&fetched.config, &ctx.fetcher, &resource_cache(&ctx.cache))?;
    let json = serde_json::to_vec_pretty(&fetched.config).map_err(|e| ApplyError::Invalid {
        field: "config".into(),
        reason: format!("serializing rendered config: {e}"),
    })?;
    let source = if fetched.source == "none" {
        ConfigSource::Empty
    } else {
        ConfigSource::Provider(fetched.source.clone())
    };
    crate::passwd::write_atomic(&ctx.cache, &json, 0o600)?;
    let record = config_source_file(&ctx.cache);
    crate::passwd::write_atomic(&record, format!("from {source}\n").as_bytes(), 0o644)?;
    let mut out = Outcome::default();
    out.push(
        ctx.cache.display().to_string(),
        engine::NodeKind::File,
        format!("cache config from {}", fetched.source),
    );
    out.push(
        record.display().to_string(),
        engine::NodeKind::File,
        format!("record config source {source}"),
    );
    let storage = &fetched.config.storage;
    let stamp = storage_stamp(&ctx.cache);
    if !(storage.disks.is_empty()
        && storage.raid.is_empty()
        && storage.luks.is_empty()
        && storage.filesystems.is_empty())
    {
        crate::passwd::write_atomic(&stamp, b"", 0o644)?;
        out.push(
            stamp.display().to_string(),
            engine::NodeKind::File,
            "stamp: the config has disks, raid, luks or filesystems",
        );
    } else {
        match std::fs::remove_file(&stamp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApplyError::io("removing", &stamp)(e)),
        }
    }
    out.extend(cached);
    out.warnings.extend(fetched.warnings);
    Ok((out, source))
}

/// The `done` stage: the earlier stages must have run; Ignition's result file
/// (`/etc/.ignition-result.json`) records this first boot in the real root; the resource cache
/// and the LUKS keys were for the earlier stages only, and /run survives switch-root, so they
/// (and a copy of every download) do not stay in memory.
fn done(ctx: &StageContext<'_>, source: Option<&ConfigSource>) -> Result<Outcome, ApplyError> {
    let cache = ctx.cache.as_path();
    if !cache.is_file() {
        return Err(ApplyError::Invalid {
            field: cache.display().to_string(),
            reason: "missing: the earlier stages did not run".into(),
        });
    }
    let mut out = Outcome::default();
    let user_config_provided = matches!(source, Some(ConfigSource::Provider(_)));
    let record =
        crate::result::record_first_boot(&ctx.root, user_config_provided).map_err(|e| {
            ApplyError::Invalid {
                field: crate::result::RESULT_FILE.to_string(),
                reason: e.to_string(),
            }
        })?;
    if record.previous_report.is_some() {
        // An earlier result file: it is nested as previousReport, and Ignition warns.
        out.warnings
            .push(crate::result::ALREADY_RAN_WARNING.to_string());
    }
    out.push(
        crate::result::RESULT_FILE,
        engine::NodeKind::File,
        "write Ignition result",
    );
    for dir in [resource_cache(cache), luks_dir(cache)] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => out.push(
                dir.display().to_string(),
                engine::NodeKind::Directory,
                "remove",
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApplyError::io("removing", &dir)(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::http::RetryPolicy;

    fn fetcher() -> Fetcher {
        Fetcher::new(HttpClient::new(RetryPolicy::quick(1)).unwrap(), 1 << 20)
    }

    #[test]
    fn platform_names() {
        let cases = [
            ("keelson.platform=qemu", Some("qemu")),
            ("flatcar.oem.id=ec2", Some("aws")),
            ("coreos.oem.id=gce", Some("gcp")),
            ("ignition.platform.id=openstack", Some("openstack")),
            ("quiet", None),
        ];
        for (line, want) in cases {
            assert_eq!(platform_from_cmdline(line).as_deref(), want, "{line}");
        }
        let http = HttpClient::new(RetryPolicy::quick(1)).unwrap();
        assert_eq!(
            providers_for("", "aws", &http, &fetcher())
                .unwrap()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>(),
            vec!["cmdline", "aws"]
        );
        assert!(providers_for("", "mars", &http, &fetcher()).is_err());
        assert!("boot".parse::<Stage>().is_err());
    }

    #[test]
    fn stages_are_listed_once_in_order() {
        for (i, s) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(s.order(), i + 1, "{s}");
            assert_eq!(s.name().parse::<Stage>(), Ok(s));
            assert!(!s.description().is_empty());
        }
        let err = "boot".parse::<Stage>().unwrap_err().to_string();
        assert!(err.contains("\"boot\"") && err.contains("done"), "{err}");
        assert!(Stage::Fetch < Stage::Done);
        assert_eq!(
            ConfigSource::parse_record("from qemu\n"),
            Some(ConfigSource::Provider("qemu".into()))
        );
        assert_eq!(
            ConfigSource::parse_record("from none"),
            Some(ConfigSource::Empty)
        );
        assert_eq!(ConfigSource::parse_record("qemu"), None);
    }

    #[test]
    fn stages_fetch_then_files_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sysroot");
        std::fs::create_dir(&root).unwrap();
        let cfg = dir.path().join("user.ign");
        // A config that merges a second one from a data URL.
        let child = r#"{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/merged","contents":{"source":"data:,from%20child"}}]}}"#;
        let parent = format!(
            r#"{{"ignition":{{"version":"3.6.0","config":{{"merge":[{{"source":"data:,{}"}}]}}}},"storage":{{"files":[{{"path":"/etc/parent","contents":{{"source":"data:,p"}}}}]}}}}"#,
            child
                .replace('%', "%25")
                .replace('"', "%22")
                .replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('[', "%5B")
                .replace(']', "%5D")
        );
        std::fs::write(&cfg, parent).unwrap();
        let ctx = StageContext {
            providers: vec![
                Box::new(CmdlineProvider {
                    cmdline: "quiet".into(),
                    fetcher: fetcher(),
                }),
                Box::new(FileProvider { path: cfg }),
            ],
            fetcher: fetcher(),
            root: root.clone(),
            cache: dir.path().join("run/keelson/config.json"),
            files: FilesOptions {
                today: 1,
                chown: false,
                dry_run: false,
                kernel_cmdline: None,
            },
        };
        let out = run_stage(Stage::Fetch, &ctx).unwrap();
        assert!(
            out.outcome.changes[0].action.contains("from file"),
            "{out:?}"
        );
        assert_eq!(
            out.config_source,
            Some(ConfigSource::Provider("file".into()))
        );
        let out = run_stage(Stage::Files, &ctx).unwrap();
        // Read back from the fetch stage's record, not from a message.
        assert_eq!(
            out.config_source,
            Some(ConfigSource::Provider("file".into()))
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/parent")).unwrap(),
            "p"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/merged")).unwrap(),
            "from child"
        );
    }

    #[test]
    fn no_config_anywhere_is_an_empty_config_and_files_needs_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = StageContext {
            providers: vec![Box::new(FileProvider {
                path: dir.path().join("absent.ign"),
            })],
            fetcher: fetcher(),
            root: dir.path().to_path_buf(),
            cache: dir.path().join("cache.json"),
            files: FilesOptions {
                today: 1,
                chown: false,
                dry_run: false,
                kernel_cmdline: None,
            },
        };
        let err = run_stage(Stage::Files, &ctx).unwrap_err().to_string();
        assert!(
            err.contains("cache.json") && err.contains("fetch stage"),
            "{err}"
        );
        let out = run_stage(Stage::Fetch, &ctx).unwrap();
        assert!(out.outcome.changes[0].action.contains("from none"));
        assert_eq!(out.config_source, Some(ConfigSource::Empty));
        assert!(out.outcome.warnings[0].contains("no provider had a config"));
        let out = run_stage(Stage::Files, &ctx).unwrap();
        assert!(out.outcome.changes.is_empty(), "{out:?}");
        assert_eq!(out.config_source, Some(ConfigSource::Empty));
    }

    #[test]
    fn bad_config_from_a_provider_names_the_provider_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("user.ign");
        std::fs::write(&cfg, "{\"ignition\": {\"version\": \"3.6.0\"},\n \"storage\": {\"files\": [{\"path\": \"x\"}]}}").unwrap();
        let ctx = StageContext {
            providers: vec![Box::new(FileProvider { path: cfg })],
            fetcher: fetcher(),
            root: dir.path().to_path_buf(),
            cache: dir.path().join("cache.json"),
            files: FilesOptions {
                today: 1,
                chown: false,
                dry_run: false,
                kernel_cmdline: None,
            },
        };
        let err = run_stage(Stage::Fetch, &ctx).unwrap_err().to_string();
        assert!(
            err.starts_with("file:") && err.contains("line 2") && err.contains("path not absolute"),
            "{err}"
        );
        assert!(!dir.path().join("cache.json").exists());
    }

    #[test]
    fn replace_discards_the_original_and_loops_are_bounded() {
        use crate::engine::render_config;
        let enc = |s: &str| {
            s.replace('%', "%25")
                .replace('"', "%22")
                .replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('[', "%5B")
                .replace(']', "%5D")
        };
        let replacement =
            r#"{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/replaced"}]}}"#;
        let cfg = format!(
            r#"{{"ignition":{{"version":"3.6.0","config":{{"replace":{{"source":"data:,{}"}}}}}},"storage":{{"files":[{{"path":"/etc/original"}}]}}}}"#,
            enc(replacement)
        );
        let (config, _) = keelson_config::parse(cfg.as_bytes()).unwrap();
        let mut warnings = Vec::new();
        let rendered = render_config(config, &fetcher(), &mut warnings, 0).unwrap();
        let paths: Vec<&str> = rendered
            .storage
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, vec!["/etc/replaced"]);

        // A chain of references deeper than the limit is refused, not followed forever.
        let err = render_config(rendered, &fetcher(), &mut warnings, 11)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested"), "{err}");
    }
}
