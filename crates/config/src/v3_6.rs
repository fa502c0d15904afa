//! Typed Ignition spec 3.6.0 config. Every older 3.x version is translated forward into these
//! types, so the apply engine only ever sees one shape.
//!
//! Field names follow the spec (camelCase in JSON). Optional spec fields are `Option`s and
//! lists default to empty, so "absent" and "set to the default" stay distinguishable where
//! the spec's merge rules need it (a child's `None` never overrides a parent's value).

use serde::{Deserialize, Serialize};

/// A whole Ignition config (spec 3.6.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Metadata about the config itself: version, merge/replace, timeouts, TLS, proxy.
    pub ignition: Ignition,
    /// Kernel arguments that should (not) be present on the next boot.
    #[serde(default, skip_serializing_if = "KernelArguments::is_empty")]
    pub kernel_arguments: KernelArguments,
    /// Users and groups.
    #[serde(default, skip_serializing_if = "Passwd::is_empty")]
    pub passwd: Passwd,
    /// Disks, RAID, LUKS, filesystems, files, directories and links.
    #[serde(default, skip_serializing_if = "Storage::is_empty")]
    pub storage: Storage,
    /// systemd units and drop-ins.
    #[serde(default, skip_serializing_if = "Systemd::is_empty")]
    pub systemd: Systemd,
}

/// The `ignition` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignition {
    /// Config to merge or replace this one with.
    #[serde(default, skip_serializing_if = "IgnitionConfig::is_empty")]
    pub config: IgnitionConfig,
    /// HTTP(S) proxy settings used for fetching resources.
    #[serde(default, skip_serializing_if = "Proxy::is_empty")]
    pub proxy: Proxy,
    /// TLS settings (extra certificate authorities).
    #[serde(default, skip_serializing_if = "Security::is_empty")]
    pub security: Security,
    /// HTTP timeouts.
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    /// Spec version; always "3.6.0" after translation.
    #[serde(default)]
    pub version: String,
}

/// `ignition.config`: configs to merge with, or replace, this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnitionConfig {
    /// Configs merged on top of this one, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge: Vec<Resource>,
    /// A config that replaces this one entirely.
    #[serde(default, skip_serializing_if = "Resource::is_empty")]
    pub replace: Resource,
}

/// `ignition.proxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proxy {
    /// Proxy for plain HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
    /// Proxy for HTTPS requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_proxy: Option<String>,
    /// Hosts that bypass the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_proxy: Vec<String>,
}

/// `ignition.security`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Tls::is_empty")]
    pub tls: Tls,
}

/// `ignition.security.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// PEM bundles added to the trust store, keyed by source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_authorities: Vec<Resource>,
}

/// `ignition.timeouts` (seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time to wait for response headers; default 10, 0 = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_response_headers: Option<i64>,
    /// Total time for one fetch including retries; default 0 = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_total: Option<i64>,
}

/// A remote or inline resource: `source` URL plus how to fetch and check it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `""` or `"gzip"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Extra HTTP headers (http/https sources only), keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HTTPHeader>,
    /// URL: http, https, tftp, s3, arn, gs or data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Expected hash of the decompressed contents.
    #[serde(default, skip_serializing_if = "Verification::is_empty")]
    pub verification: Verification,
}

/// One HTTP header; a `None` value deletes the parent's header of that name on merge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeader {
    /// Header name (required).
    #[serde(default)]
    pub name: String,
    /// Header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `verification`: `hash` in the form `sha512-<hex>` or `sha256-<hex>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// `<function>-<hex digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Top-level `kernelArguments` (3.3+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelArguments {
    /// Arguments that must be present (multi-word entries in that exact order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should_exist: Vec<String>,
    /// Arguments that must be absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should_not_exist: Vec<String>,
}

/// The `passwd` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Passwd {
    /// Groups, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<PasswdGroup>,
    /// Users, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<PasswdUser>,
}

/// `passwd.groups[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswdGroup {
    /// Group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
    /// Group name (required).
    #[serde(default)]
    pub name: String,
    /// Hashed group password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// `false` deletes the group (3.2+); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_exist: Option<bool>,
    /// System group (creation time only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<bool>,
}

/// `passwd.users[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswdUser {
    /// GECOS field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gecos: Option<String>,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_dir: Option<String>,
    /// User name (required).
    #[serde(default)]
    pub name: String,
    /// Do not create the home directory (creation time only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_create_home: Option<bool>,
    /// Do not add to lastlog/faillog (creation time only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_log_init: Option<bool>,
    /// Do not create a group named after the user (creation time only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_user_group: Option<bool>,
    /// Hashed password; absent = locked (`*`) for new users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_group: Option<String>,
    /// Login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// `false` deletes the user (3.2+); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_exist: Option<bool>,
    /// SSH public keys written to `~/.ssh/authorized_keys.d/ignition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// System account (creation time only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<bool>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
}

/// The `storage` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Directories (share the `path` key space with files and links).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<Directory>,
    /// Disks to partition, keyed by device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Files (share the `path` key space with directories and links).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// Filesystems to create/mount, keyed by device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filesystems: Vec<Filesystem>,
    /// Links (share the `path` key space with files and directories).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// LUKS volumes, keyed by name (3.2+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luks: Vec<Luks>,
    /// Software RAID arrays, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raid: Vec<Raid>,
}

/// Owner of a node: by numeric id or by name (not both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUser {
    /// Numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// User name, looked up in the target root's passwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Group of a node: by numeric id or by name (not both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    /// Numeric gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Group name, looked up in the target root's group file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `storage.files[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// Group owner.
    #[serde(default, skip_serializing_if = "NodeGroup::is_empty")]
    pub group: NodeGroup,
    /// Replace an existing node at the path (requires `contents.source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// Absolute, simplified path in the target root (required).
    #[serde(default)]
    pub path: String,
    /// User owner.
    #[serde(default, skip_serializing_if = "NodeUser::is_empty")]
    pub user: NodeUser,
    /// Resources appended to the file, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<Resource>,
    /// The file's contents.
    #[serde(default, skip_serializing_if = "Resource::is_empty")]
    pub contents: Resource,
    /// Permission bits as a decimal integer (special bits honoured from 3.6.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i64>,
}

/// `storage.directories[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    /// Group owner.
    #[serde(default, skip_serializing_if = "NodeGroup::is_empty")]
    pub group: NodeGroup,
    /// Replace an existing non-directory node at the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// Absolute, simplified path in the target root (required).
    #[serde(default)]
    pub path: String,
    /// User owner.
    #[serde(default, skip_serializing_if = "NodeUser::is_empty")]
    pub user: NodeUser,
    /// Permission bits as a decimal integer; default 0755.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i64>,
}

/// `storage.links[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// Group owner (ignored for hard links).
    #[serde(default, skip_serializing_if = "NodeGroup::is_empty")]
    pub group: NodeGroup,
    /// Replace an existing node at the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// Absolute, simplified path in the target root (required).
    #[serde(default)]
    pub path: String,
    /// User owner (ignored for hard links).
    #[serde(default, skip_serializing_if = "NodeUser::is_empty")]
    pub user: NodeUser,
    /// Make a hard link instead of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    /// Link target (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `storage.disks[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Absolute device path (required).
    #[serde(default)]
    pub device: String,
    /// Partitions, keyed by number (or label when the number is 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
    /// Erase the partition table first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_table: Option<bool>,
}

/// `storage.disks[].partitions[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    /// Unique partition GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// PARTLABEL, at most 36 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Partition number; 0/absent = next free slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    /// Allow growing an existing partition (3.2+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<bool>,
    /// `false` deletes the partition; default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_exist: Option<bool>,
    /// Size in MiB; 0 = largest free block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "sizeMiB")]
    pub size_mib: Option<i64>,
    /// Start in MiB; 0 = start of the largest free block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "startMiB")]
    pub start_mib: Option<i64>,
    /// Partition type GUID; default Linux filesystem data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    /// Allow deleting/recreating a mismatching partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_partition_entry: Option<bool>,
}

/// `storage.filesystems[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filesystem {
    /// Absolute device path (required).
    #[serde(default)]
    pub device: String,
    /// ext4, btrfs, xfs, vfat, swap or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Filesystem label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Mount options used while provisioning (3.1+), appended on merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
    /// mkfs options, appended on merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Mount point relative to the target root while provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Filesystem UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Wipe an existing filesystem instead of reusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_filesystem: Option<bool>,
}

/// `storage.raid[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Raid {
    /// Member devices (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// RAID level (required): linear, raid0, raid1, raid4, raid5, raid6, raid10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Array name (required).
    #[serde(default)]
    pub name: String,
    /// Extra mdadm arguments, appended on merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Number of spares (not for linear/raid0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spares: Option<i64>,
}

/// `storage.luks[]` (3.2+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Luks {
    /// IBM CEX secure key (3.5+).
    #[serde(default, skip_serializing_if = "Cex::is_empty")]
    pub cex: Cex,
    /// Clevis binding.
    #[serde(default, skip_serializing_if = "Clevis::is_empty")]
    pub clevis: Clevis,
    /// Underlying device (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Pass discards through (3.4+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<bool>,
    /// Key file; absent = random key stored at `/etc/luks/<name>`.
    #[serde(default, skip_serializing_if = "Resource::is_empty")]
    pub key_file: Resource,
    /// LUKS label, at most 47 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Mapped device name (required, no '/').
    #[serde(default)]
    pub name: String,
    /// Options for opening (3.4+).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_options: Vec<String>,
    /// Options for luksFormat, appended on merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Volume UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Wipe an existing volume instead of reusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_volume: Option<bool>,
}

/// `storage.luks[].cex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cex {
    /// Use a CEX secure key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `storage.luks[].clevis`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clevis {
    /// Custom pin (excludes tang/tpm2/threshold).
    #[serde(default, skip_serializing_if = "ClevisCustom::is_empty")]
    pub custom: ClevisCustom,
    /// Tang servers, keyed by url.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tang: Vec<Tang>,
    /// Number of pins required; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// Bind to the TPM2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm2: Option<bool>,
}

/// `storage.luks[].clevis.custom`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClevisCustom {
    /// Clevis JSON config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The pin needs the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_network: Option<bool>,
    /// Pin name: tpm2, tang or sss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// `storage.luks[].clevis.tang[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tang {
    /// Tang advertisement JSON (3.4+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertisement: Option<String>,
    /// Server key thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Server URL (required).
    #[serde(default)]
    pub url: String,
}

/// The `systemd` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Systemd {
    /// Units, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    /// Unit file contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// Drop-ins, keyed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropins: Vec<Dropin>,
    /// Enable (true) / disable (false) via presets; absent = leave alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Mask (symlink to /dev/null) or unmask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<bool>,
    /// Unit name with a valid suffix (required).
    #[serde(default)]
    pub name: String,
}

/// `systemd.units[].dropins[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropin {
    /// Drop-in contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// Drop-in name ending in `.conf` (required).
    #[serde(default)]
    pub name: String,
}

macro_rules! impl_is_empty {
    ($($t:ty),* $(,)?) => {$(
        impl $t {
            /// True when every field has its default (absent) value.
            pub fn is_empty(&self) -> bool {
                *self == Self::default()
            }
        }
    )*};
}

impl_is_empty!(
    KernelArguments,
    Passwd,
    Storage,
    Systemd,
    IgnitionConfig,
    Proxy,
    Security,
    Tls,
    Timeouts,
    Resource,
    Verification,
    NodeUser,
    NodeGroup,
    Cex,
    Clevis,
    ClevisCustom,
);
