//! Server-rendered dashboard: groups with their version breakdown and rollout progress,
//! instances with status and history, the activity stream, and policy editing for admins.
//!
//! No JavaScript: links and plain HTML forms. Login stores the API token in an HttpOnly,
//! SameSite=Strict cookie, so the dashboard applies exactly the API's roles and the cookie
//! cannot be read by scripts or sent by other sites' forms (which is our CSRF protection).

pub mod html;
pub mod pages;
pub mod user;

pub use html::error_page;
pub use user::DashUser;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::auth::{COOKIE_NAME, lookup};
use crate::state::AppState;
use html::{Section, esc, page};

const CSS: &str = include_str!("../../static/dashboard.css");

/// Dashboard routes: `/`, `/login`, `/logout`, `/ui/...` and `/static/dashboard.css`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/dashboard.css", get(css))
        .route("/ui", get(pages::groups_overview))
        .route("/ui/apps/{app}/groups/{group}", get(pages::group_page))
        .route(
            "/ui/apps/{app}/groups/{group}/policy",
            post(pages::policy_submit),
        )
        .route(
            "/ui/apps/{app}/groups/{group}/fleetlock/release",
            post(pages::fleetlock_release),
        )
        .route("/ui/instances", get(pages::instances_page))
        .route("/ui/instances/{id}", get(pages::instance_page))
        .route(
            "/ui/instances/{id}/rollbacks/{version}/clear",
            post(pages::clear_rollback_submit),
        )
        .route("/ui/activity", get(pages::activity_page))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let flash = message
        .map(|m| format!("<div class=\"flash bad\">{}</div>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<div class=\"card login\">{flash}\
         <form method=\"post\" action=\"/login\">\
         <label for=\"token\">API token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" autofocus required>\
         <button class=\"primary\" type=\"submit\" id=\"login\">Log in</button>\
         <p class=\"meta\">Create one with <span class=\"mono\">keelson-server token create --role admin|viewer</span>.</p>\
         </form></div>"
    );
    (status, Html(page("Log in", Section::Login, None, &body))).into_response()
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    if token.is_empty() || token.contains(|c: char| !c.is_ascii_graphic() || c == ';') {
        return login_page(StatusCode::UNAUTHORIZED, Some("That is not a valid token."));
    }
    match lookup(&state.db, token).await {
        Ok(Some(_)) => {
            let cookie =
                format!("{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
        }
        Ok(None) => login_page(StatusCode::UNAUTHORIZED, Some("Unknown or revoked token.")),
        Err(e) => {
            tracing::error!(error = %e, "checking a dashboard login");
            login_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("Could not check the token; see the server log."),
            )
        }
    }
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}
