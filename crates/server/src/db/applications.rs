//! Applications: what nodes name in `<app appid=...>`.

use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::{Db, DbError, now_unix};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored application.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Application {
    /// Normalised id: lowercase, without braces.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Check an application id (after normalising): 1..=128 of `[a-z0-9._-]`.
fn validate_id(id: &str) -> Result<(), DbError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DbError::Invalid {
            field: "id",
            value: id.to_string(),
            reason: "must be 1-128 characters of a-z, 0-9, '.', '_', '-' (braces are removed)"
                .into(),
        })
    }
}

fn validate_name(field: &'static str, name: &str) -> Result<(), DbError> {
    if name.trim().is_empty()
        || name.len() > 200
        || name.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(DbError::Invalid {
            field,
            value: name.to_string(),
            reason: "must be 1-200 printable characters (newlines allowed)".into(),
        });
    }
    Ok(())
}

const COLS: &str = "id, name, description, created_at";

/// All applications, by name.
pub async fn list(db: &Db) -> Result<Vec<Application>, DbError> {
    sqlx::query_as::<_, Application>(&format!(
        "SELECT {COLS} FROM applications ORDER BY name, id"
    ))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing applications"))
}

/// One application by id (braces and case do not matter).
pub async fn get(db: &Db, id: &str) -> Result<Application, DbError> {
    let id = normalize_id(id);
    sqlx::query_as::<_, Application>(&format!("SELECT {COLS} FROM applications WHERE id = $1"))
        .bind(&id)
        .fetch_optional(db.pool())
        .await
        .map_err(DbError::query("reading application"))?
        .ok_or(DbError::NotFound {
            what: "application",
            key: id,
        })
}

/// One application by its normalized id, on a given connection or transaction (so a handler
/// can read it inside the transaction that changes it).
pub(super) async fn get_on(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Application, DbError> {
    sqlx::query_as::<_, Application>(&format!("SELECT {COLS} FROM applications WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(DbError::query("reading application"))?
        .ok_or_else(|| DbError::NotFound {
            what: "application",
            key: id.to_string(),
        })
}

/// Create an application.
pub async fn create(
    db: &Db,
    actor: &str,
    id: &str,
    name: &str,
    description: &str,
) -> Result<Application, DbError> {
    let id = normalize_id(id);
    validate_id(&id)?;
    validate_name("name", name)?;
    let app = Application {
        id: id.clone(),
        name: name.to_string(),
        description: description.to_string(),
        created_at: now_unix(),
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO applications (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&app.id)
    .bind(&app.name)
    .bind(&app.description)
    .bind(app.created_at)
    .execute(&mut *tx)
    .await
    .map_err(DbError::unique("application", &id))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "application.created",
            actor,
            application_id: Some(&id),
            group_id: None,
            version: None,
            message: format!("application {id} ({name}) created"),
        },
        "committing application",
    )
    .await?;
    Ok(app)
}

/// Change an application's name and/or description (`None` keeps the value) in one
/// transaction with its `application.updated` row; `NotFound` if it does not exist.
pub async fn update(
    db: &Db,
    actor: &str,
    id: &str,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Application, DbError> {
    let id = normalize_id(id);
    if let Some(name) = name {
        validate_name("name", name)?;
    }
    let mut tx = db.begin().await?;
    let mut app = get_on(&mut tx, &id).await?;
    if let Some(name) = name {
        app.name = name.to_string();
    }
    if let Some(d) = description {
        app.description = d.to_string();
    }
    sqlx::query("UPDATE applications SET name = $1, description = $2 WHERE id = $3")
        .bind(&app.name)
        .bind(&app.description)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("updating application"))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "application.updated",
            actor,
            application_id: Some(&id),
            group_id: None,
            version: None,
            message: format!("application {id} updated"),
        },
        "committing application",
    )
    .await?;
    Ok(app)
}

/// Delete an application and everything under it (floors, instances, groups, channels,
/// packages and their extensions) in one transaction with its `application.deleted` row;
/// `NotFound` if it does not exist. Returns the stored file names of its packages' payloads
/// and extensions.
pub async fn delete(db: &Db, actor: &str, id: &str) -> Result<Vec<String>, DbError> {
    let id = normalize_id(id);
    let mut tx = db.begin().await?;
    get_on(&mut tx, &id).await?;
    let files: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT stored_path FROM packages WHERE application_id = $1")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await
            .map_err(DbError::query("listing application packages"))?;
    let extension_files = super::extensions::files_of_application(&mut tx, &id).await?;
    // Children first: SQLite only cascades with foreign_keys on, and explicit deletes keep both
    // backends identical.
    for sql in [
        "DELETE FROM channel_floors WHERE channel_id IN (SELECT id FROM channels WHERE application_id = $1)",
        "DELETE FROM instances WHERE application_id = $1",
        "DELETE FROM groups WHERE application_id = $1",
        "DELETE FROM channels WHERE application_id = $1",
        "DELETE FROM package_extensions WHERE package_id IN (SELECT id FROM packages WHERE application_id = $1)",
        "DELETE FROM packages WHERE application_id = $1",
        "DELETE FROM applications WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("deleting application"))?;
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "application.deleted",
            actor,
            application_id: Some(&id),
            group_id: None,
            version: None,
            message: format!("application {id} deleted"),
        },
        "committing application delete",
    )
    .await?;
    Ok(files
        .into_iter()
        .filter_map(|(f,)| f)
        .chain(extension_files)
        .collect())
}
