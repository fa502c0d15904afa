//! OS-bound system extensions: `.raw` files attached to one package (one OS version), at most
//! one per extension name. The Omaha answer that grants the package lists each as an extra
//! `<package name="{name}.raw" required="false">` after the payload (see
//! `crate::omaha_endpoint`), and `/packages/{package id}/{name}.raw` serves it
//! (`crate::packages`). Extension files are always stored on this server.

use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, now_unix};
use keelson_api_types::extension_name_problem;
use keelson_omaha::normalize_app_id as normalize_id;

/// An extension file attached to a package.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Extension {
    /// Row id.
    pub id: i64,
    /// The package (OS version) it belongs to.
    pub package_id: i64,
    /// Extension (systemd image) name.
    pub name: String,
    /// File name under the data dir.
    pub stored_path: String,
    /// File size in bytes.
    pub size: i64,
    /// SHA-1 of the file, hex.
    pub sha1_hex: String,
    /// SHA-256 of the file, hex.
    pub sha256_hex: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl Extension {
    /// The file name nodes download it as: `{name}.raw` under the payload's codebase.
    pub fn file_name(&self) -> String {
        format!("{}.raw", self.name)
    }
}

/// An uploaded extension file to attach.
#[derive(Clone, Debug)]
pub struct NewExtension {
    /// Extension name ([`keelson_api_types::extension_name_problem`]).
    pub name: String,
    /// File name under the data dir (already in place).
    pub stored_path: String,
    /// File size in bytes (> 0).
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

/// Check an extension name; the error names the `name` field.
pub fn validate_name(name: &str) -> Result<(), DbError> {
    match extension_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(invalid("name", name, reason)),
    }
}

impl NewExtension {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), DbError> {
        validate_name(&self.name)?;
        if self.stored_path.is_empty()
            || self.stored_path.contains('/')
            || self.stored_path.starts_with('.')
        {
            return Err(invalid(
                "stored_path",
                &self.stored_path,
                "must be a file name under the data dir",
            ));
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

const COLS: &str = "id, package_id, name, stored_path, size, sha1_hex, sha256_hex, created_at";

/// Sort by name, bytewise (the same on both backends, whatever PostgreSQL's collation).
fn sorted(mut v: Vec<Extension>) -> Vec<Extension> {
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The extensions of package `package_id`, sorted by name (inside the caller's transaction).
pub(super) async fn of_package(
    conn: &mut sqlx::AnyConnection,
    package_id: i64,
) -> Result<Vec<Extension>, DbError> {
    let v = sqlx::query_as::<_, Extension>(&format!(
        "SELECT {COLS} FROM package_extensions WHERE package_id = $1"
    ))
    .bind(package_id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("listing package extensions"))?;
    Ok(sorted(v))
}

/// The extensions of every package of application `application_id` (normalized), sorted by
/// name (inside the caller's transaction).
pub(super) async fn of_application(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
) -> Result<Vec<Extension>, DbError> {
    let v = sqlx::query_as::<_, Extension>(&format!(
        "SELECT {} FROM package_extensions e JOIN packages p ON p.id = e.package_id \
         WHERE p.application_id = $1",
        COLS.split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(application_id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query(
        "listing the application's package extensions",
    ))?;
    Ok(sorted(v))
}

/// The stored file names of every extension of application `application_id` (normalized),
/// for removing them after the application is deleted (inside the caller's transaction).
pub(super) async fn files_of_application(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
) -> Result<Vec<String>, DbError> {
    let v: Vec<(String,)> = sqlx::query_as(
        "SELECT e.stored_path FROM package_extensions e JOIN packages p ON p.id = e.package_id \
         WHERE p.application_id = $1",
    )
    .bind(application_id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("listing the application's extension files"))?;
    Ok(v.into_iter().map(|(s,)| s).collect())
}

/// Check that extension `name` can be attached to the package of `application_id` (any
/// spelling) at `version`, before the caller reads a possibly large upload: `NotFound` for a
/// missing application or package, `Invalid` (field `version`) for an external package or
/// (field `name`) a bad name or one whose `{name}.raw` is the payload's own file name,
/// `Conflict` when the package already has that extension. One read transaction.
pub async fn check_attachable(
    db: &Db,
    application_id: &str,
    version: &str,
    name: &str,
) -> Result<(), DbError> {
    validate_name(name)?;
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    check_on(&mut tx, &app, version, name).await?;
    tx.commit()
        .await
        .map_err(DbError::query("ending the extension check read"))
}

/// [`check_attachable`] inside a transaction; returns the package id.
async fn check_on(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    version: &str,
    name: &str,
) -> Result<i64, DbError> {
    super::applications::get_on(conn, app).await?;
    let pkg = super::packages::by_version(conn, app, version)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "package",
            key: version.to_string(),
        })?;
    if pkg.stored_path.is_none() {
        return Err(invalid(
            "version",
            version,
            "the package's payload is hosted at an external URL; extensions are served from the payload's codebase, so attach them to a package uploaded to this server",
        ));
    }
    if pkg.filename == format!("{name}.raw") {
        return Err(invalid(
            "name",
            name,
            &format!("{name}.raw is the package's payload file name"),
        ));
    }
    let taken: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM package_extensions WHERE package_id = $1 AND name = $2")
            .bind(pkg.id)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(DbError::query("looking up a package extension"))?;
    if taken.is_some() {
        return Err(DbError::Conflict {
            what: "extension",
            key: name.to_string(),
        });
    }
    Ok(pkg.id)
}

/// Attach an uploaded extension file to the package of `application_id` (any spelling) at
/// `version`, in one transaction with a `package.extension_added` activity row. Refused as
/// [`check_attachable`] says. The caller removes the stored file when this fails.
pub async fn attach(
    db: &Db,
    actor: &str,
    application_id: &str,
    version: &str,
    new: &NewExtension,
) -> Result<Extension, DbError> {
    new.validate()?;
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let package_id = check_on(&mut tx, &app, version, &new.name).await?;
    let created_at = now_unix();
    let sha1_hex = new.sha1_hex.to_ascii_lowercase();
    let sha256_hex = new.sha256_hex.to_ascii_lowercase();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO package_extensions (package_id, name, stored_path, size, sha1_hex, sha256_hex, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(package_id)
    .bind(&new.name)
    .bind(&new.stored_path)
    .bind(new.size)
    .bind(&sha1_hex)
    .bind(&sha256_hex)
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("extension", &new.name))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "package.extension_added",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: Some(version),
            message: format!(
                "extension {} attached to package {version} ({} bytes, sha256 {sha256_hex})",
                new.name, new.size
            ),
        },
        "committing package extension",
    )
    .await?;
    Ok(Extension {
        id,
        package_id,
        name: new.name.clone(),
        stored_path: new.stored_path.clone(),
        size: new.size,
        sha1_hex,
        sha256_hex,
        created_at,
    })
}

/// Remove extension `name` from the package of `application_id` (any spelling) at
/// `version`, in one transaction with a `package.extension_removed` activity row. `NotFound`
/// for a missing application, package or extension. Returns the row so the caller can
/// remove the stored file after the commit.
pub async fn remove(
    db: &Db,
    actor: &str,
    application_id: &str,
    version: &str,
    name: &str,
) -> Result<Extension, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let pkg = super::packages::by_version(&mut tx, &app, version)
        .await?
        .ok_or_else(|| DbError::NotFound {
            what: "package",
            key: version.to_string(),
        })?;
    let ext = sqlx::query_as::<_, Extension>(&format!(
        "SELECT {COLS} FROM package_extensions WHERE package_id = $1 AND name = $2"
    ))
    .bind(pkg.id)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(DbError::query("looking up a package extension"))?
    .ok_or_else(|| DbError::NotFound {
        what: "extension",
        key: name.to_string(),
    })?;
    sqlx::query("DELETE FROM package_extensions WHERE id = $1")
        .bind(ext.id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("deleting a package extension"))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "package.extension_removed",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: Some(version),
            message: format!("extension {name} removed from package {version}"),
        },
        "committing package extension removal",
    )
    .await?;
    Ok(ext)
}
