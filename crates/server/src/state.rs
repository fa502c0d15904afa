//! Shared state handed to every handler.

use std::path::PathBuf;
use std::sync::Arc;

use crate::db::Db;

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory where uploaded package payloads are stored.
    pub data_dir: PathBuf,
    /// Base URL nodes use to reach this server (e.g. `http://10.0.0.1:8080`); when `None` it is
    /// taken from the request's `Host` header.
    pub public_url: Option<String>,
    /// Largest Omaha request body accepted (bytes); larger ones get 413.
    pub omaha_body_limit: usize,
    /// Largest FleetLock / JSON API body accepted (bytes).
    pub json_body_limit: usize,
    /// Largest package upload accepted (bytes).
    pub upload_limit: u64,
}

impl ServerConfig {
    /// Defaults for a server keeping payloads under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            public_url: None,
            omaha_body_limit: 256 * 1024,
            json_body_limit: 64 * 1024,
            upload_limit: 8 * 1024 * 1024 * 1024,
        }
    }
}

/// Everything a handler needs: the database and the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database (SQLite or PostgreSQL).
    pub db: Db,
    /// Settings fixed at start.
    pub config: Arc<ServerConfig>,
}

impl AppState {
    /// Bundle a database and a configuration.
    pub fn new(db: Db, config: ServerConfig) -> AppState {
        AppState {
            db,
            config: Arc::new(config),
        }
    }
}
