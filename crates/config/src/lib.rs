//! Provisioning configs: Ignition v3.0-3.6 parsing, validation, translation and the YAML front end.
