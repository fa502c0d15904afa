//! Channels: a named pointer to one package of an application, plus floor packages.

use serde::Serialize;
use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::applications::validate_name;
use super::packages::Package;
use super::{Db, DbError, Tx, now_unix};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow)]
pub struct Channel {
    /// Row id.
    pub id: i64,
    /// Owning application.
    pub application_id: String,
    /// Name, e.g. `stable`.
    pub name: String,
    /// The package it points to.
    pub package_id: Option<i64>,
    /// That package's version.
    pub package_version: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A channel with the versions of its floors, ascending: what the REST API shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelView {
    /// The channel row.
    pub channel: Channel,
    /// Versions of its floor packages.
    pub floors: Vec<String>,
}

/// Channel `name` of `app` with its floors, if it exists.
pub async fn view_in(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<Option<ChannelView>, DbError> {
    let Some(channel) = by_name_in(conn, app, name).await? else {
        return Ok(None);
    };
    let floors = floor_versions_in(conn, channel.id).await?;
    Ok(Some(ChannelView { channel, floors }))
}

/// Every channel of `app` with its floors, by name.
pub async fn views_in(
    conn: &mut sqlx::AnyConnection,
    app: &str,
) -> Result<Vec<ChannelView>, DbError> {
    let mut out = Vec::new();
    for channel in list_in(conn, app).await? {
        let floors = floor_versions_in(conn, channel.id).await?;
        out.push(ChannelView { channel, floors });
    }
    Ok(out)
}

const SELECT: &str = "SELECT c.id, c.application_id, c.name, c.package_id, p.version AS package_version, c.created_at \
     FROM channels c LEFT JOIN packages p ON p.id = c.package_id";

/// Channels of an application, by name.
pub async fn list(db: &Db, application_id: &str) -> Result<Vec<Channel>, DbError> {
    sqlx::query_as::<_, Channel>(&format!(
        "{SELECT} WHERE c.application_id = $1 ORDER BY c.name"
    ))
    .bind(normalize_id(application_id))
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing channels"))
}

/// One channel by id.
pub async fn get(db: &Db, id: i64) -> Result<Channel, DbError> {
    sqlx::query_as::<_, Channel>(&format!("{SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .map_err(DbError::query("reading channel"))?
        .ok_or(DbError::NotFound {
            what: "channel",
            key: id.to_string(),
        })
}

/// The id of channel `name` of application `application_id` (normalized), if it exists
/// (inside the caller's connection or transaction).
pub async fn id_by_name(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    name: &str,
) -> Result<Option<i64>, DbError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM channels WHERE application_id = $1 AND name = $2")
            .bind(application_id)
            .bind(name)
            .fetch_optional(conn)
            .await
            .map_err(DbError::query("looking up a channel"))?;
    Ok(row.map(|(id,)| id))
}

/// Channel `name` of application `application_id` (normalized), if it exists; on the
/// caller's connection or transaction.
pub async fn by_name_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
    name: &str,
) -> Result<Option<Channel>, DbError> {
    sqlx::query_as::<_, Channel>(&format!(
        "{SELECT} WHERE c.application_id = $1 AND c.name = $2"
    ))
    .bind(application_id)
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(DbError::query("reading a channel"))
}

/// Channels of application `application_id` (normalized), by name; on the caller's
/// connection or transaction.
pub async fn list_in(
    conn: &mut sqlx::AnyConnection,
    application_id: &str,
) -> Result<Vec<Channel>, DbError> {
    sqlx::query_as::<_, Channel>(&format!(
        "{SELECT} WHERE c.application_id = $1 ORDER BY c.name"
    ))
    .bind(application_id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("listing channels"))
}

/// The versions of channel `id`'s floor packages, ascending ([`keelson_version::compare`]).
pub async fn floor_versions_in(
    conn: &mut sqlx::AnyConnection,
    id: i64,
) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT p.version FROM channel_floors f JOIN packages p ON p.id = f.package_id \
         WHERE f.channel_id = $1",
    )
    .bind(id)
    .fetch_all(conn)
    .await
    .map_err(DbError::query("reading channel floors"))?;
    let mut floors: Vec<String> = rows.into_iter().map(|(v,)| v).collect();
    floors.sort_by(|a, b| keelson_version::compare(a, b));
    Ok(floors)
}

/// Insert channel `name` of `application_id` (normalized, checked by the caller) inside the
/// caller's transaction, which also writes the activity row; `Conflict` when the name is
/// taken. Returns the new id.
pub async fn insert_in(
    tx: &mut Tx,
    application_id: &str,
    name: &str,
    package_id: Option<i64>,
) -> Result<i64, DbError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO channels (application_id, name, package_id, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(application_id)
    .bind(name)
    .bind(package_id)
    .bind(now_unix())
    .fetch_one(&mut **tx)
    .await
    .map_err(DbError::unique("channel", name))?;
    Ok(id)
}

/// Point channel `id` at `package_id` (or none) inside the caller's transaction.
pub async fn point_in(tx: &mut Tx, id: i64, package_id: Option<i64>) -> Result<(), DbError> {
    sqlx::query("UPDATE channels SET package_id = $1 WHERE id = $2")
        .bind(package_id)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("updating a channel"))?;
    Ok(())
}

/// Replace channel `id`'s floors with `package_ids` (checked by the caller) inside the
/// caller's transaction.
pub async fn replace_floors_in(tx: &mut Tx, id: i64, package_ids: &[i64]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM channel_floors WHERE channel_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("clearing channel floors"))?;
    for pkg in package_ids {
        sqlx::query("INSERT INTO channel_floors (channel_id, package_id) VALUES ($1, $2)")
            .bind(id)
            .bind(pkg)
            .execute(&mut **tx)
            .await
            .map_err(DbError::query("adding a channel floor"))?;
    }
    Ok(())
}

/// Delete channel `id` with its floors, detaching the groups that follow it, inside the
/// caller's transaction.
pub async fn delete_in(tx: &mut Tx, id: i64) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM channel_floors WHERE channel_id = $1",
        "UPDATE groups SET channel_id = NULL WHERE channel_id = $1",
        "DELETE FROM channels WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(DbError::query("deleting a channel"))?;
    }
    Ok(())
}

async fn check_package(tx: &mut Tx, app: &str, package_id: Option<i64>) -> Result<(), DbError> {
    let Some(pid) = package_id else {
        return Ok(());
    };
    let row: Option<(String,)> =
        sqlx::query_as("SELECT application_id FROM packages WHERE id = $1")
            .bind(pid)
            .fetch_optional(&mut **tx)
            .await
            .map_err(DbError::query("reading package"))?;
    match row {
        None => Err(DbError::NotFound {
            what: "package",
            key: pid.to_string(),
        }),
        Some((a,)) if a != app => Err(DbError::Invalid {
            field: "package_id",
            value: pid.to_string(),
            reason: format!("package belongs to application {a}, not {app}"),
        }),
        Some(_) => Ok(()),
    }
}

/// Create a channel, optionally pointing at a package of the same application.
pub async fn create(
    db: &Db,
    actor: &str,
    application_id: &str,
    name: &str,
    package_id: Option<i64>,
) -> Result<Channel, DbError> {
    let app = normalize_id(application_id);
    validate_name("name", name)?;
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
    check_package(&mut tx, &app, package_id).await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO channels (application_id, name, package_id, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&app)
    .bind(name)
    .bind(package_id)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("channel", name))?;
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "channel.created",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: None,
            message: format!("channel {name:?} created"),
        },
        "committing channel",
    )
    .await?;
    get(db, id).await
}

/// Point a channel at another package (or none): this starts a new rollout in every group that
/// follows the channel.
pub async fn set_package(
    db: &Db,
    actor: &str,
    id: i64,
    package_id: Option<i64>,
) -> Result<Channel, DbError> {
    let ch = get(db, id).await?;
    let mut tx = db.begin().await?;
    check_package(&mut tx, &ch.application_id, package_id).await?;
    sqlx::query("UPDATE channels SET package_id = $1 WHERE id = $2")
        .bind(package_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("updating channel"))?;
    let version: Option<(String,)> = match package_id {
        Some(p) => sqlx::query_as("SELECT version FROM packages WHERE id = $1")
            .bind(p)
            .fetch_optional(&mut *tx)
            .await
            .map_err(DbError::query("reading package"))?,
        None => None,
    };
    let version = version.map(|(v,)| v);
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "channel.updated",
            actor,
            application_id: Some(&ch.application_id),
            group_id: None,
            version: version.as_deref(),
            message: format!(
                "channel {:?} now points to {}",
                ch.name,
                version.as_deref().unwrap_or("no package")
            ),
        },
        "committing channel",
    )
    .await?;
    get(db, id).await
}

/// Delete a channel (groups following it lose their channel).
pub async fn delete(db: &Db, actor: &str, id: i64) -> Result<(), DbError> {
    let ch = get(db, id).await?;
    let mut tx = db.begin().await?;
    for sql in [
        "UPDATE groups SET channel_id = NULL WHERE channel_id = $1",
        "DELETE FROM channel_floors WHERE channel_id = $1",
        "DELETE FROM channels WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("deleting channel"))?;
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "channel.deleted",
            actor,
            application_id: Some(&ch.application_id),
            group_id: None,
            version: None,
            message: format!("channel {:?} deleted", ch.name),
        },
        "committing channel delete",
    )
    .await
}

/// Floor packages of a channel: nodes below a floor get the floor before anything newer.
pub async fn floors(db: &Db, id: i64) -> Result<Vec<Package>, DbError> {
    sqlx::query_as::<_, Package>(
        "SELECT p.id, p.application_id, p.version, p.filename, p.url, p.stored_path, p.size, p.sha1_hex, p.sha256_hex, p.created_at \
         FROM channel_floors f JOIN packages p ON p.id = f.package_id WHERE f.channel_id = $1",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("listing floors"))
}

/// Mark (`floor = true`) or unmark a package as a floor of a channel.
pub async fn set_floor(
    db: &Db,
    actor: &str,
    id: i64,
    package_id: i64,
    floor: bool,
) -> Result<(), DbError> {
    let ch = get(db, id).await?;
    let mut tx = db.begin().await?;
    check_package(&mut tx, &ch.application_id, Some(package_id)).await?;
    sqlx::query("DELETE FROM channel_floors WHERE channel_id = $1 AND package_id = $2")
        .bind(id)
        .bind(package_id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("updating floors"))?;
    if floor {
        sqlx::query("INSERT INTO channel_floors (channel_id, package_id) VALUES ($1, $2)")
            .bind(id)
            .bind(package_id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("updating floors"))?;
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Info,
            kind: if floor {
                "channel.floor_added"
            } else {
                "channel.floor_removed"
            },
            actor,
            application_id: Some(&ch.application_id),
            group_id: None,
            version: None,
            message: format!(
                "package {package_id} {} a floor of channel {:?}",
                if floor { "is now" } else { "is no longer" },
                ch.name
            ),
        },
        "committing floors",
    )
    .await
}
