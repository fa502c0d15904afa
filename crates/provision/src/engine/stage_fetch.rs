//! The fetch stage: ask providers in order for a config, parse it, and render it (follow
//! `ignition.config.replace` and `merge`, fetching each referenced config).

use keelson_config::Config;

use super::ApplyError;
use crate::fetch::{Fetcher, ResourceSpec};
use crate::http::{HttpSettings, RetryPolicy};
use crate::providers::Provider;

/// How deep `replace`/`merge` references may nest before we call it a loop.
const MAX_DEPTH: u32 = 10;

/// A rendered config and where it came from.
#[derive(Debug, Clone)]
pub struct FetchedConfig {
    /// The config with every merge/replace applied.
    pub config: Config,
    /// The provider that had it (`none` when no provider had a config).
    pub source: String,
    /// Non-fatal report entries, as text.
    pub warnings: Vec<String>,
}

/// Ask each provider in turn; the first config found wins. No config anywhere is an empty
/// config (a machine with no user data still boots), as in Ignition.
pub fn fetch_config(
    providers: &[&dyn Provider],
    fetcher: &Fetcher,
) -> Result<FetchedConfig, ApplyError> {
    for p in providers {
        let raw = p.fetch_config().map_err(|e| ApplyError::Invalid {
            field: format!("provider {}", p.name()),
            reason: e.to_string(),
        })?;
        let Some(raw) = raw else { continue };
        let mut warnings = Vec::new();
        let config = parse(&raw, p.name(), &mut warnings)?;
        let fetcher = fetcher_for(&config, fetcher)?;
        let config = render_config(config, &fetcher, &mut warnings, 0)?;
        return Ok(FetchedConfig {
            config,
            source: p.name().into(),
            warnings,
        });
    }
    Ok(FetchedConfig {
        config: Config {
            ignition: keelson_config::Ignition {
                version: "3.6.0".into(),
                ..Default::default()
            },
            ..Default::default()
        },
        source: "none".into(),
        warnings: vec!["no provider had a config: applying an empty one".into()],
    })
}

fn parse(raw: &[u8], source: &str, warnings: &mut Vec<String>) -> Result<Config, ApplyError> {
    let (config, report) = keelson_config::parse(raw).map_err(|e| ApplyError::Config {
        source_name: source.into(),
        error: Box::new(e),
    })?;
    if !report.is_empty() {
        warnings.push(format!("{source}: {report}"));
    }
    Ok(config)
}

pub(crate) fn spec(r: &keelson_config::Resource) -> Option<ResourceSpec> {
    r.source.as_ref().map(|s| ResourceSpec {
        // An empty source is a valid config (Ignition's validateURLNilOK) and fetches
        // nothing, as Ignition's fetcher does for an empty URL: empty contents.
        source: if s.is_empty() {
            "data:,".into()
        } else {
            s.clone()
        },
        compression: r.compression.clone().filter(|c| !c.is_empty()),
        headers: r
            .http_headers
            .iter()
            .filter_map(|h| h.value.as_ref().map(|v| (h.name.clone(), v.clone())))
            .collect(),
        verification: r.verification.hash.clone(),
    })
}

/// Follow `replace` (the fetched config replaces this one) and `merge` (each fetched config
/// is merged on top, depth first, in order).
pub fn render_config(
    config: Config,
    fetcher: &Fetcher,
    warnings: &mut Vec<String>,
    depth: u32,
) -> Result<Config, ApplyError> {
    if depth > MAX_DEPTH {
        return Err(ApplyError::Invalid {
            field: "ignition.config".into(),
            reason: format!("more than {MAX_DEPTH} nested merge/replace references"),
        });
    }
    if let Some(s) = spec(&config.ignition.config.replace) {
        let what = format!(
            "ignition.config.replace {}",
            crate::dataurl::url_head(&s.source)
        );
        let raw = fetcher.fetch_bytes(&s).map_err(|e| ApplyError::Fetch {
            what: what.clone(),
            error: Box::new(e),
        })?;
        let child = parse(&raw, &what, warnings)?;
        return render_config(child, fetcher, warnings, depth + 1);
    }
    let merges = config.ignition.config.merge.clone();
    let mut out = config;
    out.ignition.config.merge.clear();
    for (i, r) in merges.iter().enumerate() {
        let Some(s) = spec(r) else { continue };
        let what = format!(
            "ignition.config.merge[{i}] {}",
            crate::dataurl::url_head(&s.source)
        );
        let raw = fetcher.fetch_bytes(&s).map_err(|e| ApplyError::Fetch {
            what: what.clone(),
            error: Box::new(e),
        })?;
        let child = parse(&raw, &what, warnings)?;
        let child = render_config(child, fetcher, warnings, depth + 1)?;
        out = keelson_config::merge(&out, &child);
        out.ignition.config.merge.clear();
    }
    Ok(out)
}

/// A fetcher honouring the config's `ignition.timeouts`, `ignition.proxy` and
/// `ignition.security.tls.certificateAuthorities` (the CA bundles are fetched with `base`).
pub fn fetcher_for(config: &Config, base: &Fetcher) -> Result<Fetcher, ApplyError> {
    let ign = &config.ignition;
    let mut settings = HttpSettings {
        http_proxy: ign.proxy.http_proxy.clone().filter(|s| !s.is_empty()),
        https_proxy: ign.proxy.https_proxy.clone().filter(|s| !s.is_empty()),
        no_proxy: ign.proxy.no_proxy.clone(),
        ca_bundles: Vec::new(),
    };
    for (i, ca) in ign.security.tls.certificate_authorities.iter().enumerate() {
        let Some(s) = spec(ca) else { continue };
        let what = format!("ignition.security.tls.certificateAuthorities[{i}]");
        let pem = base.fetch_bytes(&s).map_err(|e| ApplyError::Fetch {
            what,
            error: Box::new(e),
        })?;
        settings.ca_bundles.push(pem);
    }
    let policy =
        RetryPolicy::from_timeouts(ign.timeouts.http_response_headers, ign.timeouts.http_total);
    if settings == HttpSettings::default()
        && ign.timeouts.http_response_headers.is_none()
        && ign.timeouts.http_total.is_none()
    {
        return Ok(base.clone());
    }
    let http = base
        .http()
        .reconfigured(policy, &settings)
        .map_err(|e| ApplyError::Invalid {
            field: "ignition".into(),
            reason: e.to_string(),
        })?;
    Ok(Fetcher::new(http, base.max_size()))
}

/// Every resource the later stages will read, with the config field it comes from:
/// `storage.files[i].contents`, `storage.files[i].append[j]`, `storage.luks[i].keyFile`.
pub fn stage_resources(config: &Config) -> Vec<(String, ResourceSpec)> {
    let mut out = Vec::new();
    for (i, f) in config.storage.files.iter().enumerate() {
        if let Some(s) = spec(&f.contents) {
            out.push((format!("$.storage.files[{i}].contents ({})", f.path), s));
        }
        for (j, a) in f.append.iter().enumerate() {
            if let Some(s) = spec(a) {
                out.push((format!("$.storage.files[{i}].append[{j}] ({})", f.path), s));
            }
        }
    }
    for (i, l) in config.storage.luks.iter().enumerate() {
        if let Some(s) = spec(&l.key_file) {
            out.push((format!("$.storage.luks[{i}].keyFile ({})", l.name), s));
        }
    }
    out
}

/// The fetch stage's second half: fetch and verify every resource of `config` into `dir`
/// (created 0700: key files land there), so the disks, mount and files stages never touch
/// the network and a bad URL or hash fails the boot before any disk is changed.
pub fn cache_resources(
    config: &Config,
    fetcher: &Fetcher,
    dir: &std::path::Path,
) -> Result<super::Outcome, ApplyError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(ApplyError::io("creating resource cache", dir))?;
    let fetcher = fetcher_for(config, fetcher)?;
    let mut out = super::Outcome::default();
    for (what, s) in stage_resources(config) {
        let size = fetcher.cache_into(&s, dir).map_err(|e| ApplyError::Fetch {
            what: what.clone(),
            error: Box::new(e),
        })?;
        if Fetcher::needs_network(&s) {
            out.push(
                dir.join(crate::fetch::cache_key(&s)).display().to_string(),
                super::NodeKind::File,
                format!("cache {size} bytes for {what}"),
            );
        }
    }
    Ok(out)
}
