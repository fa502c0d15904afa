//! The dashboard's pages. Reads go through the same queries as the REST API; the policy form
//! goes through the same validation and transaction ([`crate::db::groups::change_policy`]).

use std::fmt::Write;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::error_page;
use super::html::{Section, attr_url, badge, esc, page, progress, status_bar, time, version_bar};
use super::user::DashUser;
use crate::api::groups::{Group, MaintenanceWindow, PolicyUpdate};
use crate::api::instances::{
    ActivityFilter, InstanceFilter, STATUSES, load_instance, query_activity, query_instances,
};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

fn fail(caller: &Caller, e: ApiError) -> Response {
    error_page(Some(caller), e.status, &e.message)
}

fn group_url(app: &str, group: &str) -> String {
    format!("/ui/apps/{}/groups/{}", attr_url(app), attr_url(group))
}

fn group_card(g: &Group) -> String {
    let versions: Vec<(String, i64)> = g
        .versions
        .iter()
        .map(|v| (v.version.clone(), v.count))
        .collect();
    let target = g.rollout.target_version.as_deref();
    let state_badge = if g.rollout.halted {
        badge("halted")
    } else if g.policy.rollout.updates_enabled {
        badge("enabled")
    } else {
        badge("disabled")
    };
    format!(
        "<div class=\"card group\" id=\"group-{name_attr}\">\
         <h2><a href=\"{url}\">{name}</a> {state_badge}</h2>\
         <div class=\"meta\">track <span class=\"mono\">{track}</span> · channel {channel} · target <b>{target}</b>{pin}</div>\
         <h3>Versions</h3>{bar}\
         <h3>Rollout</h3>{prog}\
         <div class=\"stats\"><span><b>{on}</b> of <b>{total}</b> on target</span>\
         <span><b>{inprog}</b> in progress</span><span><b>{ok}</b> succeeded</span><span><b>{failed}</b> failed</span>\
         <span>wave <b>{wave}%</b></span></div></div>",
        name_attr = esc(&g.name),
        url = group_url(&g.application_id, &g.name),
        name = esc(&g.name),
        track = esc(&g.track),
        channel = esc(g.channel.as_deref().unwrap_or("none")),
        target = esc(target.unwrap_or("none")),
        pin = if g.policy.rollout.pinned_version.is_some() {
            " (pinned)"
        } else {
            ""
        },
        bar = version_bar(&versions, target),
        prog = progress(g.rollout.on_target, g.rollout.instances),
        on = g.rollout.on_target,
        total = g.rollout.instances,
        inprog = g.rollout.in_progress,
        ok = g.rollout.succeeded,
        failed = g.rollout.failed,
        wave = g.policy.rollout.rollout_percent,
    )
}

/// `GET /ui`: every application's groups.
pub async fn groups_overview(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
) -> Response {
    match render_overview(&state).await {
        Ok(body) => Html(page("Groups", Section::Groups, Some(&caller), &body)).into_response(),
        Err(e) => fail(&caller, e),
    }
}

async fn render_overview(state: &AppState) -> Result<String, ApiError> {
    let apps = crate::db::applications::list(&state.db).await?;
    if apps.is_empty() {
        return Ok("<p class=\"empty\">No applications yet: create one with <span class=\"mono\">keelson admin app create</span>.</p>".into());
    }
    let mut body = String::new();
    for crate::db::applications::Application { id, name, .. } in apps {
        let _ = write!(
            body,
            "<h3>{} <span class=\"mono\">{}</span></h3><div class=\"grid\">",
            esc(&name),
            esc(&id)
        );
        let groups = crate::db::groups::views(&state.db, &id).await?;
        if groups.is_empty() {
            body.push_str("<p class=\"empty\">No groups.</p>");
        }
        for view in groups {
            body.push_str(&group_card(&Group::from(view)));
        }
        body.push_str("</div>");
    }
    Ok(body)
}

/// Query of the group page.
#[derive(Deserialize, Default)]
pub struct GroupPageQuery {
    saved: Option<String>,
}

/// `GET /ui/apps/{app}/groups/{group}`.
pub async fn group_page(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Path((app, group)): Path<(String, String)>,
    Query(q): Query<GroupPageQuery>,
) -> Response {
    let flash = q
        .saved
        .map(|_| "<div class=\"flash ok\" id=\"saved\">Policy saved.</div>".to_string());
    render_group(&state, &caller, &app, &group, flash, StatusCode::OK).await
}

async fn render_group(
    state: &AppState,
    caller: &Caller,
    app: &str,
    group: &str,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let result = async {
        let g = Group::from(crate::db::groups::view(&state.db, app, group).await?);
        let instances = query_instances(
            state,
            &InstanceFilter {
                app: Some(g.application_id.clone()),
                group: Some(g.name.clone()),
                limit: Some(20),
                ..Default::default()
            },
        )
        .await?;
        let holders = crate::db::fleetlock::holders_with_time(&state.db, Some(&g.track)).await?;
        // The target package's OS-bound extensions, offered with it.
        let target = match &g.rollout.target_version {
            Some(v) => {
                match crate::db::packages::get_version(&state.db, &g.application_id, v).await {
                    Ok(p) => Some(keelson_api_types::Package::from(p)),
                    Err(crate::db::DbError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        Ok::<_, ApiError>((g, instances, holders, target))
    }
    .await;
    let (g, instances, holders, target) = match result {
        Ok(v) => v,
        Err(e) => return fail(caller, e),
    };
    let mut body = flash.unwrap_or_default();
    body.push_str(&group_card(&g));
    if let Some(p) = &target {
        body.push_str(&extensions_card(p));
    }
    let statuses: Vec<(String, i64)> = g
        .statuses
        .iter()
        .map(|s| (s.status.clone(), s.count))
        .collect();
    let _ = write!(
        body,
        "<div class=\"cols\"><div class=\"card\"><h2>Policy</h2>{form}</div>\
         <div class=\"card\"><h2>Status</h2>{status_bar}{halt}</div></div>\
         <div class=\"card\" id=\"fleetlock\"><h2>Reboot slots (FleetLock {track}): {held} of {slots} held</h2>{holders}</div>\
         <div class=\"card\"><h2>Recently seen instances ({total})</h2>{table}\
         <p><a href=\"/ui/instances?app={app}&amp;group={group}\">All instances of this group</a></p></div>",
        form = policy_form(&g.application_id, &g, caller.role >= Role::Admin),
        status_bar = status_bar(&statuses),
        halt = match (&g.policy.halted_version, &g.policy.halted_reason) {
            (Some(v), reason) => format!(
                "<div class=\"flash bad\">Rollout of {} halted: {}</div>",
                esc(v),
                esc(reason.as_deref().unwrap_or("no reason recorded"))
            ),
            _ => String::new(),
        },
        track = esc(&g.track),
        held = holders.len(),
        slots = g.policy.rollout.fleetlock_slots,
        holders = holder_table(
            &group_url(&g.application_id, &g.name),
            &holders,
            caller.role >= Role::Admin
        ),
        total = instances.total,
        table = instance_table(&instances.instances),
        app = attr_url(&g.application_id),
        group = attr_url(&g.name),
    );
    (
        status,
        Html(page(
            &format!("Group {}", g.name),
            Section::Groups,
            Some(caller),
            &body,
        )),
    )
        .into_response()
}

/// The OS-bound extensions of a group's target package (offered with the OS update).
fn extensions_card(p: &keelson_api_types::Package) -> String {
    let list = if p.extensions.is_empty() {
        "<p>None: nodes get the OS payload only.</p>".to_string()
    } else {
        let rows: String = p
            .extensions
            .iter()
            .map(|e| {
                format!(
                    "<tr><td class=\"mono\">{name}.raw</td><td>{size}</td><td class=\"mono\">{sha}</td></tr>",
                    name = esc(&e.name),
                    size = e.size,
                    sha = esc(&e.sha256),
                )
            })
            .collect();
        format!("<table><tr><th>Extension</th><th>Bytes</th><th>SHA-256</th></tr>{rows}</table>")
    };
    format!(
        "<div class=\"card\" id=\"extensions\"><h2>OS-bound extensions of {version}</h2>{list}</div>",
        version = esc(&p.version)
    )
}

fn windows_text(ws: &[MaintenanceWindow]) -> String {
    ws.iter()
        .map(|w| format!("{} {}-{}", w.days.join(","), w.start, w.end))
        .collect::<Vec<_>>()
        .join("\n")
}

fn policy_form(app: &str, g: &Group, editable: bool) -> String {
    let p = &g.policy.rollout;
    let dis = if editable { "" } else { " disabled" };
    let checked = |b: bool| if b { " checked" } else { "" };
    let num = |name: &str, label: &str, value: i64, hint: &str| {
        format!(
            "<label for=\"{name}\">{label}</label><input type=\"number\" id=\"{name}\" name=\"{name}\" value=\"{value}\"{dis}>\
             <div class=\"hint\">{hint}</div>"
        )
    };
    let mut f = format!(
        "<form class=\"policy\" method=\"post\" action=\"{url}/policy\">",
        url = group_url(app, &g.name)
    );
    let _ = write!(
        f,
        "<label for=\"updates_enabled\">Updates enabled</label><input type=\"checkbox\" id=\"updates_enabled\" name=\"updates_enabled\" value=\"on\"{}{dis}>\
         <label for=\"safe_mode\">Safe mode</label><input type=\"checkbox\" id=\"safe_mode\" name=\"safe_mode\" value=\"on\"{}{dis}>",
        checked(p.updates_enabled),
        checked(p.safe_mode)
    );
    f.push_str(&num(
        "max_updates_per_period",
        "Max updates per period",
        p.max_updates_per_period,
        "1 to 1000000",
    ));
    f.push_str(&num(
        "period_secs",
        "Period (seconds)",
        p.period_secs,
        "60 to 2678400",
    ));
    f.push_str(&num(
        "update_timeout_secs",
        "Update timeout (seconds)",
        p.update_timeout_secs,
        "60 to 604800",
    ));
    f.push_str(&num(
        "rollout_percent",
        "Rollout wave (%)",
        p.rollout_percent,
        "share of the group offered the target",
    ));
    f.push_str(&num(
        "failure_threshold_percent",
        "Halt at failures (%)",
        p.failure_threshold_percent,
        "1 to 100",
    ));
    f.push_str(&num(
        "fleetlock_slots",
        "Reboot slots",
        p.fleetlock_slots,
        "nodes rebooting at once",
    ));
    let _ = write!(
        f,
        "<label for=\"timezone\">Time zone</label><input type=\"text\" id=\"timezone\" name=\"timezone\" value=\"{tz}\"{dis}>\
         <label for=\"maintenance_windows\">Maintenance windows</label><textarea id=\"maintenance_windows\" name=\"maintenance_windows\"{dis}>{mw}</textarea>\
         <div class=\"hint\">one per line, e.g. <span class=\"mono\">sat,sun 22:00-04:00</span>; empty means any time</div>\
         <label for=\"pinned_version\">Pinned version</label><input type=\"text\" id=\"pinned_version\" name=\"pinned_version\" value=\"{pin}\" placeholder=\"follow the channel\"{dis}>",
        tz = esc(&p.timezone),
        mw = esc(&windows_text(&p.maintenance_windows)),
        pin = esc(p.pinned_version.as_deref().unwrap_or("")),
    );
    if g.policy.halted_version.is_some() {
        let _ = write!(
            f,
            "<label for=\"resume\">Resume halted rollout</label><input type=\"checkbox\" id=\"resume\" name=\"resume\" value=\"on\"{dis}>"
        );
    }
    if editable {
        f.push_str("<span></span><div><button class=\"primary\" type=\"submit\" id=\"save-policy\">Save policy</button></div>");
    } else {
        f.push_str(
            "<span></span><div class=\"meta\">Read-only: your token has the viewer role.</div>",
        );
    }
    f.push_str("</form>");
    f
}

/// Turn the policy form into a [`PolicyUpdate`]; errors name the field like the API does.
pub fn parse_policy_form(fields: &[(String, String)]) -> Result<PolicyUpdate, ApiError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        match get(name) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid(name, format!("{name} {v:?} is not a whole number"))
            }),
        }
    };
    let windows = match get("maintenance_windows") {
        None => None,
        Some(text) => {
            let mut out = Vec::new();
            for (i, line) in text.lines().map(str::trim).enumerate() {
                if line.is_empty() {
                    continue;
                }
                let field = format!("maintenance_windows[{}]", out.len());
                let parsed = line.split_once(' ').and_then(|(days, span)| {
                    let (start, end) = span.trim().split_once('-')?;
                    Some(MaintenanceWindow {
                        days: days.split(',').map(|d| d.trim().to_lowercase()).collect(),
                        start: start.trim().to_string(),
                        end: end.trim().to_string(),
                    })
                });
                match parsed {
                    Some(w) => out.push(w),
                    None => {
                        return Err(ApiError::invalid(
                            &field,
                            format!(
                                "maintenance window line {} {line:?} is not like \"sat,sun 22:00-04:00\"",
                                i + 1
                            ),
                        ));
                    }
                }
            }
            Some(out)
        }
    };
    Ok(PolicyUpdate {
        // Unchecked boxes are absent from a submitted form, so absence means false here.
        updates_enabled: Some(get("updates_enabled").is_some()),
        safe_mode: Some(get("safe_mode").is_some()),
        max_updates_per_period: int("max_updates_per_period")?,
        period_secs: int("period_secs")?,
        update_timeout_secs: int("update_timeout_secs")?,
        timezone: get("timezone"),
        maintenance_windows: windows,
        rollout_percent: int("rollout_percent")?,
        failure_threshold_percent: int("failure_threshold_percent")?,
        pinned_version: get("pinned_version").map(|v| if v.is_empty() { None } else { Some(v) }),
        fleetlock_slots: int("fleetlock_slots")?,
        resume: get("resume").is_some(),
    })
}

/// `POST /ui/apps/{app}/groups/{group}/policy`: the policy form (admins only).
pub async fn policy_submit(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Path((app, group)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    if caller.role < Role::Admin {
        return error_page(
            Some(&caller),
            StatusCode::FORBIDDEN,
            "Your token has the viewer role; changing a policy needs an admin token.",
        );
    }
    let result = match parse_policy_form(&fields) {
        Ok(update) => {
            crate::db::groups::change_policy(&state.db, &caller.actor(), &app, &group, update)
                .await
                .map_err(ApiError::from)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Redirect::to(&format!(
            "{}?saved=1",
            group_url(&keelson_omaha::normalize_app_id(&app), &group)
        ))
        .into_response(),
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let flash = format!(
                "<div class=\"flash bad\" id=\"policy-error\">Not saved: {}</div>",
                esc(&e.message)
            );
            render_group(&state, &caller, &app, &group, Some(flash), e.status).await
        }
        Err(e) => fail(&caller, e),
    }
}

fn holder_table(url: &str, holders: &[crate::db::fleetlock::Holder], admin: bool) -> String {
    if holders.is_empty() {
        return "<p class=\"muted\">No node holds a reboot slot.</p>".to_string();
    }
    let mut t = String::from(
        "<table class=\"holders\"><thead><tr><th>Holder</th><th>Since</th><th></th></tr></thead><tbody>",
    );
    for h in holders {
        let release = if admin {
            format!(
                "<form method=\"post\" action=\"{url}/fleetlock/release\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <button type=\"submit\">Release</button></form>",
                id = esc(&h.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            t,
            "<tr><td><code>{}</code></td><td>{}</td><td>{release}</td></tr>",
            esc(&h.id),
            time(h.acquired_at),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// The release form of a FleetLock holder.
#[derive(Debug, Deserialize)]
pub struct ReleaseForm {
    /// The holder id.
    pub id: String,
}

/// `POST /ui/apps/{app}/groups/{group}/fleetlock/release`: release a holder (admins only).
pub async fn fleetlock_release(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Path((app, group)): Path<(String, String)>,
    Form(form): Form<ReleaseForm>,
) -> Response {
    if caller.role < Role::Admin {
        return error_page(
            Some(&caller),
            StatusCode::FORBIDDEN,
            "Your token has the viewer role; releasing a reboot slot needs an admin token.",
        );
    }
    let result = async {
        let g = crate::db::groups::find(&state.db, &app, &group).await?;
        crate::db::fleetlock::release_by_admin(&state.db, &caller.actor(), &g.track, &form.id)
            .await?;
        Ok::<_, ApiError>(g.application_id)
    }
    .await;
    match result {
        Ok(app_id) => {
            Redirect::to(&format!("{}#fleetlock", group_url(&app_id, &group))).into_response()
        }
        Err(e) => fail(&caller, e),
    }
}

/// `POST /ui/instances/{id}/rollbacks/{version}/clear`: the dashboard's button for
/// [`crate::db::instances::clear_rollback`] (admins only).
pub async fn clear_rollback_submit(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Path((id, version)): Path<(String, String)>,
) -> Response {
    if caller.role < Role::Admin {
        return error_page(
            Some(&caller),
            StatusCode::FORBIDDEN,
            "Your token has the viewer role; clearing a rollback needs an admin token.",
        );
    }
    let Ok(id) = id.parse::<i64>() else {
        return fail(
            &caller,
            ApiError::invalid("id", format!("instance id {id:?} is not a number")),
        );
    };
    match crate::db::instances::clear_rollback(&state.db, &caller.actor(), id, &version).await {
        Ok(()) => Redirect::to(&format!("/ui/instances/{id}")).into_response(),
        Err(e) => fail(&caller, e.into()),
    }
}

fn instance_table(instances: &[crate::api::instances::Instance]) -> String {
    if instances.is_empty() {
        return "<p class=\"empty\">No instances.</p>".into();
    }
    let mut t = String::from(
        "<table><thead><tr><th>Machine</th><th>Alias</th><th>Group</th><th>Version</th><th>Status</th><th>Last check (UTC)</th></tr></thead><tbody>",
    );
    for i in instances {
        let _ = write!(
            t,
            "<tr><td class=\"mono\"><a href=\"/ui/instances/{id}\">{mid}</a></td><td>{alias}</td><td>{group}</td>\
             <td class=\"mono\">{version}</td><td>{status}</td><td class=\"nowrap\">{last}</td></tr>",
            id = i.id,
            mid = esc(&i.machine_id.chars().take(16).collect::<String>()),
            alias = esc(or_dash(&i.alias)),
            group = esc(i.group.as_deref().unwrap_or("-")),
            version = esc(&i.version),
            status = badge(&i.status),
            last = time(i.last_check),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// Query of the instances page (empty form fields mean "any").
#[derive(Deserialize, Default)]
pub struct InstancesQuery {
    app: Option<String>,
    group: Option<String>,
    version: Option<String>,
    status: Option<String>,
    q: Option<String>,
    offset: Option<i64>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `GET /ui/instances`.
pub async fn instances_page(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Query(q): Query<InstancesQuery>,
) -> Response {
    let filter = InstanceFilter {
        app: non_empty(&q.app),
        group: non_empty(&q.group),
        version: non_empty(&q.version),
        status: non_empty(&q.status),
        q: non_empty(&q.q),
        limit: Some(100),
        offset: q.offset.filter(|o| *o >= 0),
    };
    let page_data = match query_instances(&state, &filter).await {
        Ok(p) => p,
        Err(e) => return fail(&caller, e),
    };
    let mut status_opts = String::from("<option value=\"\">any status</option>");
    for (_, name) in STATUSES {
        let sel = if filter.status.as_deref() == Some(name) {
            " selected"
        } else {
            ""
        };
        let _ = write!(status_opts, "<option{sel}>{name}</option>");
    }
    let hidden = |name: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| {
                format!(
                    "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                    esc(v)
                )
            })
            .unwrap_or_default()
    };
    let offset = filter.offset.unwrap_or(0);
    let next = if offset + 100 < page_data.total {
        let mut qs = String::new();
        for (k, v) in [
            ("app", &filter.app),
            ("group", &filter.group),
            ("version", &filter.version),
            ("status", &filter.status),
            ("q", &filter.q),
        ] {
            if let Some(v) = v {
                let _ = write!(qs, "{k}={}&amp;", attr_url(v));
            }
        }
        format!(
            "<p><a href=\"/ui/instances?{qs}offset={}\">Next page</a></p>",
            offset + 100
        )
    } else {
        String::new()
    };
    let body = format!(
        "<form class=\"filters\" method=\"get\" action=\"/ui/instances\">{app}{group}\
         <input type=\"text\" name=\"q\" placeholder=\"machine ID or alias\" value=\"{qv}\">\
         <input type=\"text\" name=\"version\" placeholder=\"version\" value=\"{vv}\">\
         <select name=\"status\">{status_opts}</select>\
         <button class=\"primary\" type=\"submit\">Filter</button></form>\
         <p class=\"meta\">{total} instance(s){scope}</p>{table}{next}",
        app = hidden("app", &filter.app),
        group = hidden("group", &filter.group),
        qv = esc(filter.q.as_deref().unwrap_or("")),
        vv = esc(filter.version.as_deref().unwrap_or("")),
        total = page_data.total,
        scope = filter
            .group
            .as_ref()
            .map(|g| format!(" in group {}", esc(g)))
            .unwrap_or_default(),
        table = instance_table(&page_data.instances),
    );
    Html(page("Instances", Section::Instances, Some(&caller), &body)).into_response()
}

/// `GET /ui/instances/{id}`.
pub async fn instance_page(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return fail(
            &caller,
            ApiError::invalid("id", format!("instance id {id:?} is not a number")),
        );
    };
    let d = match load_instance(&state, id).await {
        Ok(d) => d,
        Err(e) => return fail(&caller, e),
    };
    let i = &d.instance;
    let mut body = format!(
        "<div class=\"card\"><h2 class=\"mono\">{mid}</h2><div class=\"stats\">\
         <span>status {status}</span><span>version <b class=\"mono\">{version}</b></span>\
         <span>group <b>{group}</b></span><span>alias <b>{alias}</b></span><span>IP <b class=\"mono\">{ip}</b></span>\
         <span>OEM <b>{oem}</b></span><span>first installed <b class=\"mono\">{aleph}</b></span>\
         <span>last check <b>{last} UTC</b></span></div></div>",
        mid = esc(&i.machine_id),
        status = badge(&i.status),
        version = esc(&i.version),
        group = esc(i.group.as_deref().unwrap_or("-")),
        alias = esc(&i.alias),
        ip = esc(or_dash(&i.ip)),
        oem = esc(or_dash(&i.oem)),
        aleph = esc(or_dash(&i.aleph_version)),
        last = time(i.last_check),
    );
    body.push_str("<div class=\"cols\"><div class=\"card\"><h2>Status history</h2>");
    if d.status_history.is_empty() {
        body.push_str("<p class=\"empty\">No status changes yet.</p>");
    } else {
        body.push_str("<table id=\"history\"><thead><tr><th>Time (UTC)</th><th>Status</th><th>Version</th><th>Details</th></tr></thead><tbody>");
        for h in &d.status_history {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                time(h.created_at),
                badge(&h.status),
                esc(&h.version),
                esc(&h.message)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</div><div class=\"card\"><h2>Events</h2>");
    if d.events.is_empty() {
        body.push_str("<p class=\"empty\">No events yet.</p>");
    } else {
        body.push_str("<table id=\"events\"><thead><tr><th>Time (UTC)</th><th>Event</th><th>Error code</th><th>Reason</th><th>Version</th></tr></thead><tbody>");
        for e in &d.events {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"mono\">{}/{}</td><td class=\"mono\">{}</td><td class=\"mono reason\">{}</td><td class=\"mono\">{}</td></tr>",
                time(e.created_at),
                e.event_type,
                e.event_result,
                e.error_code.map(|c| c.to_string()).unwrap_or_default(),
                esc(e.reason.as_deref().unwrap_or("")),
                esc(&e.version)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</div></div>");
    if !d.rolled_back.is_empty() {
        body.push_str(
            "<div class=\"card\" id=\"rolled-back\"><h2>Held back after a rollback</h2>\
             <p class=\"meta\">This node rolled back from these versions; the server does not \
             offer them to it again until an admin clears them.</p><ul>",
        );
        for v in &d.rolled_back {
            let button = if caller.role >= Role::Admin {
                format!(
                    " <form class=\"inline\" method=\"post\" action=\"/ui/instances/{id}/rollbacks/{v}/clear\">\
                     <button type=\"submit\">Clear: offer it again</button></form>",
                    v = attr_url(v)
                )
            } else {
                String::new()
            };
            let _ = write!(body, "<li><b class=\"mono\">{}</b>{button}</li>", esc(v));
        }
        body.push_str("</ul></div>");
    }
    Html(page(
        &format!(
            "Instance {}",
            if i.alias.is_empty() {
                i.id.to_string()
            } else {
                i.alias.clone()
            }
        ),
        Section::Instances,
        Some(&caller),
        &body,
    ))
    .into_response()
}

/// Empty values shown as a dash, so a row never looks cut off.
fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Query of the activity page.
#[derive(Deserialize, Default)]
pub struct ActivityQuery {
    before: Option<i64>,
}

/// `GET /ui/activity`.
pub async fn activity_page(
    State(state): State<AppState>,
    DashUser(caller): DashUser,
    Query(q): Query<ActivityQuery>,
) -> Response {
    let entries = match query_activity(
        &state,
        &ActivityFilter {
            app: None,
            before: q.before,
            limit: Some(100),
        },
    )
    .await
    {
        Ok(e) => e,
        Err(e) => return fail(&caller, e),
    };
    let mut body = String::new();
    if entries.is_empty() {
        body.push_str("<p class=\"empty\">Nothing has happened yet.</p>");
    } else {
        body.push_str("<table id=\"activity\"><thead><tr><th>Time (UTC)</th><th>Severity</th><th>What</th><th>By</th><th>Message</th></tr></thead><tbody>");
        for a in &entries {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                time(a.created_at),
                badge(&a.severity),
                esc(&a.kind),
                esc(&a.actor),
                esc(&a.message)
            );
        }
        body.push_str("</tbody></table>");
        if let Some(last) = entries.last().filter(|_| entries.len() == 100) {
            let _ = write!(
                body,
                "<p><a href=\"/ui/activity?before={}\">Older</a></p>",
                last.id
            );
        }
    }
    Html(page("Activity", Section::Activity, Some(&caller), &body)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn policy_form_parses_checkboxes_numbers_and_windows() {
        let u = parse_policy_form(&form(&[
            ("safe_mode", "on"),
            ("max_updates_per_period", " 12 "),
            (
                "maintenance_windows",
                "sat,SUN 22:00-04:00\r\n\r\nmon 01:00-02:00",
            ),
            ("pinned_version", ""),
        ]))
        .unwrap();
        assert_eq!(u.updates_enabled, Some(false));
        assert_eq!(u.safe_mode, Some(true));
        assert_eq!(u.max_updates_per_period, Some(12));
        assert_eq!(u.pinned_version, Some(None));
        let w = u.maintenance_windows.unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].days, ["sat", "sun"]);
        assert_eq!(w[1].start, "01:00");
    }

    #[test]
    fn policy_form_errors_name_the_field() {
        let e = parse_policy_form(&form(&[("period_secs", "an hour")])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("period_secs"));
        let e = parse_policy_form(&form(&[("maintenance_windows", "weekends")])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("maintenance_windows[0]"));
    }
}
