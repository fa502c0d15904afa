//! JSON REST API under `/api/v1/` (the document is at `/api/openapi.json`, see
//! [`crate::openapi`]).
//!
//! Every handler checks the caller's role first ([`crate::auth`]), validates its input into a
//! typed value, then does all of its writes and the matching activity-log row in one
//! transaction, so a failed request changes nothing. Errors are `{"error": "...", "field": "..."}`
//! with the status code that says what went wrong ([`ApiError`]).

pub mod apps;
pub mod fleetlock;
pub mod groups;
pub mod instances;
pub mod packages;
pub mod tokens;

use axum::Router;
use axum::routing::get;

use crate::openapi;
use crate::state::AppState;

pub use crate::error::{ApiError, ErrorBody};

/// Routes under `/api` (the REST API and its OpenAPI document).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/v1/whoami", get(apps::whoami))
        .route("/api/v1/apps", get(apps::list).post(apps::create))
        .route(
            "/api/v1/apps/{app}",
            get(apps::get_one).put(apps::update).delete(apps::delete),
        )
        .route(
            "/api/v1/apps/{app}/channels",
            get(apps::list_channels).post(apps::create_channel),
        )
        .route(
            "/api/v1/apps/{app}/channels/{channel}",
            get(apps::get_channel)
                .put(apps::update_channel)
                .delete(apps::delete_channel),
        )
        .route(
            "/api/v1/apps/{app}/packages",
            get(packages::list).post(packages::create_external),
        )
        .route(
            "/api/v1/apps/{app}/packages/{version}",
            get(packages::get_one).delete(packages::delete),
        )
        .route(
            "/api/v1/apps/{app}/packages/{version}/payload",
            axum::routing::put(packages::upload),
        )
        .route(
            "/api/v1/apps/{app}/packages/{version}/extensions/{name}",
            axum::routing::put(packages::upload_extension).delete(packages::delete_extension),
        )
        .route(
            "/api/v1/apps/{app}/groups",
            get(groups::list).post(groups::create),
        )
        .route(
            "/api/v1/apps/{app}/groups/{group}",
            get(groups::get_one)
                .put(groups::update)
                .delete(groups::delete),
        )
        .route(
            "/api/v1/apps/{app}/groups/{group}/policy",
            get(groups::get_policy).put(groups::put_policy),
        )
        .route("/api/v1/fleetlock/holders", get(fleetlock::list))
        .route(
            "/api/v1/fleetlock/{group}/holders/{id}",
            axum::routing::delete(fleetlock::release),
        )
        .route("/api/v1/instances", get(instances::list))
        .route("/api/v1/instances/{id}", get(instances::get_one))
        .route(
            "/api/v1/instances/{id}/rollbacks/{version}",
            axum::routing::delete(instances::clear_rollback),
        )
        .route("/api/v1/activity", get(instances::activity))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
}
