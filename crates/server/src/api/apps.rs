//! Applications and their channels: input checks, then one `db::` call each.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
pub use keelson_api_types::{
    Application, ApplicationUpdate, Channel, ChannelUpdate, NewApplication, NewChannel,
};
use keelson_omaha::normalize_app_id;

use crate::auth::{Caller, RequireAdmin, RequireViewer};
use crate::db;
use crate::error::ApiError;
use crate::request::{ApiJson, check_name, check_text, check_text_opt, check_version};
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
    let apps = db::applications::list(&state.db).await?;
    Ok(Json(apps.into_iter().map(Application::from).collect()))
}

/// `GET /api/v1/apps/{app}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Application>, ApiError> {
    Ok(Json(db::applications::get(&state.db, &app).await?.into()))
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

/// `DELETE /api/v1/apps/{app}`: removes its channels, packages (their stored payloads and
/// extensions included), groups and instances too.
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    let files = db::applications::delete(&state.db, &caller.actor(), &app).await?;
    // Only after the commit, as for one package: its payloads and extensions.
    for name in &files {
        super::packages::remove_stored(&state, name).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/apps/{app}/channels`.
pub async fn list_channels(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Vec<Channel>>, ApiError> {
    let rows = db::channels::list(&state.db, &app).await?;
    Ok(Json(rows.into_iter().map(Channel::from).collect()))
}

/// `GET /api/v1/apps/{app}/channels/{channel}`.
pub async fn get_channel(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, channel)): Path<(String, String)>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(
        db::channels::get(&state.db, &app, &channel).await?.into(),
    ))
}

/// `POST /api/v1/apps/{app}/channels`.
pub async fn create_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<NewChannel>,
) -> Result<(StatusCode, Json<Channel>), ApiError> {
    check_name("name", &body.name)?;
    let channel = db::channels::create(&state.db, &caller.actor(), &app, &body).await?;
    Ok((StatusCode::CREATED, Json(channel.into())))
}

/// `PUT /api/v1/apps/{app}/channels/{channel}`: repoint the channel (this is what starts a
/// rollout) and/or replace its floors.
pub async fn update_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, channel)): Path<(String, String)>,
    ApiJson(body): ApiJson<ChannelUpdate>,
) -> Result<Json<Channel>, ApiError> {
    if let Some(Some(v)) = &body.version {
        check_version("version", v)?;
    }
    let updated = db::channels::update(&state.db, &caller.actor(), &app, &channel, &body).await?;
    Ok(Json(updated.into()))
}

/// `DELETE /api/v1/apps/{app}/channels/{channel}`: groups on it are left without a channel.
pub async fn delete_channel(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, channel)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    db::channels::delete(&state.db, &caller.actor(), &app, &channel).await?;
    Ok(StatusCode::NO_CONTENT)
}
