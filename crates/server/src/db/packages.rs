//! Packages: one payload per application version, stored here or at an external URL.

use serde::Serialize;
use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, now_unix};
use keelson_omaha::normalize_app_id as normalize_id;
use keelson_version::Version;

/// A stored package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct Package {
    /// Row id.
    pub id: i64,
    /// Owning application.
    pub application_id: String,
    /// Version it installs.
    pub version: String,
    /// Payload file name (appended to the codebase URL by update_engine).
    pub filename: String,
    /// External codebase URL ending in `/`; `None` when the payload is stored on this server.
    pub url: Option<String>,
    /// File name under the data dir when stored here.
    pub stored_path: Option<String>,
    /// Payload size in bytes.
    pub size: i64,
    /// SHA-1 of the payload, hex.
    pub sha1_hex: String,
    /// SHA-256 of the payload, hex.
    pub sha256_hex: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A package to create.
#[derive(Clone, Debug)]
pub struct NewPackage {
    /// Owning application (any spelling).
    pub application_id: String,
    /// Version it installs.
    pub version: String,
    /// Payload file name.
    pub filename: String,
    /// External codebase URL (must end in `/`), or `None` with `stored_path` set.
    pub url: Option<String>,
    /// File name under the data dir.
    pub stored_path: Option<String>,
    /// Payload size in bytes (> 0).
    pub size: i64,
    /// SHA-1, hex (40 digits).
    pub sha1_hex: String,
    /// SHA-256, hex (64 digits).
    pub sha256_hex: String,
}

fn invalid(field: &'static str, value: &str, reason: &str) -> DbError {
    DbError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Check a payload file name: a plain name, no path parts.
pub fn validate_filename(name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "filename",
            name,
            "must be 1-255 characters of A-Z a-z 0-9 . _ - +",
        ))
    }
}

impl NewPackage {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), DbError> {
        Version::parse(&self.version)
            .map_err(|e| invalid("version", &self.version, &e.to_string()))?;
        validate_filename(&self.filename)?;
        match (&self.url, &self.stored_path) {
            (Some(u), None) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) || !u.ends_with('/') {
                    return Err(invalid(
                        "url",
                        u,
                        "must be an http(s) codebase URL ending in '/'",
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "url",
                    self.url.as_deref().unwrap_or(""),
                    "give either an external URL or an uploaded payload",
                ));
            }
        }
        if self.size <= 0 {
            return Err(invalid("size", &self.size.to_string(), "must be > 0"));
        }
        if !is_hex(&self.sha1_hex, 40) {
            return Err(invalid("sha1", &self.sha1_hex, "must be 40 hex digits"));
        }
        if !is_hex(&self.sha256_hex, 64) {
            return Err(invalid("sha256", &self.sha256_hex, "must be 64 hex digits"));
        }
        Ok(())
    }
}

const COLS: &str = "id, application_id, version, filename, url, stored_path, size, sha1_hex, sha256_hex, created_at";

/// Packages of an application, newest version first.
pub async fn list(db: &Db, application_id: &str) -> Result<Vec<Package>, DbError> {
    let mut v = sqlx::query_as::<_, Package>(&format!(
        "SELECT {COLS} FROM packages WHERE application_id = $1"
    ))
    .bind(normalize_id(application_id))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing packages"))?;
    v.sort_by(|a, b| {
        let va = Version::parse(&a.version).ok();
        let vb = Version::parse(&b.version).ok();
        vb.cmp(&va)
    });
    Ok(v)
}

/// One package by id.
pub async fn get(db: &Db, id: i64) -> Result<Package, DbError> {
    sqlx::query_as::<_, Package>(&format!("SELECT {COLS} FROM packages WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .map_err(DbError::query("reading package"))?
        .ok_or(DbError::NotFound {
            what: "package",
            key: id.to_string(),
        })
}

/// The package of `application_id` at `version`, if any (inside a transaction).
pub async fn by_version(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    version: &str,
) -> Result<Option<Package>, DbError> {
    sqlx::query_as::<_, Package>(&format!(
        "SELECT {COLS} FROM packages WHERE application_id = $1 AND version = $2"
    ))
    .bind(application_id)
    .bind(version)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("reading package by version"))
}

/// Create a package (validated first).
pub async fn create(db: &Db, actor: &str, new: &NewPackage) -> Result<Package, DbError> {
    new.validate()?;
    let app = normalize_id(&new.application_id);
    let mut tx = db.begin().await?;
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM applications WHERE id = $1")
        .bind(&app)
        .fetch_optional(&mut *tx)
        .await
        .map_err(DbError::query("reading application"))?;
    if exists.is_none() {
        return Err(DbError::NotFound {
            what: "application",
            key: app,
        });
    }
    let created_at = now_unix();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO packages (application_id, version, filename, url, stored_path, size, sha1_hex, sha256_hex, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(&app)
    .bind(&new.version)
    .bind(&new.filename)
    .bind(new.url.as_deref())
    .bind(new.stored_path.as_deref())
    .bind(new.size)
    .bind(new.sha1_hex.to_ascii_lowercase())
    .bind(new.sha256_hex.to_ascii_lowercase())
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("package", &format!("{app} {}", new.version)))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "package.created",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: Some(&new.version),
            message: format!("package {} ({} bytes) added", new.version, new.size),
        },
        "committing package",
    )
    .await?;
    get(db, id).await
}

/// Delete a package; returns it so the caller can remove a stored payload after the commit.
pub async fn delete(db: &Db, actor: &str, id: i64) -> Result<Package, DbError> {
    let pkg = get(db, id).await?;
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE channels SET package_id = NULL WHERE package_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("detaching package from channels"))?;
    sqlx::query("DELETE FROM channel_floors WHERE package_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("removing package floors"))?;
    let n = sqlx::query("DELETE FROM packages WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("deleting package"))?
        .rows_affected();
    if n == 0 {
        return Err(DbError::NotFound {
            what: "package",
            key: id.to_string(),
        });
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "package.deleted",
            actor,
            application_id: Some(&pkg.application_id),
            group_id: None,
            version: Some(&pkg.version),
            message: format!("package {} deleted", pkg.version),
        },
        "committing package delete",
    )
    .await?;
    Ok(pkg)
}
