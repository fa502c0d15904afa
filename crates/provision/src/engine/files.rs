//! The files stage: users and groups, then files, directories and links, then systemd units
//! and presets (Ignition's order). [`plan_files`] validates and fetches everything into a
//! staging directory; [`FilesPlan::apply`] then changes the target.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use keelson_config::{Config, NodeGroup, NodeUser, Resource};

use super::{ApplyError, NodeKind, Outcome};
use crate::fetch::{Fetcher, ResourceSpec};
use crate::passwd::{AccountChange, AccountDb, GroupSpec, UserSpec};
use crate::target::TargetRoot;

/// Name of our fragment in `~/.ssh/authorized_keys.d/` (Ignition's is `ignition`).
pub const SSH_FRAGMENT: &str = "keelson";

/// Options of the files stage.
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// Day number (days since 1970-01-01) written to shadow's last-change field.
    pub today: u64,
    /// Change ownership of what we create (needs root; off for unprivileged dry runs/tests).
    pub chown: bool,
    /// Stage fetched data outside the target so planning leaves no trace in it.
    pub dry_run: bool,
    /// The running kernel command line, to check `kernelArguments` against (`None`: skip).
    pub kernel_cmdline: Option<String>,
}

impl FilesOptions {
    /// Options for today, chowning only when running as root.
    pub fn current() -> Self {
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86400)
            .unwrap_or(0);
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        FilesOptions {
            today,
            chown: root,
            dry_run: false,
            kernel_cmdline: std::fs::read_to_string("/proc/cmdline").ok(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Base {
    /// New contents, fetched into the staging dir.
    Staged(PathBuf),
    /// Keep the existing file's contents.
    Keep,
    /// A new empty file.
    Empty,
}

#[derive(Debug)]
pub(crate) enum Op {
    Accounts,
    MkdirParents {
        host: PathBuf,
    },
    Home {
        host: PathBuf,
        uid: u32,
        gid: u32,
        skel: Option<PathBuf>,
    },
    MoveHome {
        from: PathBuf,
        to: PathBuf,
    },
    RemoveTree {
        host: PathBuf,
    },
    WriteFile {
        host: PathBuf,
        base: Base,
        appends: Vec<PathBuf>,
        mode: Option<u32>,
        owner: (u32, u32),
        replace: bool,
    },
    Mkdir {
        host: PathBuf,
        /// `None` keeps an existing directory's mode.
        mode: Option<u32>,
        owner: (u32, u32),
        replace: bool,
    },
    Symlink {
        host: PathBuf,
        target: String,
        owner: Option<(u32, u32)>,
        replace: bool,
    },
    Hardlink {
        host: PathBuf,
        target: PathBuf,
        replace: bool,
    },
    Remove {
        host: PathBuf,
    },
}

/// A validated, fetched files stage, ready to apply.
#[derive(Debug)]
pub struct FilesPlan {
    target: TargetRoot,
    outcome: Outcome,
    accounts: AccountDb,
    ops: Vec<Op>,
    chown: bool,
    staging: tempfile::TempDir,
}

pub(crate) struct Planner<'a> {
    pub(crate) target: &'a TargetRoot,
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) outcome: Outcome,
    pub(crate) ops: Vec<Op>,
    pub(crate) staging: tempfile::TempDir,
    pub(crate) accounts: AccountDb,
    /// Host paths this plan creates (to satisfy hard link targets and parents).
    pub(crate) planned: HashSet<PathBuf>,
    staged: u32,
}

/// Validate the files stage of `config` against `target` and fetch every resource.
pub fn plan_files(
    config: &Config,
    target: &TargetRoot,
    fetcher: &Fetcher,
    opts: &FilesOptions,
) -> Result<FilesPlan, ApplyError> {
    let staging = if opts.dry_run {
        tempfile::Builder::new().prefix("keelson-staging").tempdir()
    } else {
        tempfile::Builder::new()
            .prefix(".keelson-staging")
            .tempdir_in(target.root())
    }
    .map_err(ApplyError::io(
        "creating staging directory in",
        target.root(),
    ))?;
    let mut p = Planner {
        target,
        fetcher,
        outcome: Outcome::default(),
        ops: Vec::new(),
        staging,
        accounts: AccountDb::load(target)?,
        planned: HashSet::new(),
        staged: 0,
    };
    p.plan_accounts(config, opts.today)?;
    p.plan_nodes(config)?;
    p.plan_units(config)?;
    Ok(FilesPlan {
        target: target.clone(),
        outcome: p.outcome,
        accounts: p.accounts,
        ops: p.ops,
        chown: opts.chown,
        staging: p.staging,
    })
}

fn to_u32(v: i64, field: &str) -> Result<u32, ApplyError> {
    u32::try_from(v).map_err(|_| ApplyError::Invalid {
        field: field.into(),
        reason: format!("{v} is not a valid id"),
    })
}

fn mode_bits(v: i64, field: &str) -> Result<u32, ApplyError> {
    match u32::try_from(v) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(ApplyError::Invalid {
            field: field.into(),
            reason: format!("mode {v} is outside 0..=0o7777 (decimal 0..=4095)"),
        }),
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "file"
    } else {
        "special file"
    }
}

fn spec_of(r: &Resource) -> Option<ResourceSpec> {
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

impl Planner<'_> {
    pub(crate) fn show(&self, host: &Path) -> String {
        self.target.display(host)
    }

    /// Write bytes into a new staging file.
    pub(crate) fn stage_bytes(&mut self, bytes: &[u8]) -> Result<PathBuf, ApplyError> {
        self.staged += 1;
        let path = self.staging.path().join(format!("s{}", self.staged));
        std::fs::write(&path, bytes).map_err(ApplyError::io("writing staging file", &path))?;
        Ok(path)
    }

    fn stage_resource(
        &mut self,
        spec: &ResourceSpec,
        what: String,
    ) -> Result<(PathBuf, u64), ApplyError> {
        let tmp = self
            .fetcher
            .fetch_to_temp_in(spec, self.staging.path())
            .map_err(|e| ApplyError::Fetch {
                what,
                error: Box::new(e),
            })?;
        let (_, path) = tmp.keep().map_err(|e| ApplyError::Io {
            op: "keeping staging file",
            path: e.file.path().to_path_buf(),
            error: e.error,
        })?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok((path, size))
    }

    /// Queue creation of the missing ancestors of `host` (0755, root-owned, as Ignition).
    /// An ancestor that is (or will be) something other than a directory is an error now,
    /// not a failed rename halfway through the stage.
    pub(crate) fn parents(&mut self, host: &Path) -> Result<(), ApplyError> {
        let mut missing = Vec::new();
        let mut cur = host.parent();
        while let Some(dir) = cur {
            if !dir.starts_with(self.target.root()) || dir == self.target.root() {
                break;
            }
            let planned_file = self.ops.iter().any(|op| {
                matches!(op, Op::WriteFile { host: h, .. } | Op::Symlink { host: h, .. } | Op::Hardlink { host: h, .. } if h == dir)
            });
            if planned_file {
                return Err(ApplyError::Invalid {
                    field: self.show(host),
                    reason: format!("parent {} is a file in this config", self.show(dir)),
                });
            }
            if self.planned.contains(dir) {
                break;
            }
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => break,
                Ok(m) => {
                    return Err(ApplyError::Invalid {
                        field: self.show(host),
                        reason: format!(
                            "parent {} is a {}, not a directory",
                            self.show(dir),
                            kind_of(&m)
                        ),
                    });
                }
                Err(_) => {}
            }
            missing.push(dir.to_path_buf());
            cur = dir.parent();
        }
        if missing.is_empty() {
            return Ok(());
        }
        for dir in missing.iter().rev() {
            let shown = self.show(dir);
            self.outcome
                .push(shown, NodeKind::Directory, "create parent, mode 0755");
            self.planned.insert(dir.clone());
        }
        self.ops.push(Op::MkdirParents {
            host: host.to_path_buf(),
        });
        Ok(())
    }

    fn owner(
        &self,
        path: &str,
        user: &NodeUser,
        group: &NodeGroup,
    ) -> Result<(u32, u32), ApplyError> {
        let uid = match (&user.id, &user.name) {
            (Some(id), _) => to_u32(*id, &format!("{path}: user.id"))?,
            (None, Some(name)) => {
                self.accounts
                    .uid_of(name)
                    .ok_or_else(|| ApplyError::NoSuchOwner {
                        path: path.into(),
                        kind: "user",
                        name: name.clone(),
                        file: "/etc/passwd",
                    })?
            }
            (None, None) => 0,
        };
        let gid = match (&group.id, &group.name) {
            (Some(id), _) => to_u32(*id, &format!("{path}: group.id"))?,
            (None, Some(name)) => {
                self.accounts
                    .gid_of(name)
                    .ok_or_else(|| ApplyError::NoSuchOwner {
                        path: path.into(),
                        kind: "group",
                        name: name.clone(),
                        file: "/etc/group",
                    })?
            }
            (None, None) => 0,
        };
        Ok((uid, gid))
    }

    fn plan_accounts(&mut self, config: &Config, today: u64) -> Result<(), ApplyError> {
        for g in &config.passwd.groups {
            let spec = GroupSpec {
                name: g.name.clone(),
                gid: g
                    .gid
                    .map(|v| to_u32(v, &format!("passwd.groups {}: gid", g.name)))
                    .transpose()?,
                password_hash: g.password_hash.clone(),
                system: g.system.unwrap_or(false),
                should_exist: g.should_exist.unwrap_or(true),
            };
            let what = match self.accounts.ensure_group(&spec)? {
                AccountChange::Added { id, .. } => format!("add group {} (gid {id})", g.name),
                AccountChange::Modified { fields, .. } => {
                    format!("modify group {}: {}", g.name, fields.join(", "))
                }
                AccountChange::Deleted { .. } => format!("delete group {}", g.name),
                AccountChange::Unchanged => continue,
            };
            self.outcome
                .push("/etc/group", NodeKind::File, format!("modify: {what}"));
        }
        for u in &config.passwd.users {
            let spec = UserSpec {
                name: u.name.clone(),
                uid: u
                    .uid
                    .map(|v| to_u32(v, &format!("passwd.users {}: uid", u.name)))
                    .transpose()?,
                gecos: u.gecos.clone(),
                home_dir: u.home_dir.clone(),
                no_create_home: u.no_create_home.unwrap_or(false),
                primary_group: u.primary_group.clone(),
                groups: u.groups.clone(),
                no_user_group: u.no_user_group.unwrap_or(false),
                shell: u.shell.clone(),
                system: u.system.unwrap_or(false),
                password_hash: u.password_hash.clone(),
                should_exist: u.should_exist.unwrap_or(true),
            };
            let group_before = self.accounts.gid_of(&u.name);
            let change = self.accounts.ensure_user(&spec, today)?;
            match (group_before, self.accounts.gid_of(&u.name)) {
                (None, Some(gid)) => self.outcome.push(
                    "/etc/group",
                    NodeKind::File,
                    format!("modify: add group {} (gid {gid})", u.name),
                ),
                (Some(_), None) => self.outcome.push(
                    "/etc/group",
                    NodeKind::File,
                    format!("modify: delete group {}", u.name),
                ),
                _ => {}
            }
            let what = match &change {
                AccountChange::Added { id, create_home } => {
                    if let Some(home) = create_home {
                        let host = self.target.resolve(home)?;
                        let gid = self.accounts.user_gid_of(&u.name).unwrap_or(0);
                        if std::fs::symlink_metadata(&host).is_err() {
                            self.parents(&host)?;
                            self.outcome.push(
                                self.show(&host),
                                NodeKind::Directory,
                                format!("create home of {}, mode 0700", u.name),
                            );
                            self.planned.insert(host.clone());
                            let skel = self.target.resolve("/etc/skel")?;
                            self.ops.push(Op::Home {
                                host,
                                uid: *id,
                                gid,
                                skel: skel.is_dir().then_some(skel),
                            });
                        }
                    }
                    format!("add user {} (uid {id})", u.name)
                }
                AccountChange::Modified { fields, move_home } => {
                    if let Some((from, to)) = move_home {
                        let (from, to) = (self.target.resolve(from)?, self.target.resolve(to)?);
                        if from.exists() {
                            self.parents(&to)?;
                            self.outcome.push(
                                self.show(&to),
                                NodeKind::Directory,
                                format!("move home of {} from {}", u.name, self.show(&from)),
                            );
                            self.planned.insert(to.clone());
                            self.ops.push(Op::MoveHome { from, to });
                        }
                    }
                    format!("modify user {}: {}", u.name, fields.join(", "))
                }
                AccountChange::Deleted { remove_home } => {
                    if let Some(home) = remove_home {
                        let host = self.target.resolve(home)?;
                        if host != self.target.root() && std::fs::symlink_metadata(&host).is_ok() {
                            self.outcome.push(
                                self.show(&host),
                                NodeKind::Directory,
                                format!("delete home of {}", u.name),
                            );
                            self.ops.push(Op::RemoveTree { host });
                        }
                    }
                    format!("delete user {}", u.name)
                }
                AccountChange::Unchanged => String::new(),
            };
            if !what.is_empty() {
                for f in ["/etc/passwd", "/etc/shadow"] {
                    self.outcome
                        .push(f, NodeKind::File, format!("modify: {what}"));
                }
            }
            if spec.should_exist && !u.ssh_authorized_keys.is_empty() {
                self.plan_ssh_keys(&u.name, &u.ssh_authorized_keys)?;
            }
        }
        // Which of the four files really change (a new private group touches /etc/group).
        for host in self.accounts.dirty_files() {
            let shown = self.show(&host);
            if !self.outcome.changes.iter().any(|c| c.path == shown) {
                self.outcome
                    .push(shown, NodeKind::File, "modify: account database");
            }
        }
        if !self.accounts.dirty_files().is_empty() {
            self.ops.insert(0, Op::Accounts);
        }
        Ok(())
    }

    /// `~/.ssh/authorized_keys.d/keelson` plus `authorized_keys` regenerated from all
    /// fragments, as Flatcar's `update-ssh-keys` does.
    fn plan_ssh_keys(&mut self, user: &str, keys: &[String]) -> Result<(), ApplyError> {
        let home = self
            .accounts
            .home_of(user)
            .unwrap_or_else(|| format!("/home/{user}"));
        let uid = self.accounts.uid_of(user).unwrap_or(0);
        let gid = self.accounts.user_gid_of(user).unwrap_or(0);
        for k in keys {
            if k.contains('\n') {
                return Err(ApplyError::Invalid {
                    field: format!("passwd.users {user}: sshAuthorizedKeys"),
                    reason: "a key must be a single line".into(),
                });
            }
        }
        let ssh = self.target.resolve(&format!("{home}/.ssh"))?;
        let dir = ssh.join("authorized_keys.d");
        let main = ssh.join("authorized_keys");
        let mut fragments: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(ApplyError::io("reading", &dir))?;
            for e in entries.flatten() {
                let p = e.path();
                if p.is_file() {
                    let data = std::fs::read(&p).map_err(ApplyError::io("reading", &p))?;
                    fragments.insert(e.file_name().to_string_lossy().into_owned(), data);
                }
            }
        } else if main.is_file() {
            // Keys added by hand before the fragments existed survive as a fragment.
            let data = std::fs::read(&main).map_err(ApplyError::io("reading", &main))?;
            let staged = self.stage_bytes(&data)?;
            let old = dir.join("old_authorized_keys");
            self.outcome.push(
                self.show(&old),
                NodeKind::File,
                "create from the existing authorized_keys",
            );
            fragments.insert("old_authorized_keys".into(), data);
            self.queue_private(&ssh, &dir, uid, gid)?;
            self.ops.push(Op::WriteFile {
                host: old,
                base: Base::Staged(staged),
                appends: vec![],
                mode: Some(0o600),
                owner: (uid, gid),
                replace: true,
            });
        }
        let mut ours = keys.join("\n");
        ours.push('\n');
        fragments.insert(SSH_FRAGMENT.into(), ours.clone().into_bytes());
        let mut all =
            b"# auto-generated from ~/.ssh/authorized_keys.d; edit the fragments there\n".to_vec();
        for data in fragments.values() {
            all.extend_from_slice(data);
            if !all.ends_with(b"\n") {
                all.push(b'\n');
            }
        }
        self.queue_private(&ssh, &dir, uid, gid)?;
        let frag = dir.join(SSH_FRAGMENT);
        let staged = self.stage_bytes(ours.as_bytes())?;
        self.outcome.push(
            self.show(&frag),
            NodeKind::File,
            format!("write {} ssh key(s) for {user}", keys.len()),
        );
        self.ops.push(Op::WriteFile {
            host: frag,
            base: Base::Staged(staged),
            appends: vec![],
            mode: Some(0o600),
            owner: (uid, gid),
            replace: true,
        });
        let staged = self.stage_bytes(&all)?;
        self.outcome.push(
            self.show(&main),
            NodeKind::File,
            "regenerate from authorized_keys.d",
        );
        self.ops.push(Op::WriteFile {
            host: main,
            base: Base::Staged(staged),
            appends: vec![],
            mode: Some(0o600),
            owner: (uid, gid),
            replace: true,
        });
        Ok(())
    }

    fn queue_private(
        &mut self,
        ssh: &Path,
        dir: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<(), ApplyError> {
        for d in [ssh, dir] {
            if self.planned.contains(d) {
                continue;
            }
            if !d.is_dir() {
                self.parents(d)?;
                self.outcome
                    .push(self.show(d), NodeKind::Directory, "create, mode 0700");
            }
            self.planned.insert(d.to_path_buf());
            self.ops.push(Op::Mkdir {
                host: d.to_path_buf(),
                mode: Some(0o700),
                owner: (uid, gid),
                replace: false,
            });
        }
        Ok(())
    }

    fn plan_nodes(&mut self, config: &Config) -> Result<(), ApplyError> {
        let s = &config.storage;
        let mut seen = HashSet::new();
        for p in s
            .files
            .iter()
            .map(|f| &f.path)
            .chain(s.directories.iter().map(|d| &d.path))
            .chain(s.links.iter().map(|l| &l.path))
        {
            if !seen.insert(p.as_str()) {
                return Err(ApplyError::Invalid {
                    field: p.clone(),
                    reason: "duplicate entry defined".into(),
                });
            }
        }
        // Parents before children, like Ignition: files and directories by depth, then links.
        enum Node<'c> {
            File(&'c keelson_config::File),
            Dir(&'c keelson_config::Directory),
        }
        let depth = |p: &str| p.split('/').filter(|c| !c.is_empty()).count();
        let mut nodes: Vec<(usize, Node)> = s
            .files
            .iter()
            .map(|f| (depth(&f.path), Node::File(f)))
            .chain(s.directories.iter().map(|d| (depth(&d.path), Node::Dir(d))))
            .collect();
        nodes.sort_by_key(|(d, _)| *d);
        for (_, n) in nodes {
            match n {
                Node::File(f) => self.plan_file(f)?,
                Node::Dir(d) => self.plan_dir(d)?,
            }
        }
        let mut links: Vec<&keelson_config::Link> = s.links.iter().collect();
        links.sort_by_key(|l| depth(&l.path));
        for l in links {
            self.plan_link(l)?;
        }
        Ok(())
    }

    fn plan_file(&mut self, f: &keelson_config::File) -> Result<(), ApplyError> {
        let host = self.target.resolve(&f.path)?;
        if host == self.target.root() {
            return Err(ApplyError::Invalid {
                field: f.path.clone(),
                reason: "cannot write the root itself".into(),
            });
        }
        let overwrite = f.overwrite.unwrap_or(false);
        let existing = std::fs::symlink_metadata(&host).ok();
        let owner = self.owner(&f.path, &f.user, &f.group)?;
        let mode = f
            .mode
            .map(|m| mode_bits(m, &format!("{}: mode", f.path)))
            .transpose()?;
        let mut actions = Vec::new();
        let base = match spec_of(&f.contents) {
            Some(spec) => {
                if let Some(m) = &existing
                    && !overwrite
                {
                    return Err(ApplyError::Exists {
                        path: f.path.clone(),
                        found: kind_of(m),
                    });
                }
                let (staged, size) = self.stage_resource(&spec, format!("{}: contents", f.path))?;
                actions.push(format!(
                    "{} {size} bytes",
                    if existing.is_some() {
                        "overwrite"
                    } else {
                        "create"
                    }
                ));
                Base::Staged(staged)
            }
            None => {
                if overwrite {
                    return Err(ApplyError::Invalid {
                        field: format!("{}: overwrite", f.path),
                        reason: "overwrite must be false if source is unspecified".into(),
                    });
                }
                match &existing {
                    Some(m) if m.file_type().is_file() => Base::Keep,
                    Some(m) => {
                        return Err(ApplyError::Exists {
                            path: f.path.clone(),
                            found: kind_of(m),
                        });
                    }
                    None => {
                        actions.push("create empty".into());
                        Base::Empty
                    }
                }
            }
        };
        let mut appends = Vec::new();
        for (i, a) in f.append.iter().enumerate() {
            let Some(spec) = spec_of(a) else {
                return Err(ApplyError::Invalid {
                    field: format!("{}: append[{i}]", f.path),
                    reason: "source is required".into(),
                });
            };
            let (staged, size) = self.stage_resource(&spec, format!("{}: append[{i}]", f.path))?;
            actions.push(format!("append {size} bytes"));
            appends.push(staged);
        }
        // Ignition: 0644 for new contents, the existing mode when nothing is written.
        let mode = match (mode, &base) {
            (Some(m), _) => Some(m),
            (None, Base::Keep) => None,
            (None, _) => Some(0o644),
        };
        if let Some(m) = mode {
            actions.push(format!("mode {m:04o}"));
        }
        if owner != (0, 0) {
            actions.push(format!("owner {}:{}", owner.0, owner.1));
        }
        if matches!(base, Base::Keep) && appends.is_empty() {
            actions.insert(0, "keep contents".into());
        }
        self.parents(&host)?;
        self.outcome
            .push(&f.path, NodeKind::File, actions.join(", "));
        self.planned.insert(host.clone());
        self.ops.push(Op::WriteFile {
            host,
            base,
            appends,
            mode,
            owner,
            replace: overwrite,
        });
        Ok(())
    }

    fn plan_dir(&mut self, d: &keelson_config::Directory) -> Result<(), ApplyError> {
        let host = self.target.resolve(&d.path)?;
        let owner = self.owner(&d.path, &d.user, &d.group)?;
        let mode = d
            .mode
            .map(|m| mode_bits(m, &format!("{}: mode", d.path)))
            .transpose()?;
        let existing = std::fs::symlink_metadata(&host).ok();
        let overwrite = d.overwrite.unwrap_or(false);
        // Ignition: overwrite deletes whatever is there (even a directory); without it an
        // existing directory only gets its permissions set, and keeps its mode when the
        // config gives none.
        let (action, mode) = match &existing {
            Some(m) if m.is_dir() && !overwrite => match mode {
                Some(mode) => (format!("set mode {mode:04o}"), Some(mode)),
                None => ("keep mode".to_string(), None),
            },
            Some(m) if !overwrite => {
                return Err(ApplyError::Exists {
                    path: d.path.clone(),
                    found: kind_of(m),
                });
            }
            Some(m) => {
                let mode = mode.unwrap_or(0o755);
                (
                    format!(
                        "replace {} with empty directory, mode {mode:04o}",
                        kind_of(m)
                    ),
                    Some(mode),
                )
            }
            None => {
                let mode = mode.unwrap_or(0o755);
                (format!("create, mode {mode:04o}"), Some(mode))
            }
        };
        let replace = existing.is_some() && overwrite;
        self.parents(&host)?;
        self.outcome.push(&d.path, NodeKind::Directory, action);
        self.planned.insert(host.clone());
        self.ops.push(Op::Mkdir {
            host,
            mode,
            owner,
            replace,
        });
        Ok(())
    }

    fn plan_link(&mut self, l: &keelson_config::Link) -> Result<(), ApplyError> {
        let host = self.target.resolve(&l.path)?;
        let Some(target) = l.target.clone().filter(|t| !t.is_empty()) else {
            return Err(ApplyError::Invalid {
                field: format!("{}: target", l.path),
                reason: "link target is required".into(),
            });
        };
        let hard = l.hard.unwrap_or(false);
        let overwrite = l.overwrite.unwrap_or(false);
        let existing = std::fs::symlink_metadata(&host).ok();
        if hard {
            let target_host = self.target.resolve_all(&target)?;
            let planned = self.planned.contains(&target_host);
            match std::fs::metadata(&target_host) {
                Ok(m) if m.is_dir() => {
                    return Err(ApplyError::Invalid {
                        field: format!("{}: target", l.path),
                        reason: format!("hard link target {target} is a directory"),
                    });
                }
                Err(_) if !planned => {
                    return Err(ApplyError::Invalid {
                        field: format!("{}: target", l.path),
                        reason: format!("hard link target {target} does not exist in the target"),
                    });
                }
                _ => {}
            }
            // "A matching link exists": the same inode as the target. Nothing to do.
            let same_inode = existing.as_ref().is_some_and(|m| {
                std::fs::metadata(&target_host)
                    .is_ok_and(|t| t.ino() == m.ino() && t.dev() == m.dev())
            });
            if same_inode && !overwrite {
                self.outcome
                    .push(&l.path, NodeKind::Hardlink, format!("keep -> {target}"));
                self.planned.insert(host);
                return Ok(());
            }
            if let Some(m) = &existing
                && !overwrite
            {
                return Err(ApplyError::Exists {
                    path: l.path.clone(),
                    found: kind_of(m),
                });
            }
            if l.user != NodeUser::default() || l.group != NodeGroup::default() {
                self.outcome.warnings.push(format!(
                    "{}: user and group are ignored for hard links",
                    l.path
                ));
            }
            self.parents(&host)?;
            self.outcome.push(
                &l.path,
                NodeKind::Hardlink,
                format!(
                    "{} -> {target}",
                    if existing.is_some() {
                        "replace"
                    } else {
                        "create"
                    }
                ),
            );
            self.planned.insert(host.clone());
            self.ops.push(Op::Hardlink {
                host,
                target: target_host,
                replace: existing.is_some(),
            });
            return Ok(());
        }
        let owner = self.owner(&l.path, &l.user, &l.group)?;
        let action = match &existing {
            Some(m)
                if m.file_type().is_symlink()
                    && std::fs::read_link(&host).ok().as_deref() == Some(Path::new(&target)) =>
            {
                // Already what we want: only ownership may change.
                format!("keep -> {target}")
            }
            Some(m) if !overwrite => {
                return Err(ApplyError::Exists {
                    path: l.path.clone(),
                    found: kind_of(m),
                });
            }
            Some(_) => format!("replace -> {target}"),
            None => format!("create -> {target}"),
        };
        self.parents(&host)?;
        self.outcome.push(&l.path, NodeKind::Symlink, action);
        self.planned.insert(host.clone());
        self.ops.push(Op::Symlink {
            host,
            target,
            owner: Some(owner),
            replace: existing.is_some(),
        });
        Ok(())
    }
}

impl FilesPlan {
    /// What applying this plan changes.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Apply the plan to the target; returns the changes made.
    pub fn apply(self) -> Result<Outcome, ApplyError> {
        let FilesPlan {
            target,
            outcome,
            accounts,
            ops,
            chown,
            staging,
        } = self;
        let ctx = ApplyCtx {
            chown,
            staging: staging.path(),
            root: target.root(),
        };
        for op in ops {
            ctx.run(op, &accounts)?;
        }
        drop(staging);
        Ok(outcome)
    }
}

struct ApplyCtx<'a> {
    chown: bool,
    staging: &'a Path,
    root: &'a Path,
}

impl ApplyCtx<'_> {
    fn set_owner(&self, path: &Path, owner: (u32, u32), follow: bool) -> Result<(), ApplyError> {
        if !self.chown {
            return Ok(());
        }
        let r = if follow {
            std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
        } else {
            std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
        };
        r.map_err(ApplyError::io("changing owner of", path))
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), ApplyError> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(ApplyError::io("changing mode of", path))
    }

    fn remove_any(&self, path: &Path) -> Result<(), ApplyError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                std::fs::remove_dir_all(path).map_err(ApplyError::io("removing", path))
            }
            Ok(_) => std::fs::remove_file(path).map_err(ApplyError::io("removing", path)),
            Err(_) => Ok(()),
        }
    }

    fn mkdirs(&self, dir: &Path) -> Result<(), ApplyError> {
        // Each level separately so every new level gets 0755 regardless of umask.
        let mut todo = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d == self.root || d.exists() {
                break;
            }
            todo.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in todo.iter().rev() {
            std::fs::create_dir(d).map_err(ApplyError::io("creating directory", d))?;
            self.set_mode(d, 0o755)?;
        }
        Ok(())
    }

    /// Put `tmp` at `dest`: rename, or copy and rename when `dest` is on another filesystem.
    fn install(&self, tmp: &Path, dest: &Path) -> Result<(), ApplyError> {
        match std::fs::rename(tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(18) => {
                let dir = dest.parent().unwrap_or(self.root);
                let mut sibling = tempfile::Builder::new()
                    .prefix(".keelson-")
                    .tempfile_in(dir)
                    .map_err(ApplyError::io("creating temp file in", dir))?;
                let mut src = std::fs::File::open(tmp).map_err(ApplyError::io("opening", tmp))?;
                std::io::copy(&mut src, sibling.as_file_mut())
                    .map_err(ApplyError::io("copying to", sibling.path()))?;
                let meta = std::fs::metadata(tmp).map_err(ApplyError::io("reading", tmp))?;
                std::fs::set_permissions(sibling.path(), meta.permissions())
                    .map_err(ApplyError::io("changing mode of", sibling.path()))?;
                if self.chown {
                    std::os::unix::fs::chown(sibling.path(), Some(meta.uid()), Some(meta.gid()))
                        .map_err(ApplyError::io("changing owner of", sibling.path()))?;
                }
                sibling.persist(dest).map_err(|e| ApplyError::Io {
                    op: "renaming into place",
                    path: dest.to_path_buf(),
                    error: e.error,
                })?;
                Ok(())
            }
            Err(e) => Err(ApplyError::Io {
                op: "renaming into place",
                path: dest.to_path_buf(),
                error: e,
            }),
        }
    }

    fn run(&self, op: Op, accounts: &AccountDb) -> Result<(), ApplyError> {
        match op {
            Op::Accounts => {
                accounts.write()?;
            }
            Op::MkdirParents { host } => {
                if let Some(parent) = host.parent() {
                    self.mkdirs(parent)?;
                }
            }
            Op::Home {
                host,
                uid,
                gid,
                skel,
            } => {
                if let Some(parent) = host.parent() {
                    self.mkdirs(parent)?;
                }
                std::fs::create_dir(&host).map_err(ApplyError::io("creating home", &host))?;
                if let Some(skel) = skel {
                    copy_tree(&skel, &host, (uid, gid), self)?;
                }
                self.set_owner(&host, (uid, gid), false)?;
                self.set_mode(&host, 0o700)?;
            }
            Op::MoveHome { from, to } => {
                if let Some(parent) = to.parent() {
                    self.mkdirs(parent)?;
                }
                std::fs::rename(&from, &to).map_err(ApplyError::io("moving home to", &to))?;
            }
            Op::RemoveTree { host } | Op::Remove { host } => self.remove_any(&host)?,
            Op::WriteFile {
                host,
                base,
                appends,
                mode,
                owner,
                replace,
            } => {
                let tmp = match base {
                    Base::Staged(p) => p,
                    Base::Keep if appends.is_empty() => {
                        self.set_owner(&host, owner, true)?;
                        if let Some(m) = mode {
                            self.set_mode(&host, m)?;
                        }
                        return Ok(());
                    }
                    Base::Keep => {
                        let tmp = self.staging.join(format!(
                            "keep-{}",
                            host.file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ));
                        std::fs::copy(&host, &tmp).map_err(ApplyError::io("copying", &host))?;
                        tmp
                    }
                    Base::Empty => {
                        let tmp = self.staging.join(format!(
                            "empty-{}",
                            host.file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ));
                        std::fs::write(&tmp, b"").map_err(ApplyError::io("creating", &tmp))?;
                        tmp
                    }
                };
                if !appends.is_empty() {
                    let mut out = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&tmp)
                        .map_err(ApplyError::io("opening", &tmp))?;
                    for a in &appends {
                        let mut src =
                            std::fs::File::open(a).map_err(ApplyError::io("opening", a))?;
                        std::io::copy(&mut src, &mut out)
                            .map_err(ApplyError::io("appending to", &tmp))?;
                    }
                    out.flush().map_err(ApplyError::io("writing", &tmp))?;
                }
                let mode = match mode {
                    Some(m) => m,
                    None => std::fs::metadata(&host)
                        .map(|m| m.mode() & 0o7777)
                        .unwrap_or(0o644),
                };
                // chown first: it clears setuid/setgid, which the mode then sets.
                self.set_owner(&tmp, owner, true)?;
                self.set_mode(&tmp, mode)?;
                if replace && std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                    self.remove_any(&host)?;
                }
                self.install(&tmp, &host)?;
            }
            Op::Mkdir {
                host,
                mode,
                owner,
                replace,
            } => {
                if replace {
                    self.remove_any(&host)?;
                }
                if !host.is_dir() {
                    if let Some(parent) = host.parent() {
                        self.mkdirs(parent)?;
                    }
                    std::fs::create_dir(&host)
                        .map_err(ApplyError::io("creating directory", &host))?;
                }
                self.set_owner(&host, owner, true)?;
                if let Some(mode) = mode {
                    self.set_mode(&host, mode)?;
                }
            }
            Op::Symlink {
                host,
                target,
                owner,
                replace,
            } => {
                let same = std::fs::read_link(&host).ok().as_deref() == Some(Path::new(&target));
                if !same {
                    if replace {
                        self.remove_any(&host)?;
                    }
                    std::os::unix::fs::symlink(&target, &host)
                        .map_err(ApplyError::io("creating symlink", &host))?;
                }
                if let Some(o) = owner {
                    self.set_owner(&host, o, false)?;
                }
            }
            Op::Hardlink {
                host,
                target,
                replace,
            } => {
                if replace {
                    self.remove_any(&host)?;
                }
                std::fs::hard_link(&target, &host)
                    .map_err(ApplyError::io("creating hard link", &host))?;
            }
        }
        Ok(())
    }
}

/// Copy `/etc/skel` into a new home (files, directories and symlinks), owned by the user.
fn copy_tree(
    from: &Path,
    to: &Path,
    owner: (u32, u32),
    ctx: &ApplyCtx<'_>,
) -> Result<(), ApplyError> {
    let entries = std::fs::read_dir(from).map_err(ApplyError::io("reading", from))?;
    for e in entries {
        let e = e.map_err(ApplyError::io("reading", from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let m = std::fs::symlink_metadata(&src).map_err(ApplyError::io("reading", &src))?;
        if m.is_dir() {
            std::fs::create_dir(&dst).map_err(ApplyError::io("creating", &dst))?;
            copy_tree(&src, &dst, owner, ctx)?;
            ctx.set_mode(&dst, m.mode() & 0o7777)?;
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&src).map_err(ApplyError::io("reading", &src))?;
            std::os::unix::fs::symlink(t, &dst).map_err(ApplyError::io("creating", &dst))?;
        } else if m.is_file() {
            std::fs::copy(&src, &dst).map_err(ApplyError::io("copying to", &dst))?;
        } else {
            continue;
        }
        ctx.set_owner(&dst, owner, false)?;
    }
    Ok(())
}
