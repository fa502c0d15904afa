//! The server's database: one `sqlx::Any` pool over SQLite or PostgreSQL.
//!
//! Approach (see docs/rollout-policy.md, "Storage"): every query is written once in SQL that
//! runs unchanged on both backends (`$1` placeholders, which SQLite also accepts; BIGINT unix
//! seconds for time; BIGINT 0/1 for flags; `RETURNING id`). Only the DDL differs, so there are
//! two plain-SQL migration sets, `migrations/sqlite` and `migrations/postgres`, embedded in the
//! binary and applied at start. Every change runs in one transaction together with its
//! activity-log row (`activity::insert`), inside the one function of that operation (e.g.
//! [`channels::create`], [`groups::change_policy`]): callers outside `db/` open no
//! transaction and run no SQL.

pub mod activity;
pub mod applications;
pub mod channels;
pub mod extensions;
pub mod fleetlock;
pub mod groups;
pub mod instances;
pub mod metrics;
pub mod packages;
pub mod rollout;
pub mod tokens;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// A transaction on either backend.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Errors from the database layer; each names what was being read or written.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database URL is not one we support.
    #[error("unsupported database URL {url:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// Connecting failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("applying {backend} migrations: {source}")]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The migrator error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database error while {what}: {source}")]
    Query {
        /// What the query was doing, e.g. "inserting group".
        what: &'static str,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A row that must exist does not.
    #[error("{what} {key:?} not found")]
    NotFound {
        /// The kind of object, e.g. "group".
        what: &'static str,
        /// The key that was looked up.
        key: String,
    },
    /// A unique key is already taken.
    #[error("{what} {key:?} already exists")]
    Conflict {
        /// The kind of object, e.g. "channel".
        what: &'static str,
        /// The duplicated key.
        key: String,
    },
    /// A field value is invalid.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field name as the API spells it.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A row cannot be deleted while others point at it.
    #[error("{what} {key} is used by channel(s) {users}; repoint them first")]
    InUse {
        /// The kind of object, e.g. "package".
        what: &'static str,
        /// Its key, e.g. the version.
        key: String,
        /// The names of the channels pointing at it, comma-separated.
        users: String,
    },
    /// A request names a package version its application does not have.
    #[error("{field}: application {application} has no package with version {version:?}")]
    UnknownPackage {
        /// The request field naming it, e.g. `version`, `floors[2]`, `pinned_version`.
        field: String,
        /// The application (normalized).
        application: String,
        /// The version asked for.
        version: String,
    },
    /// A request names a channel its application does not have.
    #[error("channel: application {application} has no channel {name:?}")]
    UnknownChannel {
        /// The application (normalized).
        application: String,
        /// The channel name asked for.
        name: String,
    },
    /// A channel's floor list names one version twice.
    #[error("floor {version:?} is listed twice")]
    DuplicateFloor {
        /// The request field of the second mention, e.g. `floors[1]`.
        field: String,
        /// The version.
        version: String,
    },
    /// Another group of the application already uses the track.
    #[error("track {track:?} is already used by group {group:?}")]
    TrackTaken {
        /// The track asked for.
        track: String,
        /// The group that has it.
        group: String,
    },
    /// A rollout policy value the grant engine refuses.
    #[error("{}: {}", .0.field, .0.reason)]
    Policy(#[from] crate::grant::PolicyError),
    /// A row held a value this version cannot interpret (e.g. bad JSON in a column).
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// The column or object.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl DbError {
    /// Wrap a driver error, turning unique violations into [`DbError::Conflict`].
    fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
        move |source| DbError::Query { what, source }
    }

    /// Like [`DbError::query`] but a unique-constraint violation becomes `Conflict { key }`.
    fn unique(what: &'static str, key: &str) -> impl FnOnce(sqlx::Error) -> DbError {
        let key = key.to_string();
        move |source| {
            let is_unique = source
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation());
            if is_unique {
                DbError::Conflict { what, key }
            } else {
                DbError::Query { what, source }
            }
        }
    }
}

/// Which backend a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A handle on the database: cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Remove the password from a URL before it goes into an error or a log line.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Connect to `url` (`sqlite://PATH`, created if missing, or `postgres://...`) and apply
    /// the migrations.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut u = url.to_string();
            if !rest.contains("mode=") {
                u.push(if rest.contains('?') { '&' } else { '?' });
                u.push_str("mode=rwc");
            }
            (Backend::Sqlite, u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(DbError::UnsupportedUrl { url: shown });
        };
        let opts = AnyConnectOptions::from_str(&url).map_err(|source| DbError::Connect {
            url: shown.clone(),
            source,
        })?;
        let pool_opts = match backend {
            // SQLite has one writer; a single connection avoids lock-upgrade deadlocks between
            // concurrent transactions and makes every transaction serializable.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
        };
        let pool = pool_opts
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|source| DbError::Connect {
                url: shown.clone(),
                source,
            })?;
        let (migrator, name) = match backend {
            Backend::Sqlite => (&SQLITE_MIGRATIONS, "sqlite"),
            Backend::Postgres => (&POSTGRES_MIGRATIONS, "postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                backend: name,
                source,
            })?;
        Ok(Db { pool })
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Start a transaction; every change goes through one. Private to `db/`: only its
    /// functions open transactions.
    async fn begin(&self) -> Result<Tx, DbError> {
        self.pool
            .begin()
            .await
            .map_err(DbError::query("starting a transaction"))
    }
}

/// Current time as unix seconds (the unit of every timestamp column).
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Convert a flag column (BIGINT 0/1) to bool.
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://./k.db"), "sqlite://./k.db");
    }
}
