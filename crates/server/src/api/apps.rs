//! Applications and their channels.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
pub use keelson_api_types::{
    Application, ApplicationUpdate, Channel, ChannelUpdate, NewApplication, NewChannel,
};
use keelson_omaha::normalize_app_id;

use crate::auth::{Caller, RequireAdmin, RequireViewer};
use crate::db::{self, Tx};
use crate::error::ApiError;
use crate::request::{
    Activity, ApiJson, Severity, acquire, begin, check_name, check_text, check_text_opt,
    check_version, commit, load_app, log_activity, package_id,
};
use crate::state::AppState;

/// `GET /api/v1/whoami`: the caller's token ID and role.
pub async fn whoami(RequireViewer(caller): RequireViewer) -> Json<Caller> {
    Json(caller)
}

/// `GET /api/v1/apps`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
) -> Result<Json<Vec<Application>>, ApiError> {
    let apps = crate::db::applications::list(&state.db).await?;
    Ok(Json(apps.into_iter().map(Application::from).collect()))
}

/// `GET /api/v1/apps/{app}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Application>, ApiError> {
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &normalize_app_id(&app)).await.map(Json)
}

/// `POST /api/v1/apps`.
pub async fn create(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    ApiJson(body): ApiJson<NewApplication>,
) -> Result<(StatusCode, Json<Application>), ApiError> {
    let id = normalize_app_id(&body.id);
    check_name("id", &id)?;
    check_text("name", &body.name, 200)?;
    check_text_opt("description", &body.description, 2000)?;
    let app = db::applications::create(
        &state.db,
        &caller.actor(),
        &id,
        &body.name,
        &body.description,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

/// `PUT /api/v1/apps/{app}`.
pub async fn update(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<ApplicationUpdate>,
) -> Result<Json<Application>, ApiError> {
    let id = normalize_app_id(&app);
    if let Some(name) = &body.name {
        check_text("name", name, 200)?;
    }
    if let Some(d) = &body.description {
        check_text_opt("description", d, 2000)?;
    }
    let current = db::applications::update(
        &state.db,
        &caller.actor(),
        &id,
        body.name.as_deref(),
        body.description.as_deref(),
    )
    .await?;
    Ok(Json(current.into()))
}

/// `DELETE /api/v1/apps/{app}`: removes its channels, packages, groups and instances too.
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The API has always left stored payload files in the data directory when deleting an
    // application; the returned names are ignored to keep that behaviour (see the report).
    let _payloads = db::applications::delete(&state.db, &caller.actor(), &app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Load channel `name` of `app` or 404.
pub(crate) async fn load_channel(
    conn: &mut sqlx::AnyConnection,
    app: &str,
    name: &str,
) -> Result<Channel, ApiError> {
    match db::channels::view_in(conn, app, name).await? {
        Some(ch) => Ok(ch.into()),
        None => Err(ApiError::not_found("channel", name)),
    }
}

/// `GET /api/v1/apps/{app}/channels`.
pub async fn list_channels(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Vec<Channel>>, ApiError> {
    let app = normalize_app_id(&app);
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &app).await?;
    let rows = db::channels::views_in(&mut conn, &app).await?;
    Ok(Json(rows.into_iter().map(Channel::from).collect()))
}

/// `GET /api/v1/apps/{app}/channels/{channel}`.
pub async fn get_channel(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, channel)): Path<(String, String)>,
) -> Result<Json<Channel>, ApiError> {
    let app = normalize_app_id(&app);
    let mut conn = acquire(&state).await?;
    load_app(&mut conn, &app).await?;
    load_channel(&mut conn, &app, &channel).await.map(Json)
}

async fn set_floors(
    tx: &mut Tx,
    app: &str,
    channel_id: i64,
    floors: &[String],
) -> Result<(), ApiError> {
    let mut ids = Vec::with_capacity(floors.len());
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in floors.iter().enumerate() {
        let field = format!("floors[{i}]");
        if !seen.insert(v.clone()) {
            return Err(ApiError::invalid(
                &field,
                format!("floor {v:?} is listed twice"),
            ));
        }
        ids.push(package_id(tx, app, v, &field).await?);
    }
    Ok(db::channels::replace_floors_in(tx, channel_id, &ids).await?)
}

/// `POST /api/v1/apps/{app}/channels`.
pub async fn create_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<NewChannel>,
) -> Result<(StatusCode, Json<Channel>), ApiError> {
    let app = normalize_app_id(&app);
    check_name("name", &body.name)?;
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let pkg = match &body.version {
        Some(v) => Some(package_id(&mut tx, &app, v, "version").await?),
        None => None,
    };
    let id = db::channels::insert_in(&mut tx, &app, &body.name, pkg).await?;
    set_floors(&mut tx, &app, id, &body.floors).await?;
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Info,
            kind: "channel.created",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: None,
            version: body.version.as_deref(),
            message: format!(
                "channel {} created at version {}",
                body.name,
                body.version.as_deref().unwrap_or("(none)")
            ),
        },
    )
    .await?;
    let channel = load_channel(&mut tx, &app, &body.name).await?;
    commit(tx).await?;
    Ok((StatusCode::CREATED, Json(channel)))
}

/// `PUT /api/v1/apps/{app}/channels/{channel}`: repoint the channel (this is what starts a
/// rollout) and/or replace its floors.
pub async fn update_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, channel)): Path<(String, String)>,
    ApiJson(body): ApiJson<ChannelUpdate>,
) -> Result<Json<Channel>, ApiError> {
    let app = normalize_app_id(&app);
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let current = load_channel(&mut tx, &app, &channel).await?;
    if let Some(version) = &body.version {
        if let Some(v) = version {
            check_version("version", v)?;
        }
        let pkg = match version {
            Some(v) => Some(package_id(&mut tx, &app, v, "version").await?),
            None => None,
        };
        db::channels::point_in(&mut tx, current.id, pkg).await?;
    }
    if let Some(floors) = &body.floors {
        set_floors(&mut tx, &app, current.id, floors).await?;
    }
    let updated = load_channel(&mut tx, &app, &channel).await?;
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Info,
            kind: "channel.updated",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: None,
            version: updated.version.as_deref(),
            message: format!(
                "channel {channel} now at version {} (was {}), floors [{}]",
                updated.version.as_deref().unwrap_or("(none)"),
                current.version.as_deref().unwrap_or("(none)"),
                updated.floors.join(", ")
            ),
        },
    )
    .await?;
    commit(tx).await?;
    Ok(Json(updated))
}

/// `DELETE /api/v1/apps/{app}/channels/{channel}`: groups on it are left without a channel.
pub async fn delete_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, channel)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = normalize_app_id(&app);
    let mut tx = begin(&state).await?;
    load_app(&mut tx, &app).await?;
    let current = load_channel(&mut tx, &app, &channel).await?;
    db::channels::delete_in(&mut tx, current.id).await?;
    log_activity(
        &mut tx,
        Activity {
            severity: Severity::Warning,
            kind: "channel.deleted",
            actor: &caller.actor(),
            application_id: Some(&app),
            group_id: None,
            version: None,
            message: format!("channel {channel} deleted"),
        },
    )
    .await?;
    commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}
