//! System extensions for Keelson (docs/sysext.md): erofs DDIs with a dm-verity tree and an
//! optionally signed root hash ([`ddi`], [`sign`]), the content rules ([`tree`]),
//! systemd-sysext's matching rules ([`release`]), the checks of `keelson sysext check`
//! ([`check`]), Debian packages as extension content ([`deb`]) and systemd-sysupdate
//! publishing ([`publish`]).
//!
//! Tools run through keelson-cmd: mkfs.erofs and fsck.erofs (erofs-utils), openssl, apt-get and
//! dpkg-deb. The verity tree comes from keelson-verity and the GPT from keelson-disk.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod check;
pub mod ddi;
pub mod deb;
pub mod error;
pub mod publish;
pub mod release;
pub mod sign;
pub mod tree;

pub use check::{CheckOptions, CheckReport, check};
pub use ddi::{BuildOutput, BuildSpec, SigningKey, build_from_dir, sign_image};
pub use error::SysextError;
pub use publish::{PublishOptions, publish};
pub use release::{ExtensionRelease, MatchVerdict, ReleaseFile, validate};
