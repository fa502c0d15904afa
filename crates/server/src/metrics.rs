//! `GET /metrics` in the Prometheus text format (version 0.0.4), computed from the database on
//! each scrape so several server processes sharing one PostgreSQL report the same numbers.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::db::instances::InstanceStatus;
use crate::db::{Db, DbError};
use crate::state::AppState;

/// The metrics route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(serve))
}

/// Escape a label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: i64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", l.join(","));
        }
    }
}

/// Render every metric.
pub async fn render(db: &Db) -> Result<String, DbError> {
    let snap = crate::db::metrics::snapshot(db).await?;
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    let rows = &snap.per_version;
    f.header(
        "keelson_instances",
        "gauge",
        "Instances per application, channel and version.",
    );
    for (app, channel, version, n) in rows {
        f.sample(
            "keelson_instances",
            &[
                ("application", app),
                ("channel", channel),
                ("version", version),
            ],
            *n,
        );
    }

    let rows = &snap.per_status;
    f.header(
        "keelson_instances_by_status",
        "gauge",
        "Instances per application, group track and update status.",
    );
    for (app, track, status, n) in rows {
        let s = InstanceStatus::from_code(*status).as_str();
        f.sample(
            "keelson_instances_by_status",
            &[("application", app), ("group", track), ("status", s)],
            *n,
        );
    }

    let rows = &snap.grants;
    f.header(
        "keelson_update_grants_total",
        "counter",
        "Updates granted per application and group.",
    );
    for (app, track, grants, _, _) in rows {
        f.sample(
            "keelson_update_grants_total",
            &[("application", app), ("group", track)],
            *grants,
        );
    }
    f.header(
        "keelson_update_failures_total",
        "counter",
        "Granted updates that failed (error events, rollbacks, timeouts closed by a re-grant).",
    );
    for (app, track, _, failed, _) in rows {
        f.sample(
            "keelson_update_failures_total",
            &[("application", app), ("group", track)],
            *failed,
        );
    }
    f.header(
        "keelson_update_successes_total",
        "counter",
        "Granted updates that completed.",
    );
    for (app, track, _, _, ok) in rows {
        f.sample(
            "keelson_update_successes_total",
            &[("application", app), ("group", track)],
            *ok,
        );
    }

    let rows = &snap.halted;
    f.header(
        "keelson_rollout_halted",
        "gauge",
        "1 when the group's rollout is halted automatically.",
    );
    for (app, track, halted) in rows {
        f.sample(
            "keelson_rollout_halted",
            &[("application", app), ("group", track)],
            *halted,
        );
    }

    let rows = &snap.fleetlock;
    f.header(
        "keelson_fleetlock_holders",
        "gauge",
        "Nodes holding a FleetLock reboot slot, per group.",
    );
    for (group, _, holders) in rows {
        f.sample("keelson_fleetlock_holders", &[("group", group)], *holders);
    }
    f.header(
        "keelson_fleetlock_slots",
        "gauge",
        "FleetLock reboot slots per group.",
    );
    for (group, slots, _) in rows {
        f.sample("keelson_fleetlock_slots", &[("group", group)], *slots);
    }
    Ok(out)
}

async fn serve(State(state): State<AppState>) -> Response {
    match render(&state.db).await {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}
