//! Channels: a named pointer to one package of an application, plus floor packages.
//!
//! Each change is one function that owns its transaction and writes its activity row there:
//! [`create`], [`update`] (repointing a channel is what starts a rollout), [`delete`]. Reads:
//! [`get`] and [`list`], with the channel's floors.

use keelson_api_types::{ChannelUpdate, NewChannel};
use sqlx::FromRow;

use super::activity::{self, NewActivity, Severity};
use super::packages::id_of_version_in;
use super::{Db, DbError, Tx, now_unix};
use keelson_omaha::normalize_app_id as normalize_id;

/// A stored channel.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
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

const SELECT: &str = "SELECT c.id, c.application_id, c.name, c.package_id, p.version AS package_version, c.created_at \
     FROM channels c LEFT JOIN packages p ON p.id = c.package_id";

/// Channel `name` of `app` (normalized) with its floors: `NotFound` for a missing
/// application (checked first) or channel.
async fn view_in(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<ChannelView, DbError> {
    super::applications::get_on(conn, app).await?;
    let channel = sqlx::query_as::<_, Channel>(&format!(
        "{SELECT} WHERE c.application_id = $1 AND c.name = $2"
    ))
    .bind(app)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(DbError::query("reading a channel"))?
    .ok_or_else(|| DbError::NotFound {
        what: "channel",
        key: name.to_string(),
    })?;
    let floors = floor_versions_in(conn, channel.id).await?;
    Ok(ChannelView { channel, floors })
}

/// The versions of channel `id`'s floor packages, ascending ([`keelson_version::compare`]).
async fn floor_versions_in(
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

/// Channel `name` of application `application_id` (any spelling) with its floors; `NotFound`
/// for a missing application (checked first) or channel. One read transaction.
pub async fn get(db: &Db, application_id: &str, name: &str) -> Result<ChannelView, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let view = view_in(&mut tx, &app, name).await?;
    tx.commit()
        .await
        .map_err(DbError::query("ending the channel read"))?;
    Ok(view)
}

/// Every channel of application `application_id` (any spelling) with its floors, by name;
/// `NotFound` without the application. One read transaction.
pub async fn list(db: &Db, application_id: &str) -> Result<Vec<ChannelView>, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let channels = sqlx::query_as::<_, Channel>(&format!(
        "{SELECT} WHERE c.application_id = $1 ORDER BY c.name"
    ))
    .bind(&app)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::query("listing channels"))?;
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        let floors = floor_versions_in(&mut tx, channel.id).await?;
        out.push(ChannelView { channel, floors });
    }
    tx.commit()
        .await
        .map_err(DbError::query("ending the channel list read"))?;
    Ok(out)
}

/// The id of channel `name` of application `application_id` (normalized), if it exists
/// (inside the caller's connection or transaction).
pub(super) async fn id_by_name(
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

/// The package id of `version` (or none) of `app`; the error names `version`.
async fn package_of(tx: &mut Tx, app: &str, version: Option<&str>) -> Result<Option<i64>, DbError> {
    match version {
        Some(v) => Ok(Some(id_of_version_in(tx, app, v, "version").await?)),
        None => Ok(None),
    }
}

/// Replace channel `id`'s floors with the packages of `floors` (each named once, each a
/// package of `app`; errors name `floors[i]`).
async fn replace_floors_in(
    tx: &mut Tx,
    app: &str,
    id: i64,
    floors: &[String],
) -> Result<(), DbError> {
    let mut ids = Vec::with_capacity(floors.len());
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in floors.iter().enumerate() {
        let field = format!("floors[{i}]");
        if !seen.insert(v.as_str()) {
            return Err(DbError::DuplicateFloor {
                field,
                version: v.clone(),
            });
        }
        ids.push(id_of_version_in(tx, app, v, &field).await?);
    }
    sqlx::query("DELETE FROM channel_floors WHERE channel_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(DbError::query("clearing channel floors"))?;
    for pkg in ids {
        sqlx::query("INSERT INTO channel_floors (channel_id, package_id) VALUES ($1, $2)")
            .bind(id)
            .bind(pkg)
            .execute(&mut **tx)
            .await
            .map_err(DbError::query("adding a channel floor"))?;
    }
    Ok(())
}

/// Create channel `new.name` of application `application_id` (any spelling), pointing at the
/// package of `new.version` (or none) with the floors `new.floors`, in one transaction with its
/// `channel.created` row. `NotFound` without the application, `UnknownPackage` or
/// `DuplicateFloor` naming the field, `Conflict` when the name is taken.
pub async fn create(
    db: &Db,
    actor: &str,
    application_id: &str,
    new: &NewChannel,
) -> Result<ChannelView, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    super::applications::get_on(&mut tx, &app).await?;
    let pkg = package_of(&mut tx, &app, new.version.as_deref()).await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO channels (application_id, name, package_id, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&app)
    .bind(&new.name)
    .bind(pkg)
    .bind(now_unix())
    .fetch_one(&mut *tx)
    .await
    .map_err(DbError::unique("channel", &new.name))?;
    replace_floors_in(&mut tx, &app, id, &new.floors).await?;
    activity::insert(
        &mut tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "channel.created",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: new.version.as_deref(),
            message: format!(
                "channel {} created at version {}",
                new.name,
                new.version.as_deref().unwrap_or("(none)")
            ),
        },
    )
    .await?;
    let view = view_in(&mut tx, &app, &new.name).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing channel"))?;
    Ok(view)
}

/// Repoint channel `name` of application `application_id` (any spelling) at the package of
/// `change.version` (`Some(None)`: no package; this is what starts a rollout in every group
/// following it) and/or replace its floors, in one transaction with its `channel.updated` row.
/// `NotFound`, `UnknownPackage` or `DuplicateFloor` naming the field.
pub async fn update(
    db: &Db,
    actor: &str,
    application_id: &str,
    name: &str,
    change: &ChannelUpdate,
) -> Result<ChannelView, DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let current = view_in(&mut tx, &app, name).await?;
    let id = current.channel.id;
    if let Some(version) = &change.version {
        let pkg = package_of(&mut tx, &app, version.as_deref()).await?;
        sqlx::query("UPDATE channels SET package_id = $1 WHERE id = $2")
            .bind(pkg)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("updating a channel"))?;
    }
    if let Some(floors) = &change.floors {
        replace_floors_in(&mut tx, &app, id, floors).await?;
    }
    let updated = view_in(&mut tx, &app, name).await?;
    let now_at = updated.channel.package_version.as_deref();
    activity::insert(
        &mut tx,
        &NewActivity {
            severity: Severity::Info,
            kind: "channel.updated",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: now_at,
            message: format!(
                "channel {name} now at version {} (was {}), floors [{}]",
                now_at.unwrap_or("(none)"),
                current
                    .channel
                    .package_version
                    .as_deref()
                    .unwrap_or("(none)"),
                updated.floors.join(", ")
            ),
        },
    )
    .await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing channel"))?;
    Ok(updated)
}

/// Delete channel `name` of application `application_id` (any spelling) with its floors in one
/// transaction with its `channel.deleted` row; the groups following it are left without a
/// channel. `NotFound` for a missing application (checked first) or channel.
pub async fn delete(db: &Db, actor: &str, application_id: &str, name: &str) -> Result<(), DbError> {
    let app = normalize_id(application_id);
    let mut tx = db.begin().await?;
    let current = view_in(&mut tx, &app, name).await?;
    for sql in [
        "DELETE FROM channel_floors WHERE channel_id = $1",
        "UPDATE groups SET channel_id = NULL WHERE channel_id = $1",
        "DELETE FROM channels WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(current.channel.id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("deleting a channel"))?;
    }
    activity::record_and_commit(
        tx,
        &NewActivity {
            severity: Severity::Warning,
            kind: "channel.deleted",
            actor,
            application_id: Some(&app),
            group_id: None,
            version: None,
            message: format!("channel {name} deleted"),
        },
        "committing channel delete",
    )
    .await
}
