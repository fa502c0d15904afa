//! Packages: update payloads, either uploaded here (streamed to the data directory) or kept
//! at an external URL.

use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use keelson_omaha::normalize_app_id;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::{RequireAdmin, RequireViewer};
use crate::db::{self, DbError, extensions::NewExtension, packages::NewPackage};
use crate::error::ApiError;
use crate::request::{ApiJson, check_text, check_version};
use crate::state::AppState;

/// A package of an application at one version (one type with the data layer's).
pub use keelson_api_types::{NewExternalPackage, Package, UploadQuery};

/// `GET /api/v1/apps/{app}/packages`.
pub async fn list(
    State(state): State<AppState>,
    _: RequireViewer,
    Path(app): Path<String>,
) -> Result<Json<Vec<Package>>, ApiError> {
    let rows = db::packages::list(&state.db, &app).await?;
    Ok(Json(rows.into_iter().map(Package::from).collect()))
}

/// `GET /api/v1/apps/{app}/packages/{version}`.
pub async fn get_one(
    State(state): State<AppState>,
    _: RequireViewer,
    Path((app, version)): Path<(String, String)>,
) -> Result<Json<Package>, ApiError> {
    Ok(Json(
        db::packages::get_version(&state.db, &app, &version)
            .await?
            .into(),
    ))
}

fn check_hex(field: &str, value: &str, len: usize) -> Result<(), ApiError> {
    if value.len() == len && value.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be {len} hex digits"),
        ))
    }
}

/// A file name the client may append to a URL: no path separators, no leading dot.
fn check_filename(field: &str, value: &str) -> Result<(), ApiError> {
    check_text(field, value, 255)?;
    if value.contains(['/', '\\', '?', '#', ' ']) || value.starts_with('.') {
        return Err(ApiError::invalid(
            field,
            format!("{field} {value:?} must be a plain file name"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/apps/{app}/packages`: register an externally hosted payload.
pub async fn create_external(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path(app): Path<String>,
    ApiJson(body): ApiJson<NewExternalPackage>,
) -> Result<(StatusCode, Json<Package>), ApiError> {
    let app = normalize_app_id(&app);
    check_version("version", &body.version)?;
    check_filename("filename", &body.filename)?;
    if !(body.url.starts_with("http://") || body.url.starts_with("https://"))
        || body.url.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            "url",
            format!("url {:?} must be an http:// or https:// URL", body.url),
        ));
    }
    let mut url = body.url.clone();
    if !url.ends_with('/') {
        url.push('/');
    }
    if body.size <= 0 {
        return Err(ApiError::invalid("size", "size must be greater than 0"));
    }
    check_hex("sha256_hex", &body.sha256_hex, 64)?;
    if !body.sha1_hex.is_empty() {
        check_hex("sha1_hex", &body.sha1_hex, 40)?;
    }
    let pkg = db::packages::create(
        &state.db,
        &caller.actor(),
        &NewPackage {
            application_id: app,
            version: body.version,
            filename: body.filename,
            url: Some(url),
            stored_path: None,
            size: body.size,
            sha1_hex: body.sha1_hex,
            sha256_hex: body.sha256_hex,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(pkg.into())))
}

/// Removes a file when dropped unless disarmed: an upload that fails at any step leaves no
/// partial payload behind.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What streaming an upload produced.
struct Streamed {
    size: u64,
    sha1_hex: String,
    sha256_hex: String,
}

async fn stream_to_file(req: Request, path: &FsPath, limit: u64) -> Result<Streamed, ApiError> {
    use futures_util::StreamExt;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(&format!("creating {}", path.display()), e))?;
    let mut sha1 = Sha1::new();
    let mut sha256 = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the upload: {e}"))
        })?;
        size += chunk.len() as u64;
        if size > limit {
            crate::body::drain(stream).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("upload is larger than the limit of {limit} bytes"),
            ));
        }
        sha1.update(&chunk);
        sha256.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(&format!("writing {}", path.display()), e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(&format!("syncing {}", path.display()), e))?;
    Ok(Streamed {
        size,
        sha1_hex: hex::encode(sha1.finalize()),
        sha256_hex: hex::encode(sha256.finalize()),
    })
}

/// `PUT /api/v1/apps/{app}/packages/{version}/payload?filename=NAME`: stream the raw body
/// into the data directory and create the package. The file is written under a temporary
/// name, renamed into place and the row committed; a failure at any step removes the file.
pub async fn upload(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, version)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    req: Request,
) -> Result<(StatusCode, Json<Package>), ApiError> {
    let app = normalize_app_id(&app);
    check_version("version", &version)?;
    let filename = query
        .filename
        .unwrap_or_else(|| "keelson_update.gz".to_string());
    check_filename("filename", &filename)?;
    // Refuse early (before reading a possibly large body) what would fail at commit anyway.
    match db::packages::get_version(&state.db, &app, &version).await {
        Ok(_) => return Err(ApiError::conflict("package", &version)),
        Err(DbError::NotFound {
            what: "package", ..
        }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut up = store_upload(&state, req, "pkg", "payload").await?;
    let pkg = db::packages::create(
        &state.db,
        &caller.actor(),
        &NewPackage {
            application_id: app,
            version,
            filename,
            url: None,
            stored_path: Some(up.name.clone()),
            size: up.size,
            sha1_hex: std::mem::take(&mut up.sha1_hex),
            sha256_hex: std::mem::take(&mut up.sha256_hex),
        },
    )
    .await?;
    up.keep();
    Ok((StatusCode::CREATED, Json(pkg.into())))
}

/// An upload streamed into the data dir under its final name, hashed; the file is removed
/// when this is dropped unless [`StoredUpload::keep`] was called (after the row committed).
struct StoredUpload {
    /// File name under the data dir.
    name: String,
    /// Size in bytes (> 0).
    size: i64,
    /// SHA-1, hex.
    sha1_hex: String,
    /// SHA-256, hex.
    sha256_hex: String,
    guard: RemoveOnDrop,
}

impl StoredUpload {
    fn keep(&mut self) {
        self.guard.disarm();
    }
}

/// Stream the raw body of `req` into the data dir as `{prefix}-{uuid}`: written under a
/// temporary name, hashed (SHA-1 and SHA-256) while streaming, renamed into place. Refuses a
/// body over the upload limit (413) and an empty one (400, field `body`); any failure leaves no
/// file behind. `what` names the upload in messages ("payload", "extension").
async fn store_upload(
    state: &AppState,
    req: Request,
    prefix: &str,
    what: &str,
) -> Result<StoredUpload, ApiError> {
    let limit = state.config.upload_limit;
    if crate::body::declared_length(req.headers()).is_some_and(|n| n > limit) {
        crate::body::drain(req.into_body().into_data_stream()).await;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload is larger than the limit of {limit} bytes"),
        ));
    }
    let dir = &state.config.data_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::internal(&format!("creating {}", dir.display()), e))?;
    let stored_name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let tmp = dir.join(format!(".{stored_name}.part"));
    let final_path = dir.join(&stored_name);
    let mut tmp_guard = RemoveOnDrop(Some(tmp.clone()));
    let streamed = stream_to_file(req, &tmp, limit).await?;
    if streamed.size == 0 {
        return Err(ApiError::invalid(
            "body",
            format!("the uploaded {what} is empty"),
        ));
    }
    let size = i64::try_from(streamed.size)
        .map_err(|_| ApiError::invalid("body", format!("the uploaded {what} is too large")))?;
    tokio::fs::rename(&tmp, &final_path)
        .await
        .map_err(|e| ApiError::internal(&format!("renaming into {}", final_path.display()), e))?;
    tmp_guard.disarm();
    Ok(StoredUpload {
        name: stored_name,
        size,
        sha1_hex: streamed.sha1_hex,
        sha256_hex: streamed.sha256_hex,
        guard: RemoveOnDrop(Some(final_path)),
    })
}

/// Errors about the package or extension the path names, with the path field: 404 naming
/// `version` (package) or `name` (extension), 409 naming `name` (extension taken).
fn name_path_field(e: DbError) -> ApiError {
    match e {
        DbError::NotFound {
            what: "package",
            key,
        } => ApiError {
            field: Some("version".into()),
            ..ApiError::not_found("package", &key)
        },
        DbError::NotFound {
            what: "extension",
            key,
        } => ApiError {
            field: Some("name".into()),
            ..ApiError::not_found("extension", &key)
        },
        DbError::Conflict {
            what: "extension",
            key,
        } => ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the package already has an extension {key:?}; delete it first to replace it"
                ),
            )
        },
        other => other.into(),
    }
}

fn check_extension_name(name: &str) -> Result<(), ApiError> {
    match keelson_api_types::extension_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(ApiError::invalid(
            "name",
            format!("extension name {name:?} {reason}"),
        )),
    }
}

/// `PUT /api/v1/apps/{app}/packages/{version}/extensions/{name}`: stream the raw body (the
/// extension's `.raw` DDI) into the data directory and attach it to the package as its
/// OS-bound extension `name`. Answers the package with its extensions. Refused before the
/// body is read: a bad name (400, `name`), an unknown package (404, `version`), an external
/// package (400, `version`), a name the package already has (409, `name`: delete it first).
pub async fn upload_extension(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, version, name)): Path<(String, String, String)>,
    req: Request,
) -> Result<(StatusCode, Json<Package>), ApiError> {
    let app = normalize_app_id(&app);
    check_version("version", &version)?;
    check_extension_name(&name)?;
    db::extensions::check_attachable(&state.db, &app, &version, &name)
        .await
        .map_err(name_path_field)?;
    let mut up = store_upload(&state, req, "ext", "extension").await?;
    db::extensions::attach(
        &state.db,
        &caller.actor(),
        &app,
        &version,
        &NewExtension {
            name,
            stored_path: up.name.clone(),
            size: up.size,
            sha1_hex: std::mem::take(&mut up.sha1_hex),
            sha256_hex: std::mem::take(&mut up.sha256_hex),
        },
    )
    .await
    .map_err(name_path_field)?;
    up.keep();
    let pkg = db::packages::get_version(&state.db, &app, &version)
        .await
        .map_err(name_path_field)?;
    Ok((StatusCode::CREATED, Json(pkg.into())))
}

/// `DELETE /api/v1/apps/{app}/packages/{version}/extensions/{name}`: detach the extension
/// and remove its file.
pub async fn delete_extension(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, version, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ext = db::extensions::remove(&state.db, &caller.actor(), &app, &version, &name)
        .await
        .map_err(name_path_field)?;
    remove_stored(&state, &ext.stored_path).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a stored file of a deleted row (only after the commit: a rolled-back delete must
/// still find its file); a failure is logged, the row is gone either way.
pub(crate) async fn remove_stored(state: &AppState, name: &str) {
    let path = state.config.data_dir.join(name);
    if let Err(e) = tokio::fs::remove_file(&path).await {
        tracing::warn!(path = %path.display(), error = %e, "removing a deleted file");
    }
}

/// `DELETE /api/v1/apps/{app}/packages/{version}`: 409 while a channel points at it. Its
/// extensions go with it.
pub async fn delete(
    State(state): State<AppState>,
    RequireAdmin(caller): RequireAdmin,
    Path((app, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let pkg = db::packages::delete(&state.db, &caller.actor(), &app, &version).await?;
    // Only after the commit: a rolled-back delete must still find its files.
    if let Some(name) = &pkg.stored_path {
        remove_stored(&state, name).await;
    }
    for ext in &pkg.extensions {
        remove_stored(&state, &ext.stored_path).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
