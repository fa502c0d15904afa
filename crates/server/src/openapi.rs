//! The OpenAPI 3.1 document of the REST API, served at `/api/openapi.json`.
//!
//! Hand-written as JSON rather than generated (e.g. with utoipa): the API is small, the
//! document reads like the spec it is, and it costs no proc-macro dependency. Two tests keep it
//! honest: a golden file (`tests/api_openapi.golden.json`) and a check that every route in
//! [`ROUTES`] is in the document and answered by the router (see `tests/api_http.rs`).

use axum::Json;
use serde_json::{Value, json};

/// Every REST route as (OpenAPI path, methods): the router and the document must agree.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/whoami", &["get"]),
    ("/api/v1/apps", &["get", "post"]),
    ("/api/v1/apps/{app}", &["get", "put", "delete"]),
    ("/api/v1/apps/{app}/channels", &["get", "post"]),
    (
        "/api/v1/apps/{app}/channels/{channel}",
        &["get", "put", "delete"],
    ),
    ("/api/v1/apps/{app}/packages", &["get", "post"]),
    ("/api/v1/apps/{app}/packages/{version}", &["get", "delete"]),
    ("/api/v1/apps/{app}/packages/{version}/payload", &["put"]),
    (
        "/api/v1/apps/{app}/packages/{version}/extensions/{name}",
        &["put", "delete"],
    ),
    ("/api/v1/apps/{app}/groups", &["get", "post"]),
    (
        "/api/v1/apps/{app}/groups/{group}",
        &["get", "put", "delete"],
    ),
    ("/api/v1/apps/{app}/groups/{group}/policy", &["get", "put"]),
    ("/api/v1/instances", &["get"]),
    ("/api/v1/instances/{id}", &["get"]),
    ("/api/v1/instances/{id}/rollbacks/{version}", &["delete"]),
    ("/api/v1/activity", &["get"]),
    ("/api/v1/tokens", &["get", "post"]),
    ("/api/v1/tokens/{id}", &["delete"]),
    ("/api/v1/fleetlock/holders", &["get"]),
    ("/api/v1/fleetlock/{group}/holders/{id}", &["delete"]),
];

/// `GET /api/openapi.json` (no token needed: the document is not a secret).
pub async fn serve() -> Json<Value> {
    Json(document())
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": r(name) } } })
}

fn ok(status: &str, desc: &str, schema: Option<Value>) -> (String, Value) {
    let v = match schema {
        Some(s) => {
            json!({ "description": desc, "content": { "application/json": { "schema": s } } })
        }
        None => json!({ "description": desc }),
    };
    (status.to_string(), v)
}

fn errors(codes: &[&str]) -> Vec<(String, Value)> {
    codes
        .iter()
        .map(|c| {
            let desc = match *c {
                "400" => "Invalid value; `field` names it",
                "401" => "Missing or unknown token",
                "403" => "The token's role may not do this",
                "404" => "No such object",
                "409" => "Already exists or still in use",
                "413" => "Body larger than the limit",
                "415" => "Body is not JSON",
                "422" => "JSON with missing, unknown or mistyped fields",
                _ => "Error",
            };
            (
                c.to_string(),
                json!({ "description": desc, "content": { "application/json": { "schema": r("Error") } } }),
            )
        })
        .collect()
}

fn path_param(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": desc, "schema": { "type": "string" } })
}

fn query_param(name: &str, ty: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": ty } })
}

struct Op {
    summary: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(String, Value)>,
    admin: bool,
}

fn op(o: Op) -> Value {
    let mut responses = serde_json::Map::new();
    for (k, v) in o.responses {
        responses.insert(k, v);
    }
    for (k, v) in errors(if o.admin { &["401", "403"] } else { &["401"] }) {
        responses.entry(k).or_insert(v);
    }
    let mut v = json!({
        "summary": o.summary,
        "responses": responses,
        "security": [{ "bearer": [] }],
        "x-keelson-role": if o.admin { "admin" } else { "viewer" },
    });
    if !o.params.is_empty() {
        v["parameters"] = Value::Array(o.params);
    }
    if let Some(b) = o.body {
        v["requestBody"] = b;
    }
    v
}

fn app_p() -> Value {
    path_param("app", "Application ID (braces and case are ignored)")
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": r(name) })
}

/// Build the document.
pub fn document() -> Value {
    let write_errors = |extra: &[&str]| -> Vec<(String, Value)> { errors(extra) };
    let paths = json!({
        "/api/v1/whoami": { "get": op(Op { summary: "The caller's token ID and role", params: vec![], body: None, responses: vec![ok("200", "Caller", Some(r("Caller")))], admin: false }) },
        "/api/v1/apps": {
            "get": op(Op { summary: "List applications", params: vec![], body: None, responses: vec![ok("200", "Applications", Some(array_of("Application")))], admin: false }),
            "post": op(Op { summary: "Create an application", params: vec![], body: Some(body("NewApplication")), responses: [vec![ok("201", "Created", Some(r("Application")))], write_errors(&["400", "409", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}": {
            "get": op(Op { summary: "Get an application", params: vec![app_p()], body: None, responses: [vec![ok("200", "Application", Some(r("Application")))], errors(&["404"])].concat(), admin: false }),
            "put": op(Op { summary: "Update an application's name or description", params: vec![app_p()], body: Some(body("ApplicationUpdate")), responses: [vec![ok("200", "Updated", Some(r("Application")))], write_errors(&["400", "404", "413", "415", "422"])].concat(), admin: true }),
            "delete": op(Op { summary: "Delete an application with its channels, packages, groups and instances", params: vec![app_p()], body: None, responses: [vec![ok("204", "Deleted", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/channels": {
            "get": op(Op { summary: "List channels", params: vec![app_p()], body: None, responses: [vec![ok("200", "Channels", Some(array_of("Channel")))], errors(&["404"])].concat(), admin: false }),
            "post": op(Op { summary: "Create a channel", params: vec![app_p()], body: Some(body("NewChannel")), responses: [vec![ok("201", "Created", Some(r("Channel")))], write_errors(&["400", "404", "409", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/channels/{channel}": {
            "get": op(Op { summary: "Get a channel", params: vec![app_p(), path_param("channel", "Channel name")], body: None, responses: [vec![ok("200", "Channel", Some(r("Channel")))], errors(&["404"])].concat(), admin: false }),
            "put": op(Op { summary: "Point a channel at a package version (starts a rollout) or replace its floors", params: vec![app_p(), path_param("channel", "Channel name")], body: Some(body("ChannelUpdate")), responses: [vec![ok("200", "Updated", Some(r("Channel")))], write_errors(&["400", "404", "413", "415", "422"])].concat(), admin: true }),
            "delete": op(Op { summary: "Delete a channel (groups on it are left without one)", params: vec![app_p(), path_param("channel", "Channel name")], body: None, responses: [vec![ok("204", "Deleted", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/packages": {
            "get": op(Op { summary: "List packages, newest version first", params: vec![app_p()], body: None, responses: [vec![ok("200", "Packages", Some(array_of("Package")))], errors(&["404"])].concat(), admin: false }),
            "post": op(Op { summary: "Register a package hosted at an external URL", params: vec![app_p()], body: Some(body("NewExternalPackage")), responses: [vec![ok("201", "Created", Some(r("Package")))], write_errors(&["400", "404", "409", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/packages/{version}": {
            "get": op(Op { summary: "Get a package", params: vec![app_p(), path_param("version", "Package version")], body: None, responses: [vec![ok("200", "Package", Some(r("Package")))], errors(&["404"])].concat(), admin: false }),
            "delete": op(Op { summary: "Delete a package (409 while a channel points at it)", params: vec![app_p(), path_param("version", "Package version")], body: None, responses: [vec![ok("204", "Deleted", None)], errors(&["404", "409"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/packages/{version}/payload": {
            "put": op(Op {
                summary: "Upload a payload (raw body, streamed to disk, hashed) and create the package",
                params: vec![app_p(), path_param("version", "Package version"), query_param("filename", "string", "File name clients append to the codebase URL (default keelson_update.gz)")],
                body: Some(json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })),
                responses: [vec![ok("201", "Created", Some(r("Package")))], errors(&["400", "404", "409", "413"])].concat(),
                admin: true,
            }),
        },
        "/api/v1/apps/{app}/packages/{version}/extensions/{name}": {
            "put": op(Op {
                summary: "Attach an OS-bound system extension (raw body: the .raw DDI, streamed to disk, hashed) to a package stored here; offered as {name}.raw with the package (409 if the name is taken: delete it first)",
                params: vec![app_p(), path_param("version", "Package version"), path_param("name", "Extension name: 1-64 of [A-Za-z0-9_.-], no leading dot")],
                body: Some(json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })),
                responses: [vec![ok("201", "Attached; the package with its extensions", Some(r("Package")))], errors(&["400", "404", "409", "413"])].concat(),
                admin: true,
            }),
            "delete": op(Op { summary: "Remove an extension from a package", params: vec![app_p(), path_param("version", "Package version"), path_param("name", "Extension name")], body: None, responses: [vec![ok("204", "Removed", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/groups": {
            "get": op(Op { summary: "List groups with version breakdown and rollout progress", params: vec![app_p()], body: None, responses: [vec![ok("200", "Groups", Some(array_of("Group")))], errors(&["404"])].concat(), admin: false }),
            "post": op(Op { summary: "Create a group", params: vec![app_p()], body: Some(body("NewGroup")), responses: [vec![ok("201", "Created", Some(r("Group")))], write_errors(&["400", "404", "409", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/groups/{group}": {
            "get": op(Op { summary: "Get a group", params: vec![app_p(), path_param("group", "Group name")], body: None, responses: [vec![ok("200", "Group", Some(r("Group")))], errors(&["404"])].concat(), admin: false }),
            "put": op(Op { summary: "Rename a group or change its track or channel", params: vec![app_p(), path_param("group", "Group name")], body: Some(body("GroupUpdate")), responses: [vec![ok("200", "Updated", Some(r("Group")))], write_errors(&["400", "404", "409", "413", "415", "422"])].concat(), admin: true }),
            "delete": op(Op { summary: "Delete a group (its instances stay, without a group)", params: vec![app_p(), path_param("group", "Group name")], body: None, responses: [vec![ok("204", "Deleted", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/apps/{app}/groups/{group}/policy": {
            "get": op(Op { summary: "Get a group's rollout policy", params: vec![app_p(), path_param("group", "Group name")], body: None, responses: [vec![ok("200", "Policy", Some(r("Policy")))], errors(&["404"])].concat(), admin: false }),
            "put": op(Op { summary: "Change a group's rollout policy (fields left out stay; resume=true clears a halt)", params: vec![app_p(), path_param("group", "Group name")], body: Some(body("PolicyUpdate")), responses: [vec![ok("200", "The new policy", Some(r("Policy")))], write_errors(&["400", "404", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/instances": {
            "get": op(Op {
                summary: "List instances, most recently seen first",
                params: vec![
                    query_param("app", "string", "Application ID"),
                    query_param("group", "string", "Group name"),
                    query_param("version", "string", "Exact version"),
                    query_param("status", "string", "Status name, e.g. error"),
                    query_param("q", "string", "Substring of machine ID or alias"),
                    query_param("limit", "integer", "Page size, 1-500 (default 50)"),
                    query_param("offset", "integer", "Rows to skip"),
                ],
                body: None,
                responses: [vec![ok("200", "One page", Some(r("InstancePage")))], errors(&["400"])].concat(),
                admin: false,
            }),
        },
        "/api/v1/instances/{id}": {
            "get": op(Op { summary: "An instance with its status history and events", params: vec![path_param("id", "Numeric instance ID")], body: None, responses: [vec![ok("200", "Instance", Some(r("InstanceDetail")))], errors(&["400", "404"])].concat(), admin: false }),
        },
        "/api/v1/instances/{id}/rollbacks/{version}": {
            "delete": op(Op { summary: "Let the instance be offered a version it rolled back from again (the server holds such versions back until an admin clears them)", params: vec![path_param("id", "Numeric instance ID"), path_param("version", "The version it rolled back from")], body: None, responses: [vec![ok("204", "Cleared", None)], errors(&["400", "404"])].concat(), admin: true }),
        },
        "/api/v1/tokens": {
            "get": op(Op { summary: "List API tokens (never their secrets)", params: vec![], body: None, responses: vec![ok("200", "Tokens", Some(array_of("TokenInfo")))], admin: true }),
            "post": op(Op { summary: "Create a token; the response is the only time its secret is shown", params: vec![], body: Some(body("NewTokenRequest")), responses: [vec![ok("201", "Created", Some(r("NewToken")))], write_errors(&["400", "413", "415", "422"])].concat(), admin: true }),
        },
        "/api/v1/tokens/{id}": {
            "delete": op(Op { summary: "Revoke a token (it stops working at once)", params: vec![path_param("id", "Token ID")], body: None, responses: [vec![ok("204", "Revoked", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/fleetlock/holders": {
            "get": op(Op { summary: "FleetLock reboot-slot holders by lock group (a group's track), oldest first, with the time they took the slot", params: vec![query_param("group", "string", "Only this lock group")], body: None, responses: [vec![ok("200", "Holders", Some(array_of("FleetLockHolder")))], errors(&["400"])].concat(), admin: false }),
        },
        "/api/v1/fleetlock/{group}/holders/{id}": {
            "delete": op(Op { summary: "Release a holder's reboot slot (a node that is gone for good)", params: vec![path_param("group", "Lock group (a group's track)"), path_param("id", "The holder's FleetLock id")], body: None, responses: [vec![ok("204", "Released", None)], errors(&["404"])].concat(), admin: true }),
        },
        "/api/v1/activity": {
            "get": op(Op {
                summary: "The activity log, newest first",
                params: vec![
                    query_param("app", "string", "Application ID"),
                    query_param("before", "integer", "Only entries with a smaller ID (paging)"),
                    query_param("limit", "integer", "Page size, 1-500 (default 50)"),
                ],
                body: None,
                responses: [vec![ok("200", "Entries", Some(array_of("ActivityEntry")))], errors(&["400"])].concat(),
                admin: false,
            }),
        },
    });
    let s = |t: &str| json!({ "type": t });
    let ns = |t: &str| json!({ "type": [t, "null"] });
    let windows = json!({ "type": "array", "items": r("MaintenanceWindow") });
    let reason = json!({ "type": ["string", "null"], "pattern": "^[a-z0-9_-]{1,64}$", "description": "Why it failed: the agent's keelson_reason slug" });
    let schemas = json!({
        "Error": { "type": "object", "required": ["error"], "properties": { "error": s("string"), "field": s("string") } },
        "Caller": { "type": "object", "required": ["token_id", "role"], "properties": { "token_id": s("string"), "role": { "enum": ["admin", "viewer"] } } },
        "Application": { "type": "object", "required": ["id", "name", "description", "created_at"], "properties": { "id": s("string"), "name": s("string"), "description": s("string"), "created_at": s("integer") } },
        "NewApplication": { "type": "object", "required": ["id", "name"], "additionalProperties": false, "properties": { "id": s("string"), "name": s("string"), "description": s("string") } },
        "ApplicationUpdate": { "type": "object", "additionalProperties": false, "properties": { "name": s("string"), "description": s("string") } },
        "Channel": { "type": "object", "required": ["id", "application_id", "name", "version", "floors", "created_at"], "properties": { "id": s("integer"), "application_id": s("string"), "name": s("string"), "version": ns("string"), "floors": { "type": "array", "items": s("string") }, "created_at": s("integer") } },
        "NewChannel": { "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": s("string"), "version": ns("string"), "floors": { "type": "array", "items": s("string") } } },
        "ChannelUpdate": { "type": "object", "additionalProperties": false, "properties": { "version": ns("string"), "floors": { "type": "array", "items": s("string") } } },
        "Package": { "type": "object", "required": ["id", "application_id", "version", "filename", "url", "stored", "download_path", "size", "sha1_hex", "sha256_hex", "created_at", "extensions"], "properties": { "id": s("integer"), "application_id": s("string"), "version": s("string"), "filename": s("string"), "url": ns("string"), "stored": s("boolean"), "download_path": ns("string"), "size": s("integer"), "sha1_hex": s("string"), "sha256_hex": s("string"), "created_at": s("integer"), "extensions": array_of("PackageExtension") } },
        "PackageExtension": { "type": "object", "required": ["name", "size", "sha256", "sha1"], "description": "An OS-bound extension file, served at /packages/{package id}/{name}.raw", "properties": { "name": s("string"), "size": s("integer"), "sha256": s("string"), "sha1": s("string") } },
        "NewExternalPackage": { "type": "object", "required": ["version", "filename", "url", "size", "sha256_hex"], "additionalProperties": false, "properties": { "version": s("string"), "filename": s("string"), "url": s("string"), "size": { "type": "integer", "minimum": 1 }, "sha256_hex": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" }, "sha1_hex": s("string") } },
        "MaintenanceWindow": { "type": "object", "required": ["days", "start", "end"], "additionalProperties": false, "properties": { "days": { "type": "array", "items": { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] } }, "start": { "type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$" }, "end": { "type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$" } } },
        "Policy": { "type": "object", "properties": {
            "updates_enabled": s("boolean"), "safe_mode": s("boolean"),
            "max_updates_per_period": { "type": "integer", "minimum": 1, "maximum": 1_000_000 },
            "period_secs": { "type": "integer", "minimum": 60, "maximum": 31 * 86_400 },
            "update_timeout_secs": { "type": "integer", "minimum": 60, "maximum": 7 * 86_400 },
            "timezone": { "type": "string", "description": "IANA time zone" },
            "maintenance_windows": windows,
            "rollout_percent": { "type": "integer", "minimum": 0, "maximum": 100 },
            "failure_threshold_percent": { "type": "integer", "minimum": 1, "maximum": 100 },
            "pinned_version": ns("string"),
            "fleetlock_slots": { "type": "integer", "minimum": 1, "maximum": 100_000 },
            "halted_version": ns("string"), "halted_reason": ns("string"),
        } },
        "PolicyUpdate": { "type": "object", "additionalProperties": false, "properties": {
            "updates_enabled": s("boolean"), "safe_mode": s("boolean"),
            "max_updates_per_period": s("integer"), "period_secs": s("integer"), "update_timeout_secs": s("integer"),
            "timezone": s("string"), "maintenance_windows": windows,
            "rollout_percent": s("integer"), "failure_threshold_percent": s("integer"),
            "pinned_version": ns("string"), "fleetlock_slots": s("integer"),
            "resume": { "type": "boolean", "description": "Clear an automatic halt" },
        } },
        "Group": { "type": "object", "required": ["id", "application_id", "name", "track", "channel", "policy", "versions", "statuses", "rollout", "created_at"], "properties": {
            "id": s("integer"), "application_id": s("string"), "name": s("string"), "track": s("string"), "channel": ns("string"),
            "policy": r("Policy"),
            "versions": { "type": "array", "items": { "type": "object", "properties": { "version": s("string"), "count": s("integer") } } },
            "statuses": { "type": "array", "items": { "type": "object", "properties": { "status": s("string"), "count": s("integer") } } },
            "rollout": { "type": "object", "properties": { "target_version": ns("string"), "instances": s("integer"), "on_target": s("integer"), "in_progress": s("integer"), "succeeded": s("integer"), "failed": s("integer"), "halted": s("boolean") } },
            "created_at": s("integer"),
        } },
        "NewGroup": { "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": s("string"), "track": s("string"), "channel": s("string"), "policy": r("PolicyUpdate") } },
        "GroupUpdate": { "type": "object", "additionalProperties": false, "properties": { "name": s("string"), "track": s("string"), "channel": ns("string") } },
        "Instance": { "type": "object", "properties": {
            "id": s("integer"), "machine_id": s("string"), "application_id": s("string"), "group": ns("string"),
            "version": s("string"), "status": { "enum": ["undefined", "update-granted", "error", "complete", "installed", "downloaded", "downloading", "on-hold", "unknown"] },
            "ip": s("string"), "alias": s("string"), "oem": s("string"), "aleph_version": s("string"), "last_check": s("integer"), "created_at": s("integer"),
        } },
        "InstancePage": { "type": "object", "required": ["total", "instances"], "properties": { "total": s("integer"), "instances": array_of("Instance") } },
        "InstanceDetail": { "allOf": [r("Instance"), { "type": "object", "properties": {
            "status_history": { "type": "array", "items": { "type": "object", "properties": { "status": s("string"), "version": s("string"), "message": s("string"), "created_at": s("integer") } } },
            "events": { "type": "array", "items": { "type": "object", "properties": { "event_type": s("integer"), "event_result": s("integer"), "error_code": ns("integer"), "version": s("string"), "previous_version": s("string"), "created_at": s("integer"), "reason": reason } } },
            "rolled_back": { "type": "array", "items": s("string"), "description": "Versions it rolled back from, held back until cleared" },
        } }] },
        "FleetLockHolder": { "type": "object", "required": ["group", "id", "acquired_at"], "properties": { "group": s("string"), "id": s("string"), "acquired_at": s("integer") } },
        "TokenInfo": { "type": "object", "required": ["id", "role", "description", "created_at", "last_used"], "properties": { "id": s("string"), "role": { "enum": ["admin", "viewer"] }, "description": s("string"), "created_at": s("integer"), "last_used": ns("integer") } },
        "NewTokenRequest": { "type": "object", "required": ["role"], "additionalProperties": false, "properties": { "role": { "enum": ["admin", "viewer"] }, "description": s("string") } },
        "NewToken": { "type": "object", "required": ["id", "role", "token"], "properties": { "id": s("string"), "role": { "enum": ["admin", "viewer"] }, "token": { "type": "string", "description": "The bearer secret, shown only here" } } },
        "ActivityEntry": { "type": "object", "properties": {
            "id": s("integer"), "created_at": s("integer"), "severity": { "enum": ["info", "warning", "error"] }, "kind": s("string"), "actor": s("string"),
            "application_id": ns("string"), "group_id": ns("integer"), "version": ns("string"), "message": s("string"),
        } },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "keelson-server REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Applications, channels, packages, groups and their rollout policies, instances and the activity log. Send `Authorization: Bearer <token>` (create one with `keelson-server token create --role admin|viewer`); viewer tokens read, admin tokens also write. Errors are `{\"error\": \"...\", \"field\": \"...\"}`. Node endpoints (Omaha /v1/update/, FleetLock /v1/pre-reboot and /v1/steady-state) and /metrics need no token and are not part of this document.",
        },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_is_documented_and_every_ref_resolves() {
        let doc = document();
        for (path, methods) in ROUTES {
            for m in *methods {
                assert!(doc["paths"][path][m].is_object(), "{m} {path} missing");
            }
            let documented = doc["paths"][path].as_object().map(|o| o.len()).unwrap_or(0);
            assert_eq!(
                documented,
                methods.len(),
                "{path}: extra methods documented"
            );
        }
        assert_eq!(
            doc["paths"].as_object().map(|o| o.len()),
            Some(ROUTES.len())
        );
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
