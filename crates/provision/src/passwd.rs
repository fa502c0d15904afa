//! The target's account databases (`/etc/passwd`, `/etc/shadow`, `/etc/group`, and
//! `/etc/gshadow` when present), parsed, edited in memory and written back atomically.
//!
//! The edits reproduce what Ignition gets from `useradd`/`usermod`/`userdel` and
//! `groupadd`/`groupmod`/`groupdel` run with `--root /sysroot`, without running them: we never
//! want a host tool (or its PAM/nscd hooks) near the host's own files.

use std::path::{Path, PathBuf};

use crate::target::{TargetError, TargetRoot};

/// First uid/gid handed out to normal accounts (login.defs `UID_MIN`).
pub const UID_MIN: u32 = 1000;
/// Last uid/gid handed out to normal accounts (login.defs `UID_MAX`).
pub const UID_MAX: u32 = 60000;
/// System accounts are allocated from `SYS_UID_MAX` downwards to `SYS_UID_MIN`.
pub const SYS_UID_MIN: u32 = 101;
/// See [`SYS_UID_MIN`].
pub const SYS_UID_MAX: u32 = 999;
/// Primary group of users created with `noUserGroup` (useradd's `GROUP=100`).
pub const USERS_GID: u32 = 100;
/// Default shell (`/etc/default/useradd` on Flatcar).
pub const DEFAULT_SHELL: &str = "/bin/bash";

/// What went wrong with the account databases.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Path resolution in the target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Reading or writing one of the files failed.
    #[error("{path}: {error}")]
    Io {
        /// Host path of the file.
        path: PathBuf,
        /// I/O error.
        error: std::io::Error,
    },
    /// A line does not have the file's field count.
    #[error("{path}:{line}: expected {expected} ':'-separated fields, found {found}")]
    Malformed {
        /// Host path of the file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A numeric field is not a number.
    #[error("{path}:{line}: field {field} is not a number: {value:?}")]
    BadNumber {
        /// Host path of the file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Field name.
        field: &'static str,
        /// The value found.
        value: String,
    },
    /// A name or field value that cannot go into these files.
    #[error("{what} {value:?}: {reason}")]
    Invalid {
        /// What was being set (`user name`, `gecos of core`, ...).
        what: String,
        /// The value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// uid or gid already used by another account.
    #[error("{kind} {id} requested for {name} is already used by {other}")]
    IdInUse {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id.
        id: u32,
        /// Account being created/changed.
        name: String,
        /// Who has it.
        other: String,
    },
    /// No free id left in the range.
    #[error("no free {kind} left for {name}")]
    NoFreeId {
        /// `uid` or `gid`.
        kind: &'static str,
        /// Account being created.
        name: String,
    },
    /// A group named in the config does not exist in the target.
    #[error("group {group:?} (for user {user}) does not exist in the target's /etc/group")]
    NoSuchGroup {
        /// Group name or id as given.
        group: String,
        /// User it was for.
        user: String,
    },
    /// useradd refuses to create a user whose private group name is taken.
    #[error("group {name} exists already; set primaryGroup to use it, or noUserGroup")]
    UserGroupExists {
        /// The group (and user) name.
        name: String,
    },
    /// groupdel refuses to delete a user's primary group.
    #[error("cannot delete group {group}: it is the primary group of user {user}")]
    GroupInUse {
        /// Group name.
        group: String,
        /// A user whose primary group it is.
        user: String,
    },
}

/// A user as the config describes it (the engine converts config types to this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Requested uid.
    pub uid: Option<u32>,
    /// GECOS field.
    pub gecos: Option<String>,
    /// Home directory.
    pub home_dir: Option<String>,
    /// Do not create the home directory (creation only).
    pub no_create_home: bool,
    /// Primary group, by name or number.
    pub primary_group: Option<String>,
    /// Supplementary groups (replace the current set when non-empty).
    pub groups: Vec<String>,
    /// Do not create a same-named group (creation only).
    pub no_user_group: bool,
    /// Login shell.
    pub shell: Option<String>,
    /// System account (creation only).
    pub system: bool,
    /// Password hash; `Some("")` and new users without a hash get `*` (locked).
    pub password_hash: Option<String>,
    /// `false` deletes the user.
    pub should_exist: bool,
}

/// A group as the config describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// Requested gid.
    pub gid: Option<u32>,
    /// Group password hash.
    pub password_hash: Option<String>,
    /// System group (creation only).
    pub system: bool,
    /// `false` deletes the group.
    pub should_exist: bool,
}

/// What happened to one account, for the plan and the filesystem work that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// Created.
    Added {
        /// Assigned id.
        id: u32,
        /// Home to create (users only, unless noCreateHome).
        create_home: Option<String>,
    },
    /// Changed; names the fields changed.
    Modified {
        /// Field names (`uid`, `shell`, ...).
        fields: Vec<&'static str>,
        /// Home moved from, to (usermod --move-home).
        move_home: Option<(String, String)>,
    },
    /// Removed; for users the home to remove (userdel --remove).
    Deleted {
        /// Home directory to remove.
        remove_home: Option<String>,
    },
    /// Nothing to do.
    Unchanged,
}

#[derive(Debug, Clone)]
enum Line {
    Entry(Vec<String>),
    Raw(String),
}

/// One colon-separated database file.
#[derive(Debug, Clone)]
struct Table {
    host: PathBuf,
    nfields: usize,
    lines: Vec<Line>,
    dirty: bool,
    default_mode: u32,
}

impl Table {
    fn load(
        host: PathBuf,
        nfields: usize,
        default_mode: u32,
    ) -> Result<Option<Table>, PasswdError> {
        let text = match std::fs::read_to_string(&host) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PasswdError::Io {
                    path: host,
                    error: source,
                });
            }
        };
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let t = l.trim();
            // Comments, blank lines and NIS compat entries are kept verbatim.
            if t.is_empty() || t.starts_with('#') || t.starts_with('+') || t.starts_with('-') {
                lines.push(Line::Raw(l.to_string()));
                continue;
            }
            let fields: Vec<String> = l.split(':').map(str::to_string).collect();
            if fields.len() != nfields {
                return Err(PasswdError::Malformed {
                    path: host,
                    line: i + 1,
                    expected: nfields,
                    found: fields.len(),
                });
            }
            lines.push(Line::Entry(fields));
        }
        Ok(Some(Table {
            host,
            nfields,
            lines,
            dirty: false,
            default_mode,
        }))
    }

    fn empty(host: PathBuf, nfields: usize, default_mode: u32) -> Table {
        Table {
            host,
            nfields,
            lines: Vec::new(),
            // Only written if something is added: an empty config creates no files.
            dirty: false,
            default_mode,
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Raw(_) => None,
        })
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Vec<String>> {
        self.lines.iter_mut().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Raw(_) => None,
        })
    }

    fn find(&self, name: &str) -> Option<&Vec<String>> {
        self.entries().find(|f| f[0] == name)
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.entries_mut().find(|f| f[0] == name)
    }

    fn set(&mut self, name: &str, idx: usize, value: &str) -> bool {
        if let Some(f) = self.find_mut(name)
            && f[idx] != value
        {
            f[idx] = value.to_string();
            self.dirty = true;
            return true;
        }
        false
    }

    fn push(&mut self, fields: Vec<String>) {
        debug_assert_eq!(fields.len(), self.nfields);
        self.lines.push(Line::Entry(fields));
        self.dirty = true;
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry(f) if f[0] == name));
        let removed = self.lines.len() != before;
        self.dirty |= removed;
        removed
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Entry(f) => s.push_str(&f.join(":")),
                Line::Raw(r) => s.push_str(r),
            }
            s.push('\n');
        }
        s
    }

    fn write(&self) -> Result<bool, PasswdError> {
        if !self.dirty {
            return Ok(false);
        }
        write_atomic(&self.host, self.render().as_bytes(), self.default_mode)?;
        Ok(true)
    }
}

/// Write `data` to `path` through a temp file in the same directory and a rename, keeping the
/// old file's mode and owner (or `default_mode` for a new file).
pub fn write_atomic(path: &Path, data: &[u8], default_mode: u32) -> Result<(), PasswdError> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let io = |source| PasswdError::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map_or(default_mode, |m| m.mode() & 0o7777);
    let mut tmp = tempfile::Builder::new()
        .prefix(".keelson-")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if let Some(m) = &old {
        // Best effort when not root: ownership only matters in a real provisioning run.
        let _ = std::os::unix::fs::chown(tmp.path(), Some(m.uid()), Some(m.gid()));
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The four account files of a target root.
#[derive(Debug, Clone)]
pub struct AccountDb {
    passwd: Table,
    shadow: Table,
    group: Table,
    gshadow: Option<Table>,
}

fn check_name(what: &str, name: &str) -> Result<(), PasswdError> {
    let bad = |reason| {
        Err(PasswdError::Invalid {
            what: what.into(),
            value: name.into(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 32 {
        return bad("must be 1 to 32 characters");
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return bad("must not start with '-' or be '.' or '..'");
    }
    if name
        .chars()
        .any(|c| c == ':' || c == '/' || c == ',' || c.is_whitespace() || c.is_control())
    {
        return bad("must not contain ':', '/', ',', whitespace or control characters");
    }
    Ok(())
}

fn check_field(what: String, value: &str) -> Result<(), PasswdError> {
    if value.contains(':') || value.contains('\n') {
        return Err(PasswdError::Invalid {
            what,
            value: value.into(),
            reason: "must not contain ':' or a newline",
        });
    }
    Ok(())
}

impl AccountDb {
    /// Load the databases of `target`; missing files start empty (and are created on write).
    pub fn load(target: &TargetRoot) -> Result<AccountDb, PasswdError> {
        let load = |p: &str, n, mode| -> Result<Table, PasswdError> {
            let host = target.resolve(p)?;
            Ok(Table::load(host.clone(), n, mode)?.unwrap_or_else(|| Table::empty(host, n, mode)))
        };
        let passwd = load("/etc/passwd", 7, 0o644)?;
        let shadow = load("/etc/shadow", 9, 0o640)?;
        let group = load("/etc/group", 4, 0o644)?;
        let gshadow = Table::load(target.resolve("/etc/gshadow")?, 4, 0o640)?;
        let db = AccountDb {
            passwd,
            shadow,
            group,
            gshadow,
        };
        db.check_numbers()?;
        Ok(db)
    }

    fn check_numbers(&self) -> Result<(), PasswdError> {
        let check = |t: &Table, idxs: &[(usize, &'static str)]| {
            for (i, l) in t.lines.iter().enumerate() {
                let line = i + 1;
                if let Line::Entry(f) = l {
                    for (i, field) in idxs {
                        if f[*i].parse::<u32>().is_err() {
                            return Err(PasswdError::BadNumber {
                                path: t.host.clone(),
                                line,
                                field,
                                value: f[*i].clone(),
                            });
                        }
                    }
                }
            }
            Ok(())
        };
        check(&self.passwd, &[(2, "uid"), (3, "gid")])?;
        check(&self.group, &[(2, "gid")])
    }

    /// Write back every file that changed; returns the host paths written.
    pub fn write(&self) -> Result<Vec<PathBuf>, PasswdError> {
        let mut written = Vec::new();
        for t in [
            Some(&self.group),
            self.gshadow.as_ref(),
            Some(&self.passwd),
            Some(&self.shadow),
        ]
        .into_iter()
        .flatten()
        {
            if t.write()? {
                written.push(t.host.clone());
            }
        }
        Ok(written)
    }

    /// Host paths of the files that would be written.
    pub fn dirty_files(&self) -> Vec<PathBuf> {
        [
            Some(&self.passwd),
            Some(&self.shadow),
            Some(&self.group),
            self.gshadow.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter(|t| t.dirty)
        .map(|t| t.host.clone())
        .collect()
    }

    /// uid of a user, if it exists.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.passwd.find(name).and_then(|f| f[2].parse().ok())
    }

    /// Primary gid of a user, if it exists.
    pub fn user_gid_of(&self, name: &str) -> Option<u32> {
        self.passwd.find(name).and_then(|f| f[3].parse().ok())
    }

    /// Home directory of a user, if it exists.
    pub fn home_of(&self, name: &str) -> Option<String> {
        self.passwd.find(name).map(|f| f[5].clone())
    }

    /// gid of a group, if it exists.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        self.group.find(name).and_then(|f| f[2].parse().ok())
    }

    /// The passwd line of a user (for tests and messages).
    pub fn passwd_line(&self, name: &str) -> Option<String> {
        self.passwd.find(name).map(|f| f.join(":"))
    }

    /// The shadow line of a user.
    pub fn shadow_line(&self, name: &str) -> Option<String> {
        self.shadow.find(name).map(|f| f.join(":"))
    }

    /// The group line of a group.
    pub fn group_line(&self, name: &str) -> Option<String> {
        self.group.find(name).map(|f| f.join(":"))
    }

    fn uid_owner(&self, uid: u32) -> Option<String> {
        self.passwd
            .entries()
            .find(|f| f[2].parse() == Ok(uid))
            .map(|f| f[0].clone())
    }

    fn gid_owner(&self, gid: u32) -> Option<String> {
        self.group
            .entries()
            .find(|f| f[2].parse() == Ok(gid))
            .map(|f| f[0].clone())
    }

    fn allocate(
        &self,
        kind: &'static str,
        name: &str,
        system: bool,
        prefer: Option<u32>,
    ) -> Result<u32, PasswdError> {
        let used = |id: u32| {
            if kind == "uid" {
                self.uid_owner(id).is_some()
            } else {
                self.gid_owner(id).is_some()
            }
        };
        if let Some(p) = prefer
            && !used(p)
        {
            return Ok(p);
        }
        let found = if system {
            (SYS_UID_MIN..=SYS_UID_MAX).rev().find(|id| !used(*id))
        } else {
            // useradd: one above the highest id in use in the range, else the lowest free.
            let ids: Vec<u32> = if kind == "uid" {
                self.passwd
                    .entries()
                    .filter_map(|f| f[2].parse().ok())
                    .collect()
            } else {
                self.group
                    .entries()
                    .filter_map(|f| f[2].parse().ok())
                    .collect()
            };
            let max = ids
                .into_iter()
                .filter(|id| (UID_MIN..=UID_MAX).contains(id))
                .max();
            match max {
                Some(m) if m < UID_MAX => Some(m + 1),
                _ => (UID_MIN..=UID_MAX).find(|id| !used(*id)),
            }
        };
        found.ok_or_else(|| PasswdError::NoFreeId {
            kind,
            name: name.into(),
        })
    }

    fn resolve_group(&self, group: &str, user: &str) -> Result<(String, u32), PasswdError> {
        if let Some(gid) = self.gid_of(group) {
            return Ok((group.to_string(), gid));
        }
        if let Ok(gid) = group.parse::<u32>()
            && let Some(name) = self.gid_owner(gid)
        {
            return Ok((name, gid));
        }
        Err(PasswdError::NoSuchGroup {
            group: group.into(),
            user: user.into(),
        })
    }

    fn set_supplementary(&mut self, user: &str, groups: &[String]) -> Result<bool, PasswdError> {
        let mut wanted = Vec::new();
        for g in groups {
            wanted.push(self.resolve_group(g, user)?.0);
        }
        let mut changed = false;
        let tables: Vec<&mut Table> = std::iter::once(&mut self.group)
            .chain(self.gshadow.as_mut())
            .collect();
        for t in tables {
            let mut dirty = false;
            for f in t.entries_mut() {
                let mut members: Vec<String> = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                let has = members.iter().any(|m| m == user);
                let want = wanted.contains(&f[0]);
                if has != want {
                    if want {
                        members.push(user.to_string());
                    } else {
                        members.retain(|m| m != user);
                    }
                    f[3] = members.join(",");
                    dirty = true;
                }
            }
            t.dirty |= dirty;
            changed |= dirty;
        }
        Ok(changed)
    }

    fn validate_user_fields(spec: &UserSpec) -> Result<(), PasswdError> {
        check_name("user name", &spec.name)?;
        let n = &spec.name;
        for (what, v) in [
            ("gecos", &spec.gecos),
            ("homeDir", &spec.home_dir),
            ("shell", &spec.shell),
            ("passwordHash", &spec.password_hash),
        ] {
            if let Some(v) = v {
                check_field(format!("{what} of {n}"), v)?;
            }
        }
        if let Some(h) = &spec.home_dir
            && !h.starts_with('/')
        {
            return Err(PasswdError::Invalid {
                what: format!("homeDir of {n}"),
                value: h.clone(),
                reason: "must be absolute",
            });
        }
        Ok(())
    }

    /// Create, change or delete a user as useradd/usermod/userdel would for Ignition.
    /// `today` is the day number stamped into shadow's last-change field.
    pub fn ensure_user(
        &mut self,
        spec: &UserSpec,
        today: u64,
    ) -> Result<AccountChange, PasswdError> {
        Self::validate_user_fields(spec)?;
        let name = spec.name.as_str();
        let exists = self.passwd.find(name).is_some();
        if !spec.should_exist {
            return Ok(self.delete_user(name));
        }
        // Resolve every group first, so a bad name changes nothing.
        for g in spec.groups.iter().chain(spec.primary_group.iter()) {
            self.resolve_group(g, name)?;
        }
        let hash = match spec.password_hash.as_deref() {
            Some("") | None => "*",
            Some(h) => h,
        };
        if !exists {
            let uid = match spec.uid {
                Some(uid) => {
                    if let Some(other) = self.uid_owner(uid) {
                        return Err(PasswdError::IdInUse {
                            kind: "uid",
                            id: uid,
                            name: name.into(),
                            other,
                        });
                    }
                    uid
                }
                None => self.allocate("uid", name, spec.system, None)?,
            };
            let gid = if let Some(g) = &spec.primary_group {
                self.resolve_group(g, name)?.1
            } else if spec.no_user_group {
                USERS_GID
            } else {
                if self.group.find(name).is_some() {
                    return Err(PasswdError::UserGroupExists { name: name.into() });
                }
                let gid = self.allocate("gid", name, spec.system, Some(uid))?;
                self.group.push(vec![
                    name.into(),
                    "x".into(),
                    gid.to_string(),
                    String::new(),
                ]);
                if let Some(gs) = self.gshadow.as_mut() {
                    gs.push(vec![name.into(), "!".into(), String::new(), String::new()]);
                }
                gid
            };
            let home = spec
                .home_dir
                .clone()
                .unwrap_or_else(|| format!("/home/{name}"));
            self.passwd.push(vec![
                name.into(),
                "x".into(),
                uid.to_string(),
                gid.to_string(),
                spec.gecos.clone().unwrap_or_default(),
                home.clone(),
                spec.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.into()),
            ]);
            self.shadow.remove(name);
            self.shadow.push(vec![
                name.into(),
                hash.into(),
                today.to_string(),
                "0".into(),
                "99999".into(),
                "7".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            if !spec.groups.is_empty() {
                self.set_supplementary(name, &spec.groups)?;
            }
            return Ok(AccountChange::Added {
                id: uid,
                create_home: (!spec.no_create_home).then_some(home),
            });
        }
        // usermod: only fields the config sets.
        let mut fields = Vec::new();
        if let Some(uid) = spec.uid {
            if let Some(other) = self.uid_owner(uid).filter(|o| o != name) {
                return Err(PasswdError::IdInUse {
                    kind: "uid",
                    id: uid,
                    name: name.into(),
                    other,
                });
            }
            if self.passwd.set(name, 2, &uid.to_string()) {
                fields.push("uid");
            }
        }
        if let Some(g) = &spec.gecos
            && self.passwd.set(name, 4, g)
        {
            fields.push("gecos");
        }
        if let Some(g) = &spec.primary_group {
            let gid = self.resolve_group(g, name)?.1;
            if self.passwd.set(name, 3, &gid.to_string()) {
                fields.push("primaryGroup");
            }
        }
        if !spec.groups.is_empty() && self.set_supplementary(name, &spec.groups)? {
            fields.push("groups");
        }
        if let Some(s) = &spec.shell
            && self.passwd.set(name, 6, s)
        {
            fields.push("shell");
        }
        if spec.password_hash.is_some() {
            if self.shadow.find(name).is_none() {
                self.shadow.push(vec![
                    name.into(),
                    "*".into(),
                    today.to_string(),
                    "0".into(),
                    "99999".into(),
                    "7".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            if self.shadow.set(name, 1, hash) {
                fields.push("passwordHash");
            }
        }
        let mut move_home = None;
        if let Some(h) = &spec.home_dir {
            let old = self.home_of(name).unwrap_or_default();
            if self.passwd.set(name, 5, h) {
                fields.push("homeDir");
                move_home = Some((old, h.clone()));
            }
        }
        if fields.is_empty() {
            Ok(AccountChange::Unchanged)
        } else {
            Ok(AccountChange::Modified { fields, move_home })
        }
    }

    fn delete_user(&mut self, name: &str) -> AccountChange {
        let Some(entry) = self.passwd.find(name).cloned() else {
            return AccountChange::Unchanged;
        };
        self.passwd.remove(name);
        self.shadow.remove(name);
        self.set_supplementary(name, &[]).ok();
        // userdel also drops the user's private group when nobody else relies on it.
        let gid = entry[3].clone();
        let private = self
            .group
            .find(name)
            .is_some_and(|g| g[2] == gid && g[3].is_empty());
        let others = self.passwd.entries().any(|f| f[3] == gid);
        if private && !others {
            self.group.remove(name);
            if let Some(gs) = self.gshadow.as_mut() {
                gs.remove(name);
            }
        }
        AccountChange::Deleted {
            remove_home: Some(entry[5].clone()),
        }
    }

    /// Create, change or delete a group as groupadd/groupmod/groupdel would for Ignition.
    pub fn ensure_group(&mut self, spec: &GroupSpec) -> Result<AccountChange, PasswdError> {
        let name = spec.name.as_str();
        check_name("group name", name)?;
        if let Some(h) = &spec.password_hash {
            check_field(format!("passwordHash of group {name}"), h)?;
        }
        let exists = self.group.find(name).is_some();
        if !spec.should_exist {
            if !exists {
                return Ok(AccountChange::Unchanged);
            }
            let gid = self
                .group
                .find(name)
                .map(|f| f[2].clone())
                .unwrap_or_default();
            if let Some(user) = self
                .passwd
                .entries()
                .find(|f| f[3] == gid)
                .map(|f| f[0].clone())
            {
                return Err(PasswdError::GroupInUse {
                    group: name.into(),
                    user,
                });
            }
            self.group.remove(name);
            if let Some(gs) = self.gshadow.as_mut() {
                gs.remove(name);
            }
            return Ok(AccountChange::Deleted { remove_home: None });
        }
        let hash_in_group = self.gshadow.is_none();
        if !exists {
            let gid = match spec.gid {
                Some(gid) => {
                    if let Some(other) = self.gid_owner(gid) {
                        return Err(PasswdError::IdInUse {
                            kind: "gid",
                            id: gid,
                            name: name.into(),
                            other,
                        });
                    }
                    gid
                }
                None => self.allocate("gid", name, spec.system, None)?,
            };
            let hash = spec.password_hash.clone().unwrap_or_default();
            let group_pw = if hash_in_group && !hash.is_empty() {
                hash.clone()
            } else {
                "x".into()
            };
            self.group
                .push(vec![name.into(), group_pw, gid.to_string(), String::new()]);
            if let Some(gs) = self.gshadow.as_mut() {
                let h = if hash.is_empty() {
                    "!".to_string()
                } else {
                    hash
                };
                gs.push(vec![name.into(), h, String::new(), String::new()]);
            }
            return Ok(AccountChange::Added {
                id: gid,
                create_home: None,
            });
        }
        let mut fields = Vec::new();
        if let Some(gid) = spec.gid {
            if let Some(other) = self.gid_owner(gid).filter(|o| o != name) {
                return Err(PasswdError::IdInUse {
                    kind: "gid",
                    id: gid,
                    name: name.into(),
                    other,
                });
            }
            let old = self
                .group
                .find(name)
                .map(|f| f[2].clone())
                .unwrap_or_default();
            if self.group.set(name, 2, &gid.to_string()) {
                fields.push("gid");
                // groupmod -g moves users whose primary group it was.
                let new = gid.to_string();
                let mut dirty = false;
                for f in self.passwd.entries_mut() {
                    if f[3] == old {
                        f[3] = new.clone();
                        dirty = true;
                    }
                }
                self.passwd.dirty |= dirty;
            }
        }
        if let Some(h) = &spec.password_hash {
            let changed = match self.gshadow.as_mut() {
                Some(gs) => gs.set(name, 1, h),
                None => self.group.set(name, 1, h),
            };
            if changed {
                fields.push("passwordHash");
            }
        }
        Ok(if fields.is_empty() {
            AccountChange::Unchanged
        } else {
            AccountChange::Modified {
                fields,
                move_home: None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\n# comment\ncore:x:500:500:Core:/home/core:/bin/bash\n";
    const SHADOW: &str = "root:*:1::::::\ncore:*:1:0:99999:7:::\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nwheel:x:10:root\ndocker:x:233:\ncore:x:500:\n";

    fn target(gshadow: bool) -> (tempfile::TempDir, TargetRoot) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(d.path().join("etc/shadow"), SHADOW).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        if gshadow {
            std::fs::write(
                d.path().join("etc/gshadow"),
                "root:*::\nusers:*::\nwheel:*::root\ndocker:!::\ncore:!::\n",
            )
            .unwrap();
        }
        let t = TargetRoot::new(d.path()).unwrap();
        (d, t)
    }

    fn user(name: &str) -> UserSpec {
        UserSpec {
            name: name.into(),
            should_exist: true,
            ..Default::default()
        }
    }

    #[test]
    fn add_user_like_useradd() {
        let (d, t) = target(true);
        let mut db = AccountDb::load(&t).unwrap();
        let change = db.ensure_user(&user("user1"), 20000).unwrap();
        assert_eq!(
            change,
            AccountChange::Added {
                id: 1000,
                create_home: Some("/home/user1".into())
            }
        );
        // The kola passwd test's expectation.
        assert_eq!(
            db.passwd_line("user1").unwrap(),
            "user1:x:1000:1000::/home/user1:/bin/bash"
        );
        assert_eq!(
            db.shadow_line("user1").unwrap(),
            "user1:*:20000:0:99999:7:::"
        );
        assert_eq!(db.group_line("user1").unwrap(), "user1:x:1000:");
        db.write().unwrap();
        let gs = std::fs::read_to_string(d.path().join("etc/gshadow")).unwrap();
        assert!(gs.ends_with("user1:!::\n"), "{gs}");
        let pw = std::fs::read_to_string(d.path().join("etc/passwd")).unwrap();
        assert!(pw.starts_with(PASSWD), "comments and order kept: {pw}");
        // Next user gets the next id.
        let mut db = AccountDb::load(&t).unwrap();
        assert_eq!(
            db.ensure_user(&user("user2"), 1).unwrap(),
            AccountChange::Added {
                id: 1001,
                create_home: Some("/home/user2".into())
            }
        );
    }

    #[test]
    fn add_user_with_every_field() {
        let (_d, t) = target(false);
        let mut db = AccountDb::load(&t).unwrap();
        let spec = UserSpec {
            uid: Some(1234),
            gecos: Some("Test User".into()),
            home_dir: Some("/var/home/t".into()),
            no_create_home: true,
            primary_group: Some("users".into()),
            groups: vec!["wheel".into(), "docker".into()],
            shell: Some("/bin/sh".into()),
            password_hash: Some("$6$salt$hash".into()),
            ..user("t")
        };
        assert_eq!(
            db.ensure_user(&spec, 5).unwrap(),
            AccountChange::Added {
                id: 1234,
                create_home: None
            }
        );
        assert_eq!(
            db.passwd_line("t").unwrap(),
            "t:x:1234:100:Test User:/var/home/t:/bin/sh"
        );
        assert_eq!(
            db.shadow_line("t").unwrap(),
            "t:$6$salt$hash:5:0:99999:7:::"
        );
        assert_eq!(db.group_line("wheel").unwrap(), "wheel:x:10:root,t");
        assert_eq!(db.group_line("docker").unwrap(), "docker:x:233:t");
        assert!(db.group_line("t").is_none());
    }

    #[test]
    fn system_and_no_user_group() {
        let (_d, t) = target(false);
        let mut db = AccountDb::load(&t).unwrap();
        let spec = UserSpec {
            system: true,
            ..user("svc")
        };
        assert_eq!(
            db.ensure_user(&spec, 1).unwrap(),
            AccountChange::Added {
                id: 999,
                create_home: Some("/home/svc".into())
            }
        );
        assert_eq!(db.group_line("svc").unwrap(), "svc:x:999:");
        let spec = UserSpec {
            no_user_group: true,
            ..user("plain")
        };
        db.ensure_user(&spec, 1).unwrap();
        assert_eq!(
            db.passwd_line("plain").unwrap(),
            "plain:x:1000:100::/home/plain:/bin/bash"
        );
    }

    #[test]
    fn modify_existing_user_like_usermod() {
        let (_d, t) = target(false);
        let mut db = AccountDb::load(&t).unwrap();
        let spec = UserSpec {
            password_hash: Some("$y$abc".into()),
            groups: vec!["docker".into()],
            shell: Some("/bin/zsh".into()),
            home_dir: Some("/var/home/core".into()),
            ..user("core")
        };
        match db.ensure_user(&spec, 9).unwrap() {
            AccountChange::Modified { fields, move_home } => {
                assert_eq!(fields, vec!["groups", "shell", "passwordHash", "homeDir"]);
                assert_eq!(
                    move_home,
                    Some(("/home/core".into(), "/var/home/core".into()))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            db.passwd_line("core").unwrap(),
            "core:x:500:500:Core:/var/home/core:/bin/zsh"
        );
        assert_eq!(
            db.shadow_line("core").unwrap(),
            "core:$y$abc:1:0:99999:7:::"
        );
        // Same config again: nothing to do.
        assert_eq!(db.ensure_user(&spec, 9).unwrap(), AccountChange::Unchanged);
        // Keys only: unchanged account.
        assert_eq!(
            db.ensure_user(&user("core"), 9).unwrap(),
            AccountChange::Unchanged
        );
    }

    #[test]
    fn delete_user_and_private_group() {
        let (_d, t) = target(true);
        let mut db = AccountDb::load(&t).unwrap();
        db.ensure_user(
            &UserSpec {
                groups: vec!["wheel".into()],
                ..user("gone")
            },
            1,
        )
        .unwrap();
        let change = db
            .ensure_user(
                &UserSpec {
                    should_exist: false,
                    ..user("gone")
                },
                1,
            )
            .unwrap();
        assert_eq!(
            change,
            AccountChange::Deleted {
                remove_home: Some("/home/gone".into())
            }
        );
        assert!(db.passwd_line("gone").is_none() && db.shadow_line("gone").is_none());
        assert!(db.group_line("gone").is_none());
        assert_eq!(db.group_line("wheel").unwrap(), "wheel:x:10:root");
        assert_eq!(
            db.ensure_user(
                &UserSpec {
                    should_exist: false,
                    ..user("never")
                },
                1
            )
            .unwrap(),
            AccountChange::Unchanged
        );
    }

    #[test]
    fn groups_add_modify_delete() {
        let (_d, t) = target(false);
        let mut db = AccountDb::load(&t).unwrap();
        let g = |name: &str| GroupSpec {
            name: name.into(),
            should_exist: true,
            ..Default::default()
        };
        assert_eq!(
            db.ensure_group(&GroupSpec {
                gid: Some(4000),
                ..g("ops")
            })
            .unwrap(),
            AccountChange::Added {
                id: 4000,
                create_home: None
            }
        );
        assert_eq!(db.group_line("ops").unwrap(), "ops:x:4000:");
        assert_eq!(
            db.ensure_group(&g("dev")).unwrap(),
            AccountChange::Added {
                id: 4001,
                create_home: None
            }
        );
        assert_eq!(
            db.ensure_group(&GroupSpec {
                system: true,
                ..g("sys")
            })
            .unwrap(),
            AccountChange::Added {
                id: 999,
                create_home: None
            }
        );
        // groupmod -g moves the primary gid of its users.
        db.ensure_group(&GroupSpec {
            gid: Some(501),
            ..g("core")
        })
        .unwrap();
        assert_eq!(
            db.passwd_line("core").unwrap(),
            "core:x:500:501:Core:/home/core:/bin/bash"
        );
        let err = db
            .ensure_group(&GroupSpec {
                should_exist: false,
                ..g("core")
            })
            .unwrap_err();
        assert!(matches!(err, PasswdError::GroupInUse { .. }), "{err}");
        assert!(matches!(
            db.ensure_group(&GroupSpec {
                should_exist: false,
                ..g("dev")
            })
            .unwrap(),
            AccountChange::Deleted { .. }
        ));
        assert!(db.group_line("dev").is_none());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let (d, t) = target(false);
        let mut db = AccountDb::load(&t).unwrap();
        let cases: Vec<(UserSpec, &str)> = vec![
            (
                UserSpec {
                    uid: Some(0),
                    ..user("x")
                },
                "uid 0 requested for x is already used by root",
            ),
            (
                UserSpec {
                    primary_group: Some("nope".into()),
                    ..user("x")
                },
                "group \"nope\"",
            ),
            (
                UserSpec {
                    groups: vec!["nope".into()],
                    ..user("x")
                },
                "group \"nope\"",
            ),
            (user("docker"), "group docker exists already"),
            (user("a:b"), "must not contain ':'"),
            (
                UserSpec {
                    gecos: Some("a:b".into()),
                    ..user("x")
                },
                "gecos of x",
            ),
            (
                UserSpec {
                    home_dir: Some("rel".into()),
                    ..user("x")
                },
                "must be absolute",
            ),
            (user(""), "1 to 32"),
        ];
        for (spec, want) in cases {
            let err = db.ensure_user(&spec, 1).unwrap_err().to_string();
            assert!(err.contains(want), "{spec:?}: {err}");
        }
        // Nothing was half-applied by the failures above.
        assert!(db.passwd_line("x").is_none());
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root\n").unwrap();
        let err = AccountDb::load(&t).unwrap_err().to_string();
        assert!(
            err.contains("etc/passwd:1") && err.contains("expected 7"),
            "{err}"
        );
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:zero:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        let err = AccountDb::load(&t).unwrap_err().to_string();
        assert!(err.contains("uid"), "{err}");
    }

    #[test]
    fn empty_target_gets_fresh_files() {
        let d = tempfile::tempdir().unwrap();
        let t = TargetRoot::new(d.path()).unwrap();
        let mut db = AccountDb::load(&t).unwrap();
        db.ensure_user(&user("core"), 1).unwrap();
        db.write().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join("etc/shadow"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/group")).unwrap(),
            "core:x:1000:\n"
        );
    }
}
