//! Semantic validation of a typed config with Ignition's stable messages.

use crate::report::{Kind, Pos, Report};
use crate::schema::PosMap;
use std::collections::{HashMap, HashSet};

use crate::v3_6::{
    Config, Directory, Disk, File, Filesystem, HTTPHeader, Ignition, Link, Luks, NodeGroup,
    NodeUser, Partition, Passwd, Raid, Resource, Storage, Systemd, Unit,
};

/// Validation context: positions by path, declared minor version, and the report.
pub struct Ctx<'a> {
    positions: &'a PosMap,
    /// Declared spec minor version (3.N).
    pub minor: u32,
    /// Entries found so far.
    pub report: Report,
}

impl<'a> Ctx<'a> {
    /// New context for a config declared as 3.`minor`.
    pub fn new(positions: &'a PosMap, minor: u32) -> Self {
        Ctx {
            positions,
            minor,
            report: Report::default(),
        }
    }

    /// Position of `path`, or of its nearest ancestor that exists in the source.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// Add an error at `path`.
    pub fn error(&mut self, path: &str, msg: impl Into<String>) {
        let pos = self.pos(path);
        self.report.add(Kind::Error, path, pos, msg);
    }

    /// Add a warning at `path`.
    pub fn warn(&mut self, path: &str, msg: impl Into<String>) {
        let pos = self.pos(path);
        self.report.add(Kind::Warning, path, pos, msg);
    }
}

/// Stable messages (Ignition's `config/shared/errors`), one constant each so tests and
/// callers can match on them.
pub mod msg {
    /// Duplicate key in a keyed list.
    pub const DUPLICATE: &str = "duplicate entry defined";
    /// `compression` is not "" or "gzip".
    pub const COMPRESSION_INVALID: &str = "invalid compression method";
    /// File below a link of the same config.
    pub const FILE_USED_SYMLINK: &str = "file path includes link in config";
    /// Directory below a link of the same config.
    pub const DIR_USED_SYMLINK: &str = "directory path includes link in config";
    /// Link below a link of the same config.
    pub const LINK_USED_SYMLINK: &str = "link path includes link in config";
    /// Hard link onto a directory of the same config.
    pub const HARD_LINK_TO_DIR: &str = "hard link target is a directory";
    /// Owner on a hard link.
    pub const HARD_LINK_OWNER: &str = "user/group ignored for hard link";
    /// Link without target.
    pub const LINK_TARGET_REQUIRED: &str = "link target is required";
    /// Disk without device.
    pub const DISK_DEVICE_REQUIRED: &str = "disk device is required";
    /// Two partitions with one number.
    pub const PARTITION_NUMBERS_COLLIDE: &str = "partition numbers collide";
    /// Two partitions overlapping.
    pub const PARTITIONS_OVERLAP: &str = "partitions overlap";
    /// overwrite without a source.
    pub const OVERWRITE_NIL_SOURCE: &str = "overwrite must be false if source is unspecified";
    /// verification without a source.
    pub const VERIFICATION_NIL_SOURCE: &str =
        "source must be specified if verification is specified";
    /// Unknown filesystem format.
    pub const FS_INVALID_FORMAT: &str = "invalid filesystem format";
    /// Filesystem fields without format.
    pub const FORMAT_NIL_WITH_OTHERS: &str = "format cannot be empty when path, label, uuid, wipeFilesystem, options, or mountOptions is specified";
    /// Mode out of range.
    pub const ILLEGAL_MODE: &str = "illegal file mode";
    /// Special mode bits before 3.6.
    pub const SPECIAL_MODE_BITS: &str = "setuid/setgid/sticky bits are not supported or functional in spec versions older than 3.6.0";
    /// Owner by id and name.
    pub const BOTH_ID_AND_NAME: &str = "cannot set both id and name";
    /// Partition label length.
    pub const PART_LABEL_TOO_LONG: &str = "partition labels may not exceed 36 characters";
    /// GUID format.
    pub const GUID_FORM: &str = "doesn't match the form \"01234567-89AB-CDEF-EDCB-A98765432101\"";
    /// ':' in a partition label.
    pub const LABEL_COLON: &str = "partition label will be truncated to text before the colon";
    /// Empty path.
    pub const NO_PATH: &str = "path not specified";
    /// Relative path.
    pub const PATH_RELATIVE: &str = "path not absolute";
    /// Path with `//`, `.`, `..` or a trailing `/`.
    pub const DIRTY_PATH: &str = "path is not fully simplified";
    /// Spares on linear/raid0.
    pub const SPARES_UNSUPPORTED: &str = "spares unsupported for linear and raid0 arrays";
    /// Unknown RAID level.
    pub const RAID_LEVEL: &str = "unrecognized raid level";
    /// shouldExist false plus other partition fields.
    pub const SHOULD_NOT_EXIST_WITH_OTHERS: &str =
        "shouldExist specified false with other options also specified";
    /// Partition identified by neither number nor label.
    pub const NEED_LABEL_OR_NUMBER: &str = "a partition number >= 1 or a label must be specified";
    /// Same partition label twice on a disk.
    pub const DUPLICATE_LABELS: &str = "cannot use the same partition label twice";
    /// Proxy URL that is not http(s).
    pub const INVALID_PROXY: &str = "proxies must be http(s)";
    /// http:// proxy for https.
    pub const INSECURE_PROXY: &str = "insecure plaintext HTTP proxy specified for HTTPS resources";
    /// Unit suffix unknown.
    pub const SYSTEMD_EXT: &str = "invalid systemd unit extension";
    /// Drop-in not ending in .conf.
    pub const DROPIN_EXT: &str = "invalid systemd drop-in extension";
    /// Unit name without any suffix.
    pub const NO_SYSTEMD_EXT: &str = "no systemd unit extension";
    /// Bad template instance.
    pub const INSTANTIATED_UNIT: &str = "invalid systemd instantiated unit";
    /// Resource without source where one is required.
    pub const SOURCE_REQUIRED: &str = "source is required";
    /// URL scheme not allowed in this version.
    pub const INVALID_SCHEME: &str = "invalid url scheme";
    /// URL not parseable.
    pub const INVALID_URL: &str = "unable to parse url";
    /// Header without name.
    pub const EMPTY_HEADER_NAME: &str = "HTTP header name can't be empty";
    /// Headers on a non-http source.
    pub const HEADERS_SCHEME: &str = "cannot use HTTP headers with this source scheme";
    /// Hash without `-`.
    pub const HASH_MALFORMED: &str = "malformed hash specifier";
    /// Hash digest length/hex.
    pub const HASH_WRONG_SIZE: &str = "incorrect size for hash sum";
    /// Hash function unknown.
    pub const HASH_UNRECOGNIZED: &str = "unrecognized hash function";
    /// Required name missing.
    pub const NAME_REQUIRED: &str = "name is required";
    /// Required device missing.
    pub const DEVICE_REQUIRED: &str = "device is required";
    /// RAID without level.
    pub const RAID_LEVEL_REQUIRED: &str = "raid level is required";
    /// RAID without devices.
    pub const RAID_DEVICES_REQUIRED: &str = "raid devices required";
    /// LUKS name with '/'.
    pub const LUKS_NAME_SLASH: &str = "device names cannot contain slashes";
    /// LUKS label length.
    pub const LUKS_LABEL_TOO_LONG: &str = "luks device labels cannot be longer than 47 characters";
    /// Clevis custom plus others.
    pub const CLEVIS_CUSTOM_WITH_OTHERS: &str =
        "cannot use custom clevis config with tpm2, tang, or threshold";
    /// Clevis custom pin missing.
    pub const CLEVIS_PIN_REQUIRED: &str = "missing required custom clevis pin";
    /// Clevis custom config missing.
    pub const CLEVIS_CONFIG_REQUIRED: &str = "missing required custom clevis config";
    /// Tang advertisement that is not JSON.
    pub const TANG_ADVERTISEMENT: &str = "advertisement is not valid JSON";
    /// Filesystem on a device that the disks section partitions.
    pub const PARTITIONS_OVERWRITTEN: &str = "filesystem overwrites partitioned device";
    /// Filesystem on a disk whose table is wiped.
    pub const FS_IMPLICIT_WIPE: &str =
        "device matches disk with wipeTable enabled; filesystem will be wiped";
    /// A partition to delete while another takes "the largest free block".
    pub const ZEROES_WITH_SHOULD_NOT_EXIST: &str =
        "shouldExist is false for a partition and other partition(s) has start or size 0";
    /// Malformed `arn:` S3 URL.
    pub const INVALID_S3_ARN: &str = "invalid S3 ARN format";
    /// Unknown clevis pin.
    pub const CLEVIS_PIN: &str = "unsupported clevis pin";
    /// Tang without thumbprint.
    pub const TANG_THUMBPRINT: &str = "thumbprint is required";
    /// CEX with clevis.
    pub const CEX_WITH_CLEVIS: &str = "cannot use cex with clevis";
    /// CEX with key file.
    pub const CEX_WITH_KEYFILE: &str = "cannot use key file with cex";
    /// File/dir/link inside a unit directory the systemd section also writes.
    pub const PATH_CONFLICTS_SYSTEMD: &str = "path conflicts with systemd unit or dropin";
    /// Negative numbers where the spec wants non-negative.
    pub const NEGATIVE: &str = "value must not be negative";
    /// Kernel argument in both lists.
    pub const KARG_BOTH: &str = "kernel argument is in both shouldExist and shouldNotExist";
}

/// Ignition's `unit "X" is enabled, but has no install section so enable does nothing`.
pub fn no_install_section(name: &str) -> String {
    format!("unit {name:?} is enabled, but has no install section so enable does nothing")
}

/// Validate a whole config.
pub fn validate(cfg: &Config, ctx: &mut Ctx<'_>) {
    ignition(&cfg.ignition, ctx);
    storage(&cfg.storage, ctx);
    systemd(&cfg.systemd, ctx);
    passwd(&cfg.passwd, ctx);
    let mut seen = HashSet::new();
    for (list, items) in [
        ("shouldExist", &cfg.kernel_arguments.should_exist),
        ("shouldNotExist", &cfg.kernel_arguments.should_not_exist),
    ] {
        for (i, a) in items.iter().enumerate() {
            let p = format!("$.kernelArguments.{list}.{i}");
            if !seen.insert(a.as_str()) {
                let both = cfg.kernel_arguments.should_exist.contains(a)
                    && cfg.kernel_arguments.should_not_exist.contains(a);
                ctx.error(&p, if both { msg::KARG_BOTH } else { msg::DUPLICATE });
            }
        }
    }
    path_conflicts_systemd(cfg, ctx);
}

fn ignition(ign: &Ignition, ctx: &mut Ctx<'_>) {
    for (i, r) in ign.config.merge.iter().enumerate() {
        let p = format!("$.ignition.config.merge.{i}");
        resource(r, &p, true, ctx);
    }
    duplicates(
        ign.config
            .merge
            .iter()
            .map(|r| r.source.as_deref().unwrap_or("")),
        "$.ignition.config.merge",
        "source",
        ctx,
    );
    if !ign.config.replace.is_empty() {
        resource(&ign.config.replace, "$.ignition.config.replace", true, ctx);
    }
    let cas = &ign.security.tls.certificate_authorities;
    for (i, r) in cas.iter().enumerate() {
        resource(
            r,
            &format!("$.ignition.security.tls.certificateAuthorities.{i}"),
            true,
            ctx,
        );
    }
    duplicates(
        cas.iter().map(|r| r.source.as_deref().unwrap_or("")),
        "$.ignition.security.tls.certificateAuthorities",
        "source",
        ctx,
    );
    for (name, v) in [
        ("httpResponseHeaders", ign.timeouts.http_response_headers),
        ("httpTotal", ign.timeouts.http_total),
    ] {
        if v.is_some_and(|v| v < 0) {
            ctx.error(&format!("$.ignition.timeouts.{name}"), msg::NEGATIVE);
        }
    }
    let proxy = &ign.proxy;
    for (name, v) in [
        ("httpProxy", &proxy.http_proxy),
        ("httpsProxy", &proxy.https_proxy),
    ] {
        if let Some(u) = v {
            let scheme = u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                ctx.error(&format!("$.ignition.proxy.{name}"), msg::INVALID_PROXY);
            }
        }
    }
    if proxy
        .https_proxy
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("http://"))
    {
        ctx.warn("$.ignition.proxy.httpsProxy", msg::INSECURE_PROXY);
    }
}

/// Scheme of a URL, or `None` when it does not parse as one.
fn url_scheme(u: &str) -> Option<String> {
    let (scheme, rest) = u.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control())
        && !scheme.eq_ignore_ascii_case("data")
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    if matches!(scheme.as_str(), "http" | "https" | "tftp" | "s3" | "gs") && !rest.starts_with("//")
    {
        return None;
    }
    Some(scheme)
}

/// `arn:PARTITION:s3:::BUCKET/KEY` or an access point
/// `arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME/object/KEY`.
fn s3_arn(u: &str) -> bool {
    let parts: Vec<&str> = u.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    if arn != "arn" || partition.is_empty() || service != "s3" {
        return false;
    }
    if region.is_empty() && account.is_empty() {
        return resource
            .split_once('/')
            .is_some_and(|(bucket, key)| !bucket.is_empty() && !key.is_empty());
    }
    resource
        .strip_prefix("accesspoint/")
        .and_then(|r| r.split_once("/object/"))
        .is_some_and(|(ap, key)| !ap.is_empty() && !key.is_empty())
}

fn scheme_allowed(scheme: &str, minor: u32) -> bool {
    match scheme {
        "http" | "https" | "tftp" | "s3" | "data" => true,
        "gs" => minor >= 2,
        "arn" => minor >= 4,
        _ => false,
    }
}

fn resource(r: &Resource, p: &str, source_required: bool, ctx: &mut Ctx<'_>) {
    let mut scheme = None;
    match &r.source {
        None if source_required => ctx.error(&format!("{p}.source"), msg::SOURCE_REQUIRED),
        None => {}
        Some(u) => match url_scheme(u) {
            None if u.is_empty() => ctx.error(&format!("{p}.source"), msg::INVALID_SCHEME),
            None => ctx.error(&format!("{p}.source"), msg::INVALID_URL),
            Some(s) if s == "arn" && scheme_allowed(&s, ctx.minor) && !s3_arn(u) => {
                ctx.error(&format!("{p}.source"), msg::INVALID_S3_ARN)
            }
            Some(s) if !scheme_allowed(&s, ctx.minor) => {
                ctx.error(&format!("{p}.source"), msg::INVALID_SCHEME)
            }
            Some(s) => scheme = Some(s),
        },
    }
    if let Some(c) = &r.compression
        && !matches!(c.as_str(), "" | "gzip")
    {
        ctx.error(&format!("{p}.compression"), msg::COMPRESSION_INVALID);
    }
    headers(&r.http_headers, scheme.as_deref(), p, ctx);
    if let Some(h) = &r.verification.hash {
        let hp = format!("{p}.verification.hash");
        if r.source.is_none() {
            ctx.error(&hp, msg::VERIFICATION_NIL_SOURCE);
        }
        hash(h, &hp, ctx);
    }
}

fn headers(hs: &[HTTPHeader], scheme: Option<&str>, p: &str, ctx: &mut Ctx<'_>) {
    if hs.is_empty() {
        return;
    }
    if let Some(s) = scheme
        && !matches!(s, "http" | "https")
    {
        ctx.error(&format!("{p}.httpHeaders"), msg::HEADERS_SCHEME);
    }
    for (i, h) in hs.iter().enumerate() {
        if h.name.is_empty() {
            ctx.error(&format!("{p}.httpHeaders.{i}.name"), msg::EMPTY_HEADER_NAME);
        }
    }
    duplicates(
        hs.iter().map(|h| h.name.as_str()),
        &format!("{p}.httpHeaders"),
        "name",
        ctx,
    );
}

fn hash(h: &str, p: &str, ctx: &mut Ctx<'_>) {
    let Some((func, sum)) = h.split_once('-') else {
        ctx.error(p, msg::HASH_MALFORMED);
        return;
    };
    let len = match func {
        "sha512" => 128,
        "sha256" if ctx.minor >= 1 => 64,
        _ => {
            ctx.error(p, msg::HASH_UNRECOGNIZED);
            return;
        }
    };
    if sum.len() != len || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        ctx.error(p, msg::HASH_WRONG_SIZE);
    }
}

/// Report later occurrences of a key already seen earlier in the same list.
fn duplicates<'k>(keys: impl Iterator<Item = &'k str>, list: &str, field: &str, ctx: &mut Ctx<'_>) {
    let mut seen = HashSet::new();
    for (i, k) in keys.enumerate() {
        if !seen.insert(k) {
            let at = if field.is_empty() {
                format!("{list}.{i}")
            } else {
                format!("{list}.{i}.{field}")
            };
            ctx.error(&at, msg::DUPLICATE);
        }
    }
}

/// Ignition's path rules: set, absolute, and equal to its cleaned form.
fn abs_path(path: &str, p: &str, ctx: &mut Ctx<'_>) -> bool {
    if path.is_empty() {
        ctx.error(p, msg::NO_PATH);
        false
    } else if !path.starts_with('/') {
        ctx.error(p, msg::PATH_RELATIVE);
        false
    } else if clean(path) != path {
        ctx.error(p, msg::DIRTY_PATH);
        false
    } else {
        true
    }
}

/// Lexical path cleaning like Go's `path.Clean`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Mode checks. An unset mode is not reported: current Ignition made its "permissions unset"
/// warnings obsolete (the defaults 0644/0755 are documented behaviour).
fn mode(m: Option<i64>, p: &str, ctx: &mut Ctx<'_>) {
    match m {
        None => {}
        Some(m) if !(0..=0o7777).contains(&m) => ctx.error(p, msg::ILLEGAL_MODE),
        Some(m) if m & 0o7000 != 0 && ctx.minor < 6 => ctx.warn(p, msg::SPECIAL_MODE_BITS),
        Some(_) => {}
    }
}

fn owner(user: &NodeUser, group: &NodeGroup, p: &str, ctx: &mut Ctx<'_>) {
    if user.id.is_some() && user.name.is_some() {
        ctx.error(&format!("{p}.user"), msg::BOTH_ID_AND_NAME);
    }
    if group.id.is_some() && group.name.is_some() {
        ctx.error(&format!("{p}.group"), msg::BOTH_ID_AND_NAME);
    }
}

fn storage(s: &Storage, ctx: &mut Ctx<'_>) {
    // Files, directories and links share one key space: the path.
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let nodes = s
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| ("files", i, f.path.as_str()))
        .chain(
            s.directories
                .iter()
                .enumerate()
                .map(|(i, d)| ("directories", i, d.path.as_str())),
        )
        .chain(
            s.links
                .iter()
                .enumerate()
                .map(|(i, l)| ("links", i, l.path.as_str())),
        );
    for (list, i, path) in nodes {
        if !path.is_empty() && seen.insert(path, ()).is_some() {
            ctx.error(&format!("$.storage.{list}.{i}.path"), msg::DUPLICATE);
        }
    }
    for (i, f) in s.files.iter().enumerate() {
        file(f, &format!("$.storage.files.{i}"), ctx);
    }
    for (i, d) in s.directories.iter().enumerate() {
        directory(d, &format!("$.storage.directories.{i}"), ctx);
    }
    for (i, l) in s.links.iter().enumerate() {
        link(l, &format!("$.storage.links.{i}"), s, ctx);
    }
    // A node whose path passes through a link of this config would be written through it.
    let under_link = |path: &str| {
        s.links
            .iter()
            .any(|l| !l.path.is_empty() && path.starts_with(&format!("{}/", l.path)))
    };
    for (i, f) in s.files.iter().enumerate() {
        if under_link(&f.path) {
            ctx.error(&format!("$.storage.files.{i}"), msg::FILE_USED_SYMLINK);
        }
    }
    for (i, d) in s.directories.iter().enumerate() {
        if under_link(&d.path) {
            ctx.error(&format!("$.storage.directories.{i}"), msg::DIR_USED_SYMLINK);
        }
    }
    for (i, l) in s.links.iter().enumerate() {
        if under_link(&l.path) {
            ctx.error(&format!("$.storage.links.{i}"), msg::LINK_USED_SYMLINK);
        }
    }
    duplicates(
        s.disks.iter().map(|d| d.device.as_str()),
        "$.storage.disks",
        "device",
        ctx,
    );
    for (i, d) in s.disks.iter().enumerate() {
        disk(d, &format!("$.storage.disks.{i}"), ctx);
    }
    duplicates(
        s.raid.iter().map(|r| r.name.as_str()),
        "$.storage.raid",
        "name",
        ctx,
    );
    for (i, r) in s.raid.iter().enumerate() {
        raid(r, &format!("$.storage.raid.{i}"), ctx);
    }
    duplicates(
        s.filesystems.iter().map(|f| f.device.as_str()),
        "$.storage.filesystems",
        "device",
        ctx,
    );
    for (i, f) in s.filesystems.iter().enumerate() {
        filesystem(f, &format!("$.storage.filesystems.{i}"), ctx);
        if let Some(disk) = s
            .disks
            .iter()
            .find(|d| !f.device.is_empty() && d.device == f.device)
        {
            let at = format!("$.storage.filesystems.{i}.device");
            if !disk.partitions.is_empty() {
                ctx.warn(&at, msg::PARTITIONS_OVERWRITTEN);
            } else if disk.wipe_table == Some(true) && f.wipe_filesystem != Some(true) {
                ctx.warn(&at, msg::FS_IMPLICIT_WIPE);
            }
        }
    }
    duplicates(
        s.luks.iter().map(|l| l.name.as_str()),
        "$.storage.luks",
        "name",
        ctx,
    );
    for (i, l) in s.luks.iter().enumerate() {
        luks(l, &format!("$.storage.luks.{i}"), ctx);
    }
}

fn file(f: &File, p: &str, ctx: &mut Ctx<'_>) {
    abs_path(&f.path, &format!("{p}.path"), ctx);
    owner(&f.user, &f.group, p, ctx);
    mode(f.mode, &format!("{p}.mode"), ctx);
    if f.overwrite == Some(true) && f.contents.source.is_none() {
        ctx.error(&format!("{p}.overwrite"), msg::OVERWRITE_NIL_SOURCE);
    }
    resource(&f.contents, &format!("{p}.contents"), false, ctx);
    for (i, a) in f.append.iter().enumerate() {
        resource(a, &format!("{p}.append.{i}"), false, ctx);
    }
}

fn directory(d: &Directory, p: &str, ctx: &mut Ctx<'_>) {
    abs_path(&d.path, &format!("{p}.path"), ctx);
    owner(&d.user, &d.group, p, ctx);
    mode(d.mode, &format!("{p}.mode"), ctx);
}

fn link(l: &Link, p: &str, s: &Storage, ctx: &mut Ctx<'_>) {
    abs_path(&l.path, &format!("{p}.path"), ctx);
    owner(&l.user, &l.group, p, ctx);
    let Some(target) = l.target.as_deref().filter(|t| !t.is_empty()) else {
        ctx.error(&format!("{p}.target"), msg::LINK_TARGET_REQUIRED);
        return;
    };
    if l.hard != Some(true) {
        return;
    }
    let target = if target.starts_with('/') {
        clean(target)
    } else {
        // Relative hard link targets are resolved against the link's own path, as Ignition does.
        clean(&format!("{}/{target}", l.path))
    };
    if s.directories.iter().any(|d| d.path == target) {
        ctx.error(p, msg::HARD_LINK_TO_DIR);
    }
    for (set, field) in [
        (l.user.id.is_some(), "user.id"),
        (l.user.name.is_some(), "user.name"),
        (l.group.id.is_some(), "group.id"),
        (l.group.name.is_some(), "group.name"),
    ] {
        if set {
            ctx.warn(&format!("{p}.{field}"), msg::HARD_LINK_OWNER);
        }
    }
}

fn guid(g: &Option<String>, p: &str, ctx: &mut Ctx<'_>) {
    let Some(g) = g else { return };
    let groups: Vec<&str> = g.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(s, n)| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        ctx.error(p, msg::GUID_FORM);
    }
}

fn disk(d: &Disk, p: &str, ctx: &mut Ctx<'_>) {
    if d.device.is_empty() {
        ctx.error(&format!("{p}.device"), msg::DISK_DEVICE_REQUIRED);
    } else {
        abs_path(&d.device, &format!("{p}.device"), ctx);
    }
    let mut numbers: HashSet<i64> = HashSet::new();
    let mut labels: HashSet<&str> = HashSet::new();
    for (i, part) in d.partitions.iter().enumerate() {
        let pp = format!("{p}.partitions.{i}");
        partition(part, &pp, ctx);
        let n = part.number.unwrap_or(0);
        if n != 0 && !numbers.insert(n) {
            ctx.error(&format!("{pp}.number"), msg::PARTITION_NUMBERS_COLLIDE);
        }
        if let Some(l) = part.label.as_deref()
            && !labels.insert(l)
        {
            ctx.error(&format!("{pp}.label"), msg::DUPLICATE_LABELS);
        }
    }
    // Deleting a partition while another takes "the largest free block" makes the result
    // depend on the order of operations, so Ignition refuses it.
    let deletes = d.partitions.iter().any(|pt| pt.should_exist == Some(false));
    if deletes {
        for (i, pt) in d.partitions.iter().enumerate() {
            if pt.should_exist != Some(false) && (pt.start_mib == Some(0) || pt.size_mib == Some(0))
            {
                ctx.error(
                    &format!("{p}.partitions.{i}"),
                    msg::ZEROES_WITH_SHOULD_NOT_EXIST,
                );
            }
        }
    }
    // Overlap is only decidable for partitions with explicit non-zero start and size.
    let spans: Vec<(usize, i64, i64)> = d
        .partitions
        .iter()
        .enumerate()
        .filter_map(|(i, pt)| match (pt.start_mib, pt.size_mib) {
            (Some(st), Some(sz)) if st > 0 && sz > 0 => Some((i, st, st.saturating_add(sz))),
            _ => None,
        })
        .collect();
    for (a, (i, s1, e1)) in spans.iter().enumerate() {
        if spans[..a].iter().any(|(_, s2, e2)| s1 < e2 && s2 < e1) {
            ctx.error(&format!("{p}.partitions.{i}"), msg::PARTITIONS_OVERLAP);
        }
    }
}

fn partition(pt: &Partition, p: &str, ctx: &mut Ctx<'_>) {
    if let Some(l) = &pt.label {
        if l.chars().count() > 36 {
            ctx.error(&format!("{p}.label"), msg::PART_LABEL_TOO_LONG);
        }
        if l.contains(':') {
            ctx.warn(&format!("{p}.label"), msg::LABEL_COLON);
        }
    }
    guid(&pt.guid, &format!("{p}.guid"), ctx);
    guid(&pt.type_guid, &format!("{p}.typeGuid"), ctx);
    for (name, v) in [
        ("number", pt.number),
        ("sizeMiB", pt.size_mib),
        ("startMiB", pt.start_mib),
    ] {
        if v.is_some_and(|v| v < 0) {
            ctx.error(&format!("{p}.{name}"), msg::NEGATIVE);
        }
    }
    if pt.should_exist == Some(false) {
        if pt.label.is_some()
            || pt.type_guid.is_some()
            || pt.guid.is_some()
            || pt.size_mib.is_some()
            || pt.start_mib.is_some()
        {
            ctx.error(p, msg::SHOULD_NOT_EXIST_WITH_OTHERS);
        }
        if pt.number.unwrap_or(0) < 1 {
            ctx.error(&format!("{p}.number"), msg::NEED_LABEL_OR_NUMBER);
        }
    }
}

fn raid(r: &Raid, p: &str, ctx: &mut Ctx<'_>) {
    if r.name.is_empty() {
        ctx.error(&format!("{p}.name"), msg::NAME_REQUIRED);
    }
    match r.level.as_deref() {
        None | Some("") => ctx.error(&format!("{p}.level"), msg::RAID_LEVEL_REQUIRED),
        Some("linear" | "raid0" | "0" | "stripe") => {
            if r.spares.is_some_and(|s| s != 0) {
                ctx.error(&format!("{p}.spares"), msg::SPARES_UNSUPPORTED);
            }
        }
        Some(
            "raid1" | "1" | "mirror" | "raid4" | "4" | "raid5" | "5" | "raid6" | "6" | "raid10"
            | "10",
        ) => {}
        Some(_) => ctx.error(&format!("{p}.level"), msg::RAID_LEVEL),
    }
    if r.devices.is_empty() {
        ctx.error(&format!("{p}.devices"), msg::RAID_DEVICES_REQUIRED);
    }
    for (i, d) in r.devices.iter().enumerate() {
        abs_path(d, &format!("{p}.devices.{i}"), ctx);
    }
    duplicates(
        r.devices.iter().map(String::as_str),
        &format!("{p}.devices"),
        "",
        ctx,
    );
}

fn filesystem(f: &Filesystem, p: &str, ctx: &mut Ctx<'_>) {
    if f.device.is_empty() {
        ctx.error(&format!("{p}.device"), msg::DEVICE_REQUIRED);
    } else {
        abs_path(&f.device, &format!("{p}.device"), ctx);
    }
    match f.format.as_deref() {
        None | Some("") => {
            if f.path.is_some()
                || f.label.is_some()
                || f.uuid.is_some()
                || f.wipe_filesystem.is_some()
                || !f.options.is_empty()
                || !f.mount_options.is_empty()
            {
                ctx.error(&format!("{p}.format"), msg::FORMAT_NIL_WITH_OTHERS);
            }
        }
        Some(fmt) => {
            let limit = match fmt {
                "ext4" => Some(16),
                "btrfs" => Some(256),
                "xfs" => Some(12),
                "swap" => Some(15),
                "vfat" => Some(11),
                "none" if ctx.minor >= 3 => None,
                _ => {
                    ctx.error(&format!("{p}.format"), msg::FS_INVALID_FORMAT);
                    None
                }
            };
            if let (Some(limit), Some(label)) = (limit, &f.label)
                && label.chars().count() > limit
            {
                ctx.error(
                    &format!("{p}.label"),
                    format!("filesystem labels cannot be longer than {limit} characters when using {fmt}"),
                );
            }
        }
    }
    if let Some(path) = &f.path {
        abs_path(path, &format!("{p}.path"), ctx);
    }
}

fn luks(l: &Luks, p: &str, ctx: &mut Ctx<'_>) {
    if l.name.is_empty() {
        ctx.error(&format!("{p}.name"), msg::NAME_REQUIRED);
    } else if l.name.contains('/') {
        ctx.error(&format!("{p}.name"), msg::LUKS_NAME_SLASH);
    }
    match l.device.as_deref() {
        None | Some("") => ctx.error(&format!("{p}.device"), msg::DEVICE_REQUIRED),
        Some(d) => {
            abs_path(d, &format!("{p}.device"), ctx);
        }
    }
    if l.label.as_ref().is_some_and(|s| s.chars().count() > 47) {
        ctx.error(&format!("{p}.label"), msg::LUKS_LABEL_TOO_LONG);
    }
    if !l.key_file.is_empty() {
        resource(&l.key_file, &format!("{p}.keyFile"), false, ctx);
    }
    let c = &l.clevis;
    let custom_set = !c.custom.is_empty();
    if custom_set {
        if c.tpm2 == Some(true) || !c.tang.is_empty() || c.threshold.is_some() {
            ctx.error(&format!("{p}.clevis"), msg::CLEVIS_CUSTOM_WITH_OTHERS);
        }
        match c.custom.pin.as_deref() {
            None | Some("") => {
                ctx.error(&format!("{p}.clevis.custom.pin"), msg::CLEVIS_PIN_REQUIRED)
            }
            Some("tpm2" | "tang" | "sss") => {}
            Some(_) => ctx.error(&format!("{p}.clevis.custom.pin"), msg::CLEVIS_PIN),
        }
        if c.custom.config.as_deref().is_none_or(str::is_empty) {
            ctx.error(
                &format!("{p}.clevis.custom.config"),
                msg::CLEVIS_CONFIG_REQUIRED,
            );
        }
    }
    if c.threshold.is_some_and(|t| t < 1) {
        ctx.error(&format!("{p}.clevis.threshold"), msg::NEGATIVE);
    }
    for (i, t) in c.tang.iter().enumerate() {
        let tp = format!("{p}.clevis.tang.{i}");
        match url_scheme(&t.url) {
            Some(s) if s == "http" || s == "https" => {}
            Some(_) => ctx.error(&format!("{tp}.url"), msg::INVALID_SCHEME),
            None => ctx.error(&format!("{tp}.url"), msg::INVALID_URL),
        }
        if let Some(adv) = &t.advertisement
            && serde_json::from_str::<serde_json::Value>(adv).is_err()
        {
            ctx.error(&format!("{tp}.advertisement"), msg::TANG_ADVERTISEMENT);
        }
        if t.thumbprint.as_deref().is_none_or(str::is_empty) {
            ctx.error(&format!("{tp}.thumbprint"), msg::TANG_THUMBPRINT);
        }
    }
    duplicates(
        c.tang.iter().map(|t| t.url.as_str()),
        &format!("{p}.clevis.tang"),
        "url",
        ctx,
    );
    if l.cex.enabled == Some(true) {
        if !c.is_empty() {
            ctx.error(&format!("{p}.cex"), msg::CEX_WITH_CLEVIS);
        }
        if !l.key_file.is_empty() {
            ctx.error(&format!("{p}.keyFile"), msg::CEX_WITH_KEYFILE);
        }
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "snapshot",
    "slice",
    "scope",
];

/// Ignition's unit-name rules: a known suffix, and a sane template instance.
fn unit_name(name: &str, p: &str, ctx: &mut Ctx<'_>) {
    if name.is_empty() {
        ctx.error(p, msg::NAME_REQUIRED);
        return;
    }
    let Some((stem, ext)) = name.rsplit_once('.') else {
        ctx.error(p, msg::NO_SYSTEMD_EXT);
        return;
    };
    if !UNIT_SUFFIXES.contains(&ext) {
        ctx.error(p, msg::SYSTEMD_EXT);
        return;
    }
    if let Some((prefix, _instance)) = stem.split_once('@')
        && (prefix.is_empty() || stem.matches('@').count() > 1)
    {
        ctx.error(p, msg::INSTANTIATED_UNIT);
    }
    if stem.is_empty() || name.contains('/') {
        ctx.error(p, msg::SYSTEMD_EXT);
    }
}

/// Light unit-file syntax check: sections and `Key=value` lines (continuations allowed).
fn unit_contents(contents: &str, p: &str, ctx: &mut Ctx<'_>) -> bool {
    let mut has_install = false;
    let mut continued = false;
    let mut in_section = false;
    for (n, raw) in contents.lines().enumerate() {
        let line = raw.trim();
        let was_continued = continued;
        continued = line.ends_with('\\');
        if was_continued || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') {
                ctx.error(
                    p,
                    format!(
                        "invalid unit content: line {}: section header is not closed",
                        n + 1
                    ),
                );
                return has_install;
            }
            in_section = true;
            has_install |= line == "[Install]";
        } else if !line.contains('=') {
            ctx.error(
                p,
                format!("invalid unit content: line {}: expected Key=value", n + 1),
            );
            return has_install;
        } else if !in_section {
            ctx.error(
                p,
                format!(
                    "invalid unit content: line {}: assignment outside of a section",
                    n + 1
                ),
            );
            return has_install;
        }
    }
    has_install
}

fn unit(u: &Unit, p: &str, ctx: &mut Ctx<'_>) {
    unit_name(&u.name, &format!("{p}.name"), ctx);
    if let Some(c) = &u.contents {
        let has_install = unit_contents(c, &format!("{p}.contents"), ctx);
        if u.enabled == Some(true) && !has_install && !c.trim().is_empty() {
            ctx.warn(&format!("{p}.contents"), no_install_section(&u.name));
        }
    }
    for (i, d) in u.dropins.iter().enumerate() {
        let dp = format!("{p}.dropins.{i}");
        if d.name.is_empty() {
            ctx.error(&format!("{dp}.name"), msg::NAME_REQUIRED);
        } else if !d.name.ends_with(".conf") || d.name.contains('/') {
            ctx.error(&format!("{dp}.name"), msg::DROPIN_EXT);
        }
        if let Some(c) = &d.contents {
            unit_contents(c, &format!("{dp}.contents"), ctx);
        }
    }
    duplicates(
        u.dropins.iter().map(|d| d.name.as_str()),
        &format!("{p}.dropins"),
        "name",
        ctx,
    );
}

fn systemd(s: &Systemd, ctx: &mut Ctx<'_>) {
    for (i, u) in s.units.iter().enumerate() {
        unit(u, &format!("$.systemd.units.{i}"), ctx);
        // Enabling an instance uses its template's [Install] section.
        if u.enabled == Some(true)
            && u.contents.is_none()
            && let Some((prefix, rest)) = u.name.split_once('@')
            && let Some((instance, ext)) = rest.rsplit_once('.')
            && !instance.is_empty()
        {
            let template = format!("{prefix}@.{ext}");
            if let Some(t) = s.units.iter().find(|t| t.name == template)
                && let Some(c) = &t.contents
                && !c.lines().any(|l| l.trim() == "[Install]")
            {
                ctx.warn(
                    &format!("$.systemd.units.{i}"),
                    format!(
                        "template unit {template:?} for {:?} doesn't have Install section",
                        u.name
                    ),
                );
            }
        }
    }
    duplicates(
        s.units.iter().map(|u| u.name.as_str()),
        "$.systemd.units",
        "name",
        ctx,
    );
}

fn passwd(pw: &Passwd, ctx: &mut Ctx<'_>) {
    for (i, u) in pw.users.iter().enumerate() {
        let p = format!("$.passwd.users.{i}");
        if u.name.is_empty() {
            ctx.error(&format!("{p}.name"), msg::NAME_REQUIRED);
        }
        if u.uid.is_some_and(|v| v < 0) {
            ctx.error(&format!("{p}.uid"), msg::NEGATIVE);
        }
        if u.should_exist == Some(false)
            && (u.uid.is_some()
                || u.gecos.is_some()
                || u.home_dir.is_some()
                || u.password_hash.is_some()
                || u.primary_group.is_some()
                || u.shell.is_some()
                || !u.groups.is_empty()
                || !u.ssh_authorized_keys.is_empty())
        {
            ctx.error(&p, msg::SHOULD_NOT_EXIST_WITH_OTHERS);
        }
        if let Some(h) = &u.home_dir {
            abs_path(h, &format!("{p}.homeDir"), ctx);
        }
    }
    duplicates(
        pw.users.iter().map(|u| u.name.as_str()),
        "$.passwd.users",
        "name",
        ctx,
    );
    for (i, g) in pw.groups.iter().enumerate() {
        let p = format!("$.passwd.groups.{i}");
        if g.name.is_empty() {
            ctx.error(&format!("{p}.name"), msg::NAME_REQUIRED);
        }
        if g.gid.is_some_and(|v| v < 0) {
            ctx.error(&format!("{p}.gid"), msg::NEGATIVE);
        }
        if g.should_exist == Some(false) && (g.gid.is_some() || g.password_hash.is_some()) {
            ctx.error(&p, msg::SHOULD_NOT_EXIST_WITH_OTHERS);
        }
    }
    duplicates(
        pw.groups.iter().map(|g| g.name.as_str()),
        "$.passwd.groups",
        "name",
        ctx,
    );
}

/// A storage node written where the systemd section also writes a unit or drop-in.
fn path_conflicts_systemd(cfg: &Config, ctx: &mut Ctx<'_>) {
    let mut unit_paths = HashSet::new();
    for u in &cfg.systemd.units {
        if u.contents.is_some() || u.mask == Some(true) {
            unit_paths.insert(format!("/etc/systemd/system/{}", u.name));
        }
        for d in &u.dropins {
            if d.contents.is_some() {
                unit_paths.insert(format!("/etc/systemd/system/{}.d/{}", u.name, d.name));
            }
        }
    }
    let s = &cfg.storage;
    let nodes = s
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| ("files", i, &f.path))
        .chain(
            s.directories
                .iter()
                .enumerate()
                .map(|(i, d)| ("directories", i, &d.path)),
        )
        .chain(
            s.links
                .iter()
                .enumerate()
                .map(|(i, l)| ("links", i, &l.path)),
        );
    for (list, i, path) in nodes {
        if unit_paths.contains(path.as_str()) {
            ctx.error(
                &format!("$.storage.{list}.{i}.path"),
                msg::PATH_CONFLICTS_SYSTEMD,
            );
        }
    }
}
