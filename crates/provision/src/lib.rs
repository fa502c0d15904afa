//! First-boot provisioning: config providers and the apply engine for a target root.
