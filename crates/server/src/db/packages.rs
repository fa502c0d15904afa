//! Packages: one payload per application version, stored here or at an external URL.

use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::extensions::{self, Extension};
use super::{Db, DbError, now_unix};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored package. The REST API's `Package` (see `crate::wire`) shows `stored` and
/// `download_path` instead of the server-internal `stored_path`.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
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
    /// Its OS-bound extension files, sorted by name (filled in by [`list`], [`get`],
    /// [`get_version`] and the grant; not a column).
    #[sqlx(skip)]
    pub extensions: Vec<Extension>,
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

impl Package {
    /// Where this server serves a stored payload (`/packages/{id}/{filename}`); `None` if
    /// the payload is external.
    pub fn download_path(&self) -> Option<String> {
        self.stored_path
            .as_ref()
            .map(|_| format!("/packages/{}/{}", self.id, self.filename))
    }
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

/// Check a payload file name the client appends to a URL: 1-255 bytes, no path separators,
/// `?`, `#` or spaces, no leading dot, no control characters (the REST API's rule).
fn validate_filename(name: &str) -> Result<(), DbError> {
    let ok = !name.trim().is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '?', '#', ' '])
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(invalid("filename", name, "must be a plain file name"))
    }
}

impl NewPackage {
    /// Check every field; the error names the first bad one. The REST API checks the same
    /// fields first with its own messages; this keeps other callers from storing rows the
    /// Omaha endpoint could not serve.
    pub fn validate(&self) -> Result<(), DbError> {
        if self.version.is_empty() || !self.version.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid("version", &self.version, "must look like 3975.2.0"));
        }
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
        // SHA-1 is optional for external payloads (today's update_engine ignores it).
        if !(self.sha1_hex.is_empty() || is_hex(&self.sha1_hex, 40)) {
            return Err(invalid("sha1", &self.sha1_hex, "must be 40 hex digits"));
        }
        if !is_hex(&self.sha256_hex, 64) {
            return Err(invalid("sha256", &self.sha256_hex, "must be 64 hex digits"));
        }
        Ok(())
    }
}

const COLS: &str = "id, application_id, version, filename, url, stored_path, size, sha1_hex, sha256_hex, created_at";

/// Packages of application `application_id` (any spelling) with their extensions, newest
/// version first ([`keelson_version::compare`]); `NotFound` if the application does not
/// exist. One read transaction.
pub async fn list(db: &Db, application_id: &str) -> Result<Vec<Package>, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let mut v = sqlx::query_as::<_, Package>(&format!(
        "SELECT {COLS} FROM packages WHERE application_id = $1"
    ))
    .bind(&app)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("listing packages"))?;
    let mut exts = extensions::of_application(&mut tx, &app).await?;
    for p in &mut v {
        // `exts` is sorted by name, so each package's share stays sorted.
        let (mine, rest) = exts.into_iter().partition(|e| e.package_id == p.id);
        p.extensions = mine;
        exts = rest;
    }
    tx.commit()
        .await
        .map_err(DbError::query("ending the package list read"))?;
    v.sort_by(|a, b| keelson_version::compare(&b.version, &a.version));
    Ok(v)
}

/// One package by id, with its extensions. One read transaction.
pub async fn get(db: &Db, id: i64) -> Result<Package, DbError> {
    let mut tx = db.begin().await?;
    let mut pkg =
        sqlx::query_as::<_, Package>(&format!("SELECT {COLS} FROM packages WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DbError::query("reading package"))?
            .ok_or(DbError::NotFound {
                what: "package",
                key: id.to_string(),
            })?;
    pkg.extensions = extensions::of_package(&mut tx, pkg.id).await?;
    tx.commit()
        .await
        .map_err(DbError::query("ending the package read"))?;
    Ok(pkg)
}

/// The package of `application_id` at `version`, if any (inside a transaction), without its
/// extensions (see [`with_extensions`]).
pub(super) async fn by_version(
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

/// The id of the package of `application_id` (normalized) at `version`, or
/// [`DbError::UnknownPackage`] naming the request `field` that asked for it.
pub(super) async fn id_of_version_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    version: &str,
    field: &str,
) -> Result<i64, DbError> {
    match by_version(conn, application_id, version).await? {
        Some(p) => Ok(p.id),
        None => Err(DbError::UnknownPackage {
            field: field.to_string(),
            application: application_id.to_string(),
            version: version.to_string(),
        }),
    }
}

/// Fill in `pkg.extensions` (inside a transaction).
pub(super) async fn with_extensions(
    conn: &mut sqlx::AnyConnection,
    mut pkg: Package,
) -> Result<Package, DbError> {
    pkg.extensions = extensions::of_package(conn, pkg.id).await?;
    Ok(pkg)
}

/// The package of application `application_id` (any spelling) at `version`, with its
/// extensions: `NotFound` for a missing application (checked first) or package. One read
/// transaction.
pub async fn get_version(db: &Db, application_id: &str, version: &str) -> Result<Package, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let pkg = match by_version(&mut tx, &app, version).await? {
        Some(p) => Some(with_extensions(&mut tx, p).await?),
        None => None,
    };
    tx.commit()
        .await
        .map_err(DbError::query("ending the package read"))?;
    pkg.ok_or_else(|| DbError::NotFound {
        what: "package",
        key: version.to_string(),
    })
}

/// Create a package (validated first) in one transaction with its activity row: an
/// uploaded payload (`stored_path` set) logs `package.uploaded` with its size and SHA-256,
/// an external one `package.created` with its URL. `NotFound` without the application,
/// `Conflict` (key: the version) when the version exists.
pub async fn create(db: &Db, actor: &str, new: &NewPackage) -> Result<Package, DbError> {
    new.validate()?;
    let app = normalize_id(&new.application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let created_at = now_unix();
    let sha1_hex = new.sha1_hex.to_ascii_lowercase();
    let sha256_hex = new.sha256_hex.to_ascii_lowercase();
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
    .bind(&sha1_hex)
    .bind(&sha256_hex)
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("package", &new.version))?;
    let (kind, message) = match &new.url {
        Some(url) => (
            "package.created",
            format!("package {} added at {url}{}", new.version, new.filename),
        ),
        None => (
            "package.uploaded",
            format!(
                "package {} uploaded ({} bytes, sha256 {sha256_hex})",
                new.version, new.size
            ),
        ),
    };
    activity::insert(
        &mut tx,
        &NewActivity {
            severity: Severity::Info,
            kind,
            actor,
            application_id: Some(&app),
            group_id: None,
            version: Some(&new.version),
            message,
        },
    )
    .await?;
    let pkg = Package {
        id,
        application_id: app,
        version: new.version.clone(),
        filename: new.filename.clone(),
        url: new.url.clone(),
        stored_path: new.stored_path.clone(),
        size: new.size,
        sha1_hex,
        sha256_hex,
        created_at,
        extensions: Vec::new(),
    };
    tx.commit()
        .await
        .map_err(DbError::query("committing package"))?;
    Ok(pkg)
}

/// Delete the package of application `application_id` (any spelling) at `version`, with its
/// channel floors and extensions, in one transaction with a `package.deleted` row. Refused
/// with [`DbError::InUse`] while a channel points at it. Returns the package with its
/// extensions so the caller can remove the stored files after the commit.
pub async fn delete(
    db: &Db,
    actor: &str,
    application_id: &str,
    version: &str,
) -> Result<Package, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let pkg = by_version(&mut tx, &app, version)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "package",
            key: version.to_string(),
        })?;
    let pkg = with_extensions(&mut tx, pkg).await?;
    let users: Vec<(String,)> = sqlx::query_as("SELECT name FROM channels WHERE package_id = $1")
        .bind(pkg.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::query("finding channels of a package"))?;
    if !users.is_empty() {
        return Err(DbError::InUse {
            what: "package",
            key: version.to_string(),
            users: users
                .into_iter()
                .map(|(n,)| n)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    sqlx::query("DELETE FROM channel_floors WHERE package_id = $1")
        .bind(pkg.id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("removing package floors"))?;
    sqlx::query("DELETE FROM package_extensions WHERE package_id = $1")
        .bind(pkg.id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("removing package extensions"))?;
    sqlx::query("DELETE FROM packages WHERE id = $1")
        .bind(pkg.id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("deleting package"))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "package.deleted",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: Some(version),
            message: format!("package {version} deleted"),
        },
        "committing package delete",
    )
    .await?;
    Ok(pkg)
}
