//! Semantic validation of a typed config with Ignition's stable messages.

use crate::gourl;
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
    /// Label without a format (`ErrLabelNeedsFormat`).
    pub const LABEL_NEEDS_FORMAT: &str = "filesystem must specify format if label is specified";
    /// Key file source that is not a valid URL (`ErrInvalidLuksKeyFile`).
    pub const INVALID_LUKS_KEYFILE: &str = "invalid key-file source";
    /// Empty `versionId` on an S3 URL (`ErrInvalidS3ObjectVersionId`).
    pub const INVALID_S3_VERSION_ID: &str = "invalid S3 object VersionId";
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
}

/// Ignition's `unit "X" is enabled, but has no install section so enable does nothing`.
pub fn no_install_section(name: &str) -> String {
    format!("unit {name:?} is enabled, but has no install section so enable does nothing")
}

/// Validate a whole config.
///
/// Each rule cites the Ignition function it mirrors (`config/v3_*/types/*.go`); a check that
/// Ignition only makes while applying (negative numbers, empty names of users, groups, RAID
/// arrays and LUKS volumes) is left to the apply engine, so this accepts what Ignition accepts.
pub fn validate(cfg: &Config, ctx: &mut Ctx<'_>) {
    ignition(&cfg.ignition, ctx);
    storage(&cfg.storage, ctx);
    systemd(&cfg.systemd, ctx);
    passwd(&cfg.passwd, ctx);
    // kargs.go: `KernelArguments.MergedKeys` puts both lists in one key space, so an
    // argument listed twice (in one list or across both) is a duplicate entry.
    let mut seen = HashSet::new();
    for (list, items) in [
        ("shouldExist", &cfg.kernel_arguments.should_exist),
        ("shouldNotExist", &cfg.kernel_arguments.should_not_exist),
    ] {
        for (i, a) in items.iter().enumerate() {
            if !seen.insert(a.as_str()) {
                ctx.error(&format!("$.kernelArguments.{list}.{i}"), msg::DUPLICATE);
            }
        }
    }
    path_conflicts_systemd(cfg, ctx);
}

/// ignition.go / resource.go / tls.go / proxy.go. Timeouts are not validated by Ignition.
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
    duplicates(
        ign.proxy.no_proxy.iter().map(String::as_str),
        "$.ignition.proxy.noProxy",
        "",
        ctx,
    );
    // proxy.go `validateProxyURL`: Go's url.Parse, then http or https; http for HTTPS warns.
    let proxy = &ign.proxy;
    for (name, v, http_ok) in [
        ("httpProxy", &proxy.http_proxy, true),
        ("httpsProxy", &proxy.https_proxy, false),
    ] {
        let Some(u) = v else { continue };
        let p = format!("$.ignition.proxy.{name}");
        match gourl::parse(u) {
            Err(_) => ctx.error(&p, msg::INVALID_URL),
            Ok(url) if url.scheme != "http" && url.scheme != "https" => {
                ctx.error(&p, msg::INVALID_PROXY)
            }
            Ok(url) if url.scheme == "http" && !http_ok => ctx.warn(&p, msg::INSECURE_PROXY),
            Ok(_) => {}
        }
    }
}

/// url.go `validateURL` for spec 3.`minor`: Go's url.Parse, then the scheme (gs since 3.2,
/// arn since 3.4), the S3 `versionId`, the ARN form, and data URLs decoded as the dataurl
/// package decodes them ([`crate::dataurl`]).
fn validate_url(u: &str, minor: u32) -> Result<(), String> {
    let url = gourl::parse(u).map_err(|_| msg::INVALID_URL.to_string())?;
    let version_id_ok = |url: &gourl::GoUrl| {
        let q = gourl::query(&url.raw_query);
        match q.iter().find(|(k, _)| k == "versionId") {
            Some((_, v)) if v.is_empty() => Err(msg::INVALID_S3_VERSION_ID.to_string()),
            _ => Ok(()),
        }
    };
    match url.scheme.as_str() {
        "http" | "https" | "tftp" => Ok(()),
        // url.go: `dataurl.DecodeString(s)`, its error as the message.
        "data" => crate::dataurl::decode(u).map(|_| ()),
        "gs" if minor >= 2 => Ok(()),
        "s3" => version_id_ok(&url),
        "arn" if minor >= 4 => {
            s3_arn(&format!("arn:{}", url.opaque))?;
            version_id_ok(&url)
        }
        _ => Err(msg::INVALID_SCHEME.to_string()),
    }
}

/// url.go's `arn` case: aws-sdk-go-v2 `arn.IsARN`/`arn.Parse` (6 `:`-sections, non-empty
/// partition, service and resource), service `s3`, and a key after the bucket (access
/// points: after `accesspoint/NAME/`).
fn s3_arn(full: &str) -> Result<(), String> {
    let invalid = || Err(msg::INVALID_S3_ARN.to_string());
    if !full.starts_with("arn:") || full.matches(':').count() < 5 {
        return invalid();
    }
    let sections: Vec<&str> = full.splitn(6, ':').collect();
    let [_, partition, service, _, _, resource] = sections[..] else {
        return Err("arn: not enough sections".into());
    };
    if partition.is_empty() {
        return Err("arn: invalid partition".into());
    }
    if service.is_empty() {
        return Err("arn: invalid service".into());
    }
    if resource.is_empty() {
        return Err("arn: invalid resource".into());
    }
    if service != "s3" {
        return invalid();
    }
    let parts = full.split('/').count();
    if (resource.starts_with("accesspoint/") && parts < 3) || parts < 2 {
        return invalid();
    }
    Ok(())
}

/// resource.go `Resource.Validate` (compression, verification, source, HTTP headers) and,
/// for config references and CAs, `validateRequiredSource`. An empty source is no source.
fn resource(r: &Resource, p: &str, source_required: bool, ctx: &mut Ctx<'_>) {
    match r.source.as_deref() {
        None | Some("") if source_required => {
            ctx.error(&format!("{p}.source"), msg::SOURCE_REQUIRED)
        }
        None | Some("") => {}
        Some(u) => {
            if let Err(m) = validate_url(u, ctx.minor) {
                ctx.error(&format!("{p}.source"), m);
            }
        }
    }
    if let Some(c) = &r.compression
        && !matches!(c.as_str(), "" | "gzip")
    {
        ctx.error(&format!("{p}.compression"), msg::COMPRESSION_INVALID);
    }
    headers(&r.http_headers, r.source.as_deref(), p, ctx);
    if let Some(h) = &r.verification.hash {
        let hp = format!("{p}.verification.hash");
        if r.source.is_none() {
            ctx.error(&hp, msg::VERIFICATION_NIL_SOURCE);
        }
        hash(h, &hp, ctx);
    }
}

/// resource.go `validateSchemeForHTTPHeaders` and headers.go (`HTTPHeader.Validate`,
/// `HTTPHeaders.Validate`).
fn headers(hs: &[HTTPHeader], source: Option<&str>, p: &str, ctx: &mut Ctx<'_>) {
    if hs.is_empty() {
        return;
    }
    let at = format!("{p}.httpHeaders");
    match source.filter(|s| !s.is_empty()).map(gourl::parse) {
        None | Some(Err(_)) => ctx.error(&at, msg::INVALID_URL),
        Some(Ok(u)) if u.scheme != "http" && u.scheme != "https" => {
            ctx.error(&at, msg::HEADERS_SCHEME)
        }
        Some(Ok(_)) => {}
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

/// verification.go `Verification.Validate`: `FUNC-SUM`, a known function (sha256 since
/// 3.1) and a sum of the right length. Ignition checks the length only, not the digits.
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
    if sum.len() != len {
        ctx.error(p, msg::HASH_WRONG_SIZE);
    }
}

/// validate.go `ValidateDups`: every keyed list (strings are their own key, empty keys
/// included) reports a key seen before at the item, `list.i`. `field` only says which field
/// is the key; Ignition's path is the item's.
fn duplicates<'k>(keys: impl Iterator<Item = &'k str>, list: &str, field: &str, ctx: &mut Ctx<'_>) {
    let _ = field;
    let mut seen = HashSet::new();
    for (i, k) in keys.enumerate() {
        if !seen.insert(k) {
            ctx.error(&format!("{list}.{i}"), msg::DUPLICATE);
        }
    }
}

/// path.go `validatePath`: set, absolute, and equal to its cleaned form.
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

/// mode.go `validateMode` and (before 3.6) `validateModeSpecialBits`. An unset mode is not reported: current Ignition made its "permissions unset"
/// warnings obsolete (the defaults 0644/0755 are documented behaviour).
fn mode(m: Option<i64>, p: &str, ctx: &mut Ctx<'_>) {
    match m {
        None => {}
        Some(m) if !(0..=0o7777).contains(&m) => ctx.error(p, msg::ILLEGAL_MODE),
        Some(m) if m & 0o7000 != 0 && ctx.minor < 6 => ctx.warn(p, msg::SPECIAL_MODE_BITS),
        Some(_) => {}
    }
}

/// node.go `validateIDorName`: an id together with a non-empty name.
fn owner(user: &NodeUser, group: &NodeGroup, p: &str, ctx: &mut Ctx<'_>) {
    let both = |id: Option<i64>, name: &Option<String>| {
        id.is_some() && name.as_deref().is_some_and(|n| !n.is_empty())
    };
    if both(user.id, &user.name) {
        ctx.error(&format!("{p}.user"), msg::BOTH_ID_AND_NAME);
    }
    if both(group.id, &group.name) {
        ctx.error(&format!("{p}.group"), msg::BOTH_ID_AND_NAME);
    }
}

/// storage.go `Storage.Validate` plus the per-entry validations and duplicate keys.
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
        if seen.insert(path, ()).is_some() {
            ctx.error(&format!("$.storage.{list}.{i}"), msg::DUPLICATE);
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
    // storage.go validateDirectories/Files/Links: a node whose path passes through a link of
    // this config would be written through it; one error per such link (a link with an empty
    // path, itself an error, makes every absolute path one, as `HasPrefix(p, "" + "/")` does).
    let links_above = |path: &str| {
        s.links
            .iter()
            .filter(|l| path.starts_with(&format!("{}/", l.path)))
            .count()
    };
    for (i, d) in s.directories.iter().enumerate() {
        for _ in 0..links_above(&d.path) {
            ctx.error(&format!("$.storage.directories.{i}"), msg::DIR_USED_SYMLINK);
        }
    }
    for (i, f) in s.files.iter().enumerate() {
        for _ in 0..links_above(&f.path) {
            ctx.error(&format!("$.storage.files.{i}"), msg::FILE_USED_SYMLINK);
        }
    }
    for (i, l) in s.links.iter().enumerate() {
        for _ in 0..links_above(&l.path) {
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
        // storage.go (3.2+): a filesystem on a disk this config partitions or wipes.
        if ctx.minor < 2 {
            continue;
        }
        // Ignition keys the disks by device in a map: the last disk of that device wins.
        if let Some(disk) = s.disks.iter().rev().find(|d| d.device == f.device) {
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

/// file.go `File.Validate` (node path, mode, `validateOverwrite`) and its resources.
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

/// directory.go `Directory.Validate`: node path and mode.
fn directory(d: &Directory, p: &str, ctx: &mut Ctx<'_>) {
    abs_path(&d.path, &format!("{p}.path"), ctx);
    owner(&d.user, &d.group, p, ctx);
    mode(d.mode, &format!("{p}.mode"), ctx);
}

/// storage.go: a link needs a target (3.4+, where `target` became optional for merging);
/// a hard link may not point at a directory of this config, and its owner is ignored.
fn link(l: &Link, p: &str, s: &Storage, ctx: &mut Ctx<'_>) {
    abs_path(&l.path, &format!("{p}.path"), ctx);
    owner(&l.user, &l.group, p, ctx);
    let target = l.target.as_deref().unwrap_or("");
    if target.is_empty() && ctx.minor >= 4 {
        ctx.error(&format!("{p}.target"), msg::LINK_TARGET_REQUIRED);
        return;
    }
    if l.hard != Some(true) {
        return;
    }
    let cleaned = clean(target);
    let target = if cleaned.starts_with('/') {
        cleaned
    } else {
        // Relative hard link targets are joined to the link's own path, as Ignition does.
        clean(&format!("{}/{target}", l.path))
    };
    for _ in s.directories.iter().filter(|d| d.path == target) {
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

/// partition.go `validateGUID`: empty, or 8-4-4-4-12 hex digits of either case.
fn guid(g: &Option<String>, p: &str, ctx: &mut Ctx<'_>) {
    let Some(g) = g else { return };
    if g.is_empty() {
        return;
    }
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

/// disk.go `Disk.Validate`: the device, then (only when it is set) number collisions,
/// overlaps, partitions without a number next to one that should not exist, and label
/// collisions, each reported once per disk at the partition Ignition names.
fn disk(d: &Disk, p: &str, ctx: &mut Ctx<'_>) {
    // Partitions are validated on their own whatever the disk says (vcontext walks them),
    // and keyed like partition.go `Partition.Key`: the number, else the label, else "".
    for (i, part) in d.partitions.iter().enumerate() {
        partition(part, &format!("{p}.partitions.{i}"), ctx);
    }
    let keys: Vec<String> = d
        .partitions
        .iter()
        .map(|pt| match (pt.number.unwrap_or(0), &pt.label) {
            (0, Some(l)) => format!("label:{l}"),
            (0, None) => String::new(),
            (n, _) => format!("number:{n}"),
        })
        .collect();
    duplicates(
        keys.iter().map(String::as_str),
        &format!("{p}.partitions"),
        "",
        ctx,
    );
    if d.device.is_empty() {
        ctx.error(&format!("{p}.device"), msg::DISK_DEVICE_REQUIRED);
        return;
    }
    abs_path(&d.device, &format!("{p}.device"), ctx);
    let parts = &d.partitions;
    let number = |pt: &Partition| pt.number.unwrap_or(0);
    // partitionNumbersCollide: the second partition of a colliding number.
    let collide = (0..parts.len()).find(|&i| {
        number(&parts[i]) != 0 && parts[..i].iter().any(|o| number(o) == number(&parts[i]))
    });
    if let Some(i) = collide {
        ctx.error(
            &format!("{p}.partitions.{i}"),
            msg::PARTITION_NUMBERS_COLLIDE,
        );
    }
    if let Some(i) = partitions_overlap(parts) {
        ctx.error(&format!("{p}.partitions.{i}"), msg::PARTITIONS_OVERLAP);
    }
    // partitionsMixZeroesAndNonexistence: Ignition's check is on the partition *number*
    // (start and size 0 next to a deletion are resolved when the disks stage applies it).
    if parts.iter().any(|pt| pt.should_exist == Some(false))
        && parts.iter().any(|pt| number(pt) == 0)
    {
        ctx.error(
            &format!("{p}.partitions"),
            msg::ZEROES_WITH_SHOULD_NOT_EXIST,
        );
    }
    // partitionLabelsCollide: the first label seen before.
    let mut labels: HashSet<&str> = HashSet::new();
    if let Some(i) = parts
        .iter()
        .position(|pt| pt.label.as_deref().is_some_and(|l| !labels.insert(l)))
    {
        ctx.error(&format!("{p}.partitions.{i}"), msg::DUPLICATE_LABELS);
    }
}

/// disk.go `partitionsOverlap`: among partitions with a start and size and a non-zero start
/// (size 0 ends at its start), the index of the first one found overlapping another.
fn partitions_overlap(parts: &[Partition]) -> Option<usize> {
    let dims = |pt: &Partition| match (pt.start_mib, pt.size_mib) {
        (Some(start), Some(size)) if start != 0 => {
            let end = if size == 0 {
                start
            } else {
                start.saturating_add(size).saturating_sub(1)
            };
            Some((start, end))
        }
        _ => None,
    };
    for (pi, p) in parts.iter().enumerate() {
        let Some((ps, pe)) = dims(p) else { continue };
        for (oi, o) in parts.iter().enumerate() {
            if oi == pi {
                continue;
            }
            let Some((os, oe)) = dims(o) else { continue };
            if (ps >= os && ps <= oe) || (pe >= os && pe <= oe) || (ps < os && pe > oe) {
                return Some(oi);
            }
        }
    }
    None
}

/// partition.go `Partition.Validate`. Negative numbers, starts and sizes are refused by the
/// disks stage, as they are by Ignition's.
fn partition(pt: &Partition, p: &str, ctx: &mut Ctx<'_>) {
    let not_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if pt.should_exist == Some(false)
        && (pt.label.is_some()
            || not_empty(&pt.type_guid)
            || not_empty(&pt.guid)
            || pt.start_mib.is_some()
            || pt.size_mib.is_some())
    {
        ctx.error(p, msg::SHOULD_NOT_EXIST_WITH_OTHERS);
    }
    if pt.number.unwrap_or(0) == 0 && pt.label.is_none() {
        ctx.error(p, msg::NEED_LABEL_OR_NUMBER);
    }
    // validateLabel: 36 bytes at most, and no ':' (sgdisk cannot escape it): both errors.
    if let Some(l) = &pt.label {
        if l.len() > 36 {
            ctx.error(&format!("{p}.label"), msg::PART_LABEL_TOO_LONG);
        } else if l.contains(':') {
            ctx.error(&format!("{p}.label"), msg::LABEL_COLON);
        }
    }
    guid(&pt.guid, &format!("{p}.guid"), ctx);
    guid(&pt.type_guid, &format!("{p}.typeGuid"), ctx);
}

/// raid.go `Raid.Validate`: a known level (spares not for linear/raid0) and some devices.
/// The name and the device paths are checked by mdadm when the array is created.
fn raid(r: &Raid, p: &str, ctx: &mut Ctx<'_>) {
    match r.level.as_deref() {
        None | Some("") => ctx.error(&format!("{p}.level"), msg::RAID_LEVEL_REQUIRED),
        Some("linear" | "raid0" | "0" | "stripe") => {
            if r.spares.is_some_and(|s| s != 0) {
                ctx.error(&format!("{p}.level"), msg::SPARES_UNSUPPORTED);
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
    duplicates(
        r.devices.iter().map(String::as_str),
        &format!("{p}.devices"),
        "",
        ctx,
    );
}

/// filesystem.go `Filesystem.Validate`: path, device (a path), format, label.
fn filesystem(f: &Filesystem, p: &str, ctx: &mut Ctx<'_>) {
    if let Some(path) = &f.path {
        abs_path(path, &format!("{p}.path"), ctx);
    }
    abs_path(&f.device, &format!("{p}.device"), ctx);
    let not_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let format = f.format.as_deref().filter(|s| !s.is_empty());
    match format {
        None => {
            if not_empty(&f.path)
                || not_empty(&f.label)
                || not_empty(&f.uuid)
                || f.wipe_filesystem == Some(true)
                || !f.options.is_empty()
                || !f.mount_options.is_empty()
            {
                ctx.error(&format!("{p}.format"), msg::FORMAT_NIL_WITH_OTHERS);
            }
        }
        Some("ext4" | "btrfs" | "xfs" | "swap" | "vfat") => {}
        Some("none") if ctx.minor >= 3 => {}
        Some(_) => ctx.error(&format!("{p}.format"), msg::FS_INVALID_FORMAT),
    }
    let Some(label) = f.label.as_deref().filter(|s| !s.is_empty()) else {
        return;
    };
    let Some(fmt) = format else {
        ctx.error(&format!("{p}.label"), msg::LABEL_NEEDS_FORMAT);
        return;
    };
    let limit = match fmt {
        "ext4" => 16,
        "btrfs" => 256,
        "xfs" => 12,
        "swap" => 15,
        "vfat" => 11,
        _ => return,
    };
    if label.len() > limit {
        ctx.error(
            &format!("{p}.label"),
            format!("filesystem labels cannot be longer than {limit} characters when using {fmt}"),
        );
    }
}

/// luks.go `Luks.Validate`, clevis.go `ClevisCustom.Validate`, tang.go `Tang.Validate`
/// and cex.go. An empty name is refused by cryptsetup when the volume is opened.
fn luks(l: &Luks, p: &str, ctx: &mut Ctx<'_>) {
    if l.name.contains('/') {
        ctx.error(&format!("{p}.name"), msg::LUKS_NAME_SLASH);
    }
    if l.label.as_ref().is_some_and(|s| s.len() > 47) {
        ctx.error(&format!("{p}.label"), msg::LUKS_LABEL_TOO_LONG);
    }
    match l.device.as_deref() {
        None | Some("") => ctx.error(&format!("{p}.device"), msg::DISK_DEVICE_REQUIRED),
        Some(d) => {
            abs_path(d, &format!("{p}.device"), ctx);
        }
    }
    if !l.key_file.is_empty() {
        resource(&l.key_file, &format!("{p}.keyFile"), false, ctx);
        // luks.go reports this one at `keys`, a path that is not in the schema; kept so the
        // report line is Ignition's.
        if let Some(src) = l.key_file.source.as_deref().filter(|s| !s.is_empty())
            && validate_url(src, ctx.minor).is_err()
        {
            ctx.error(&format!("{p}.keys"), msg::INVALID_LUKS_KEYFILE);
        }
    }
    let c = &l.clevis;
    let not_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let threshold_set = c.threshold.is_some_and(|t| t != 0);
    if not_empty(&c.custom.pin) && (c.tpm2 == Some(true) || !c.tang.is_empty() || threshold_set) {
        ctx.error(&format!("{p}.clevis"), msg::CLEVIS_CUSTOM_WITH_OTHERS);
    }
    let cu = &c.custom;
    if not_empty(&cu.pin) || not_empty(&cu.config) || cu.needs_network == Some(true) {
        match cu.pin.as_deref() {
            None | Some("") => {
                ctx.error(&format!("{p}.clevis.custom.pin"), msg::CLEVIS_PIN_REQUIRED)
            }
            Some("tpm2" | "tang" | "sss") => {}
            // v3_6 clevis.go adds the trustee pin.
            Some("trustee") if ctx.minor >= 6 => {}
            Some(_) => ctx.error(&format!("{p}.clevis.custom.pin"), msg::CLEVIS_PIN),
        }
        if !not_empty(&cu.config) {
            ctx.error(
                &format!("{p}.clevis.custom.config"),
                msg::CLEVIS_CONFIG_REQUIRED,
            );
        }
    }
    for (i, t) in c.tang.iter().enumerate() {
        let tp = format!("{p}.clevis.tang.{i}");
        match gourl::parse(&t.url) {
            Ok(u) if u.scheme == "http" || u.scheme == "https" => {}
            Ok(_) => ctx.error(&format!("{tp}.url"), msg::INVALID_SCHEME),
            Err(_) => ctx.error(&format!("{tp}.url"), msg::INVALID_URL),
        }
        if let Some(adv) = t.advertisement.as_deref().filter(|a| !a.is_empty())
            && serde_json::from_str::<serde_json::Value>(adv).is_err()
        {
            ctx.error(&format!("{tp}.advertisement"), msg::TANG_ADVERTISEMENT);
        }
        if !not_empty(&t.thumbprint) {
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
        let clevis_present =
            not_empty(&cu.pin) || !c.tang.is_empty() || c.tpm2 == Some(true) || threshold_set;
        if clevis_present {
            ctx.error(&format!("{p}.cex"), msg::CEX_WITH_CLEVIS);
        }
        // luks.go: `Cex.IsPresent() && util.NotEmpty(KeyFile.Source)`, reported at `cex`.
        if not_empty(&l.key_file.source) {
            ctx.error(&format!("{p}.cex"), msg::CEX_WITH_KEYFILE);
        }
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".snapshot",
    ".slice",
    ".scope",
];

/// Go's `path.Ext`: the suffix from the last `.` of the last element, or "".
fn go_ext(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rfind('.').map_or("", |i| &last[i..])
}

/// unit.go `validateName`: the extension (Go's `path.Ext`) is a unit type. That is all:
/// an empty name or one without a suffix has an invalid extension, and template instances
/// are only looked at when the unit is enabled.
fn unit_name(name: &str, p: &str, ctx: &mut Ctx<'_>) {
    if !UNIT_SUFFIXES.contains(&go_ext(name)) {
        ctx.error(p, msg::SYSTEMD_EXT);
    }
}

/// One `Key=value` of a unit file, as go-systemd's `unit.Deserialize` reads it.
struct UnitOption {
    section: String,
}

/// go-systemd's `SYSTEMD_LINE_MAX`: a lexer step that starts with at least this many bytes
/// buffered and no line end among them fails with `line too long (max 2048 bytes)`.
const SYSTEMD_LINE_MAX: usize = 2048;

/// The size of the `bufio.Reader` go-systemd reads through (Go's default).
const GO_BUFIO_SIZE: usize = 4096;

/// What go-systemd's lexer sees of a `bufio.Reader` over a `strings.Reader`: the read
/// position `r` and the end `w` of the buffered bytes, both as offsets into the whole input.
/// The line-length check depends on how much is buffered when a step starts, so the refills
/// are modelled exactly: a fill reads as much as the 4096-byte buffer holds.
struct GoBufio<'a> {
    text: &'a str,
    data: &'a [u8],
    r: usize,
    w: usize,
    last_rune: usize,
}

impl<'a> GoBufio<'a> {
    fn new(text: &'a str) -> Self {
        GoBufio {
            text,
            data: text.as_bytes(),
            r: 0,
            w: 0,
            last_rune: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.w - self.r
    }

    /// `fill`: slide (a no-op with absolute offsets) and read once.
    fn fill(&mut self) {
        let room = GO_BUFIO_SIZE - self.buffered();
        self.w += room.min(self.data.len() - self.w);
    }

    fn full_rune(&self) -> bool {
        let b = &self.data[self.r..self.w];
        let width = match b.first() {
            None => return false,
            Some(&c) if c < 0x80 => 1,
            Some(&c) if c >= 0xF0 => 4,
            Some(&c) if c >= 0xE0 => 3,
            Some(_) => 2,
        };
        b.len() >= width
    }

    /// `ReadRune`; `None` at the end of the input.
    fn read_rune(&mut self) -> Option<char> {
        while self.r + 4 > self.w
            && !self.full_rune()
            && self.w < self.data.len()
            && self.buffered() < GO_BUFIO_SIZE
        {
            self.fill();
        }
        if self.r == self.w {
            return None;
        }
        // The rune is whole inside [r, w) (the loop above made sure), and r is on a character
        // boundary (runes and the ASCII delimiters move it), but w may split a later
        // character: decode from the text, not from the buffered window.
        let c = self.text.get(self.r..)?.chars().next()?;
        self.last_rune = c.len_utf8();
        self.r += self.last_rune;
        Some(c)
    }

    fn unread_rune(&mut self) {
        self.r -= self.last_rune;
        self.last_rune = 0;
    }

    /// `ReadBytes(delim)`: the bytes up to and including `delim`, and whether it was found
    /// (else everything to the end of the input).
    fn read_bytes(&mut self, delim: u8) -> (&'a [u8], bool) {
        let start = self.r;
        loop {
            if let Some(i) = self.data[self.r..self.w].iter().position(|&c| c == delim) {
                self.r += i + 1;
                return (&self.data[start..self.r], true);
            }
            if self.buffered() >= GO_BUFIO_SIZE {
                // ErrBufferFull: collectFragments keeps the fragment and reads on.
                self.r = self.w;
            } else if self.w == self.data.len() {
                self.r = self.w;
                return (&self.data[start..self.r], false);
            }
            self.fill();
        }
    }

    /// The lexer's `toEOL`: a line without `\r` *or* `\n` at its end (Go trims a `\r` suffix
    /// first, so a CRLF line keeps its `\r`), and whether the input ended.
    fn read_to_eol(&mut self) -> (&'a [u8], bool) {
        let (line, found) = self.read_bytes(b'\n');
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        (line, !found)
    }
}

/// The states of go-systemd's lexer (`lexNextSection`, `lexSectionName`, ...).
enum LexStep {
    NextSection,
    SectionName,
    SectionSuffix(String),
    NextSectionOrOption(String),
    OptionName(String),
    OptionValue(String),
    IgnoreLine(Box<LexStep>),
}

fn go_trim_space(b: &[u8]) -> &[u8] {
    std::str::from_utf8(b).map_or(b, |s| s.trim().as_bytes())
}

/// A port of go-systemd's `unit.Deserialize` (v22, `unit/deserialize.go`), which Ignition's
/// `parse.ParseUnitContents` runs: text before the first section is skipped, `#`/`;` lines
/// are comments, a value goes on while its line *ends* with `\`, and each lexer step that
/// starts with 2048 bytes buffered and no line end among them fails (`SYSTEMD_LINE_MAX`).
/// The errors are go-systemd's, behind Ignition's prefix.
fn deserialize_unit(contents: &str) -> Result<Vec<UnitOption>, String> {
    let mut b = GoBufio::new(contents);
    let mut opts = Vec::new();
    let mut next = Some(LexStep::NextSection);
    while let Some(step) = next {
        if b.buffered() >= SYSTEMD_LINE_MAX
            && !b.data[b.r..b.r + SYSTEMD_LINE_MAX]
                .iter()
                .any(|&c| c == b'\r' || c == b'\n')
        {
            return Err(format!("line too long (max {SYSTEMD_LINE_MAX} bytes)"));
        }
        next = match step {
            LexStep::NextSection => match b.read_rune() {
                None => None,
                Some('[') => Some(LexStep::SectionName),
                Some('#' | ';') => Some(LexStep::IgnoreLine(Box::new(LexStep::NextSection))),
                Some(_) => Some(LexStep::NextSection),
            },
            LexStep::SectionName => {
                let (sec, found) = b.read_bytes(b']');
                if !found {
                    return Err("unable to find end of section".into());
                }
                let name = String::from_utf8_lossy(&sec[..sec.len() - 1]).into_owned();
                Some(LexStep::SectionSuffix(name))
            }
            LexStep::SectionSuffix(section) => {
                let (garbage, _) = b.read_to_eol();
                let garbage = go_trim_space(garbage);
                if !garbage.is_empty() {
                    // go-systemd prints its lexer's `section` field, which is never set,
                    // and the bytes as Go's %v of a []byte.
                    let bytes: Vec<String> = garbage.iter().map(u8::to_string).collect();
                    return Err(format!(
                        "found garbage after section name : [{}]",
                        bytes.join(" ")
                    ));
                }
                Some(LexStep::NextSectionOrOption(section))
            }
            LexStep::NextSectionOrOption(section) => match b.read_rune() {
                None => None,
                Some(c) if c.is_whitespace() => Some(LexStep::NextSectionOrOption(section)),
                Some('[') => Some(LexStep::SectionName),
                Some('#' | ';') => Some(LexStep::IgnoreLine(Box::new(
                    LexStep::NextSectionOrOption(section),
                ))),
                Some(_) => {
                    b.unread_rune();
                    Some(LexStep::OptionName(section))
                }
            },
            LexStep::OptionName(section) => loop {
                match b.read_rune() {
                    None => return Err("EOF".into()),
                    Some('\n' | '\r') => {
                        return Err(
                            "unexpected newline encountered while parsing option name".into()
                        );
                    }
                    Some('=') => break Some(LexStep::OptionValue(section)),
                    Some(_) => {}
                }
            },
            LexStep::OptionValue(section) => {
                let (line, _) = b.read_to_eol();
                // A line ending with '\' continues the value (as a step of its own).
                if !go_trim_space(line).is_empty() && line.ends_with(b"\\") {
                    Some(LexStep::OptionValue(section))
                } else {
                    opts.push(UnitOption {
                        section: section.clone(),
                    });
                    Some(LexStep::NextSectionOrOption(section))
                }
            }
            LexStep::IgnoreLine(then) => {
                loop {
                    let (line, _) = b.read_to_eol();
                    let line = line.strip_suffix(b" ").unwrap_or(line);
                    if !line.ends_with(b"\\") {
                        break;
                    }
                }
                Some(*then)
            }
        };
    }
    Ok(opts)
}

/// unit.go `validateUnitContent` plus `validations.ValidateInstallSection`: `Some(true)`
/// when the unit has an option in `[Install]`, `None` when it does not parse.
fn unit_contents(contents: &str, p: &str, ctx: &mut Ctx<'_>) -> Option<bool> {
    match deserialize_unit(contents) {
        // go-systemd returns nil for a unit without options, and ValidateInstallSection
        // says nothing then (shared/validations/unit.go: "contentSections == nil").
        Ok(opts) if opts.is_empty() => None,
        Ok(opts) => Some(opts.iter().any(|o| o.section == "Install")),
        Err(e) => {
            ctx.error(p, format!("invalid unit content: {e}"));
            None
        }
    }
}

/// unit.go `Unit.Validate` and `Dropin.Validate`.
fn unit(u: &Unit, p: &str, ctx: &mut Ctx<'_>) {
    unit_name(&u.name, &format!("{p}.name"), ctx);
    if let Some(c) = &u.contents {
        let has_install = unit_contents(c, &format!("{p}.contents"), ctx);
        if u.enabled == Some(true) && !c.is_empty() && has_install == Some(false) {
            ctx.warn(&format!("{p}.contents"), no_install_section(&u.name));
        }
    }
    for (i, d) in u.dropins.iter().enumerate() {
        let dp = format!("{p}.dropins.{i}");
        if let Some(c) = &d.contents {
            unit_contents(c, &format!("{dp}.contents"), ctx);
        }
        if go_ext(&d.name) != ".conf" {
            ctx.error(&format!("{dp}.name"), msg::DROPIN_EXT);
        }
    }
    duplicates(
        u.dropins.iter().map(|d| d.name.as_str()),
        &format!("{p}.dropins"),
        "name",
        ctx,
    );
}

/// systemd.go: every unit, unique names, and the template-instance install warning.
fn systemd(s: &Systemd, ctx: &mut Ctx<'_>) {
    for (i, u) in s.units.iter().enumerate() {
        unit(u, &format!("$.systemd.units.{i}"), ctx);
        // systemd.go `Systemd.Validate`: an enabled `P@I.service` (regexp
        // `^(.+?)@(.+?)\.service$`, whatever its own contents) whose template `P@.service`
        // has contents that parse and no [Install] option: a warning at the instance's
        // `contents`.
        if u.enabled == Some(true)
            && let Some(stem) = u.name.strip_suffix(".service")
            && let Some((prefix, instance)) = stem.split_once('@')
            && !prefix.is_empty()
            && !instance.is_empty()
        {
            let template = format!("{prefix}@.service");
            // Ignition looks the template up in a map: the last unit of that name wins.
            if let Some(t) = s.units.iter().rev().find(|t| t.name == template)
                && let Some(c) = t.contents.as_deref().filter(|c| !c.is_empty())
                && deserialize_unit(c).is_ok_and(|o| !o.iter().any(|o| o.section == "Install"))
            {
                ctx.warn(
                    &format!("$.systemd.units.{i}.contents"),
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

/// passwd: Ignition validates nothing of a user or group but the duplicate names (a user
/// with `shouldExist: false` is deleted whatever else it says; names, ids and home
/// directories are checked by the files stage when it applies them).
fn passwd(pw: &Passwd, ctx: &mut Ctx<'_>) {
    for (i, u) in pw.users.iter().enumerate() {
        for (list, items) in [
            ("sshAuthorizedKeys", &u.ssh_authorized_keys),
            ("groups", &u.groups),
        ] {
            duplicates(
                items.iter().map(String::as_str),
                &format!("$.passwd.users.{i}.{list}"),
                "",
                ctx,
            );
        }
    }
    duplicates(
        pw.users.iter().map(|u| u.name.as_str()),
        "$.passwd.users",
        "name",
        ctx,
    );
    duplicates(
        pw.groups.iter().map(|g| g.name.as_str()),
        "$.passwd.groups",
        "name",
        ctx,
    );
}

/// config.go `Config.Validate`: a file, directory or link where the systemd section writes
/// a unit or drop-in with (non-empty) contents.
fn path_conflicts_systemd(cfg: &Config, ctx: &mut Ctx<'_>) {
    let mut unit_paths = HashSet::new();
    let has = |c: &Option<String>| c.as_deref().is_some_and(|c| !c.is_empty());
    for u in &cfg.systemd.units {
        if has(&u.contents) {
            unit_paths.insert(format!("/etc/systemd/system/{}", u.name));
        }
        for d in &u.dropins {
            if has(&d.contents) {
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
