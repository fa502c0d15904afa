//! The mount stage: mount `filesystems[].path` under the target root while provisioning
//! (needs root and real devices; the initrd runs it, tests do not).

use std::path::PathBuf;

use keelson_config::Config;

use super::{ApplyError, run_command};
use crate::target::TargetRoot;

/// Mount every filesystem that has a `path`, parents first; returns the mount points in the
/// order to unmount them.
pub fn mount_filesystems(config: &Config, target: &TargetRoot) -> Result<Vec<PathBuf>, ApplyError> {
    let mut fss: Vec<_> = config
        .storage
        .filesystems
        .iter()
        .filter(|f| {
            f.path.is_some() && !matches!(f.format.as_deref(), None | Some("swap") | Some("none"))
        })
        .collect();
    fss.sort_by_key(|f| {
        f.path
            .as_deref()
            .map(|p| p.split('/').filter(|c| !c.is_empty()).count())
    });
    let mut mounted = Vec::new();
    for f in fss {
        let Some(path) = f.path.as_deref() else {
            continue;
        };
        let host = target.resolve_all(path)?;
        std::fs::create_dir_all(&host).map_err(ApplyError::io("creating mount point", &host))?;
        let mut args = vec!["-t".to_string(), f.format.clone().unwrap_or_default()];
        if !f.mount_options.is_empty() {
            args.push("-o".into());
            args.push(f.mount_options.join(","));
        }
        args.push(f.device.clone());
        args.push(host.display().to_string());
        if let Err(e) = run_command("mount", &args) {
            unmount(&mounted);
            return Err(e);
        }
        mounted.insert(0, host);
    }
    Ok(mounted)
}

/// Unmount in the given order, logging failures (the umount stage must not mask the error
/// that made us unmount).
pub fn unmount(mountpoints: &[PathBuf]) {
    for m in mountpoints {
        if let Err(e) = run_command("umount", &[m.display().to_string()]) {
            tracing::warn!(error = %e, "unmounting");
        }
    }
}
