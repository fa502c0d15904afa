//! Stages as the initrd will run them (`keelson-provision --stage fetch|disks|mount|files`):
//! `fetch` finds, renders and caches the config; the later stages read that cache, so each
//! stage is a separate process that can fail (and be reported) on its own, as in Ignition.

use std::path::{Path, PathBuf};
use std::str::FromStr;

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

/// One provisioning stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Find the config, follow merge/replace, cache it.
    Fetch,
    /// Partition and format.
    Disks,
    /// Mount filesystems under the target.
    Mount,
    /// Users, files, directories, links, units.
    Files,
}

impl FromStr for Stage {
    type Err = ApplyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fetch" => Ok(Stage::Fetch),
            "disks" => Ok(Stage::Disks),
            "mount" => Ok(Stage::Mount),
            "files" => Ok(Stage::Files),
            other => Err(ApplyError::Invalid {
                field: "--stage".into(),
                reason: format!("unknown stage {other:?} (fetch, disks, mount, files)"),
            }),
        }
    }
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

/// What a stage needs.
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
    config_cache
        .parent()
        .unwrap_or(Path::new("."))
        .join("resources")
}

/// Where the disks stage leaves LUKS keys and UUIDs for the files stage: `luks/` next to
/// the config cache (`/run/keelson/luks`).
pub fn luks_dir(config_cache: &Path) -> PathBuf {
    config_cache.parent().unwrap_or(Path::new(".")).join("luks")
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

/// Run one stage; returns what it changed.
pub fn run_stage(stage: Stage, ctx: &StageContext<'_>) -> Result<Outcome, ApplyError> {
    let _span = tracing::info_span!("stage", ?stage).entered();
    match stage {
        Stage::Fetch => {
            let providers: Vec<&dyn Provider> = ctx
                .providers
                .iter()
                .map(|p| p.as_ref() as &dyn Provider)
                .collect();
            let fetched = engine::fetch_config(&providers, &ctx.fetcher)?;
            if let Some(cmdline) = &ctx.files.kernel_cmdline {
                engine::kargs::check_kernel_arguments(&fetched.config, cmdline)?;
            }
            let cached = engine::cache_resources(
                &fetched.config,
                &ctx.fetcher,
                &resource_cache(&ctx.cache),
            )?;
            let json =
                serde_json::to_vec_pretty(&fetched.config).map_err(|e| ApplyError::Invalid {
                    field: "config".into(),
                    reason: format!("serializing rendered config: {e}"),
                })?;
            crate::passwd::write_atomic(&ctx.cache, &json, 0o600)?;
            let mut out = Outcome::default();
            out.push(
                ctx.cache.display().to_string(),
                engine::NodeKind::File,
                format!("cache config from {}", fetched.source),
            );
            out.extend(cached);
            out.warnings.extend(fetched.warnings);
            Ok(out)
        }
        Stage::Disks => {
            let config = read_cache(&ctx.cache)?;
            engine::disks::wait_for_disks(&config, engine::disks::DEVICE_WAIT)?;
            let opts = engine::disks::DisksOptions {
                fetcher: Some(ctx.fetcher.offline(&resource_cache(&ctx.cache))),
                luks_dir: luks_dir(&ctx.cache),
            };
            engine::disks::plan_disks_with(&config, &opts)?.apply()
        }
        Stage::Mount => {
            let target = TargetRoot::new(&ctx.root)?;
            let mounted = engine::mount::mount_filesystems(&read_cache(&ctx.cache)?, &target)?;
            let mut out = Outcome::default();
            for m in mounted {
                out.push(target.display(&m), engine::NodeKind::Directory, "mount");
            }
            Ok(out)
        }
        Stage::Files => {
            let target = TargetRoot::new(&ctx.root)?;
            let mut config = read_cache(&ctx.cache)?;
            // The LUKS keys and crypttab lines go through the same all-or-nothing plan.
            let luks = engine::crypt::luks_files(&config, &luks_dir(&ctx.cache))?;
            config.storage.files.extend(luks);
            // Offline: everything remote was fetched (and verified) by the fetch stage.
            let fetcher = ctx.fetcher.offline(&resource_cache(&ctx.cache));
            engine::apply_files(&config, &target, &fetcher, &ctx.files)
        }
    }
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
        assert!(out.changes[0].action.contains("from file"), "{out:?}");
        run_stage(Stage::Files, &ctx).unwrap();
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
        assert!(out.changes[0].action.contains("from none"));
        assert!(out.warnings[0].contains("no provider had a config"));
        let out = run_stage(Stage::Files, &ctx).unwrap();
        assert!(out.changes.is_empty(), "{out:?}");
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
