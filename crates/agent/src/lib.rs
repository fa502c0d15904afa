//! keelson-agent: the node update agent.
//!
//! [`settings`] merges the node's settings files into one [`settings::Settings`]; [`state`] is
//! the agent's life as one `State` with a pure transition function and an atomic store;
//! [`omaha`] speaks Omaha to keelson-server as update_engine does; [`apply`] downloads a
//! payload chunk by chunk into the inactive usr slot and installs its UKI; [`boot`] finds the
//! running slot and assesses the boot; [`esp`] names and cleans boot entries; [`window`] and
//! [`reboot`] decide when to reboot; [`extensions`] keeps system extensions up to date (with the
//! OS or on their own); [`agent`] ties them together for the daemon and the CLI.
//! Every path comes from [`paths::Paths`], so all of it runs against temp dirs in tests.

pub mod agent;
pub mod apply;
pub mod boot;
pub mod chunks;
pub mod esp;
pub mod etcd;
pub mod extensions;
pub mod failpoint;
pub mod fsio;
pub mod lock;
pub mod omaha;
pub mod paths;
pub mod reboot;
pub mod settings;
pub mod state;
pub mod window;
