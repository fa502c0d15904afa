//! First-boot provisioning: config providers and the apply engine for a target root.
//!
//! Layers, bottom up: [`http`] (retrying client), [`dataurl`] and [`fetch`] (resources),
//! [`target`] (path resolution that cannot leave the target root), [`passwd`] (the target's
//! account databases), [`providers`] (where the config comes from), [`engine`] (plan and
//! apply each stage) and [`stages`] (the per-stage entry points the initrd will call).
//! Overview: `docs/provisioning-apply.md`.

// Every public item carries a one-line doc (developer guide); keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod dataurl;
pub mod engine;
pub mod fetch;
pub mod http;
pub mod passwd;
pub mod providers;
pub mod result;
pub mod stages;
pub mod target;
