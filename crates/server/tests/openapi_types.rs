//! The OpenAPI document is checked against the wire types of `keelson-api-types`: for every
//! schema in the served document, a sample of the Rust type is serialized and must match the
//! schema (types, required keys, enums, no undocumented keys), so the document and the JSON
//! the server really sends cannot drift apart.
#![allow(clippy::unwrap_used)]

use keelson_api_types as api;
use serde::Serialize;
use serde_json::{Value, json};

fn v<T: Serialize>(t: T) -> Value {
    serde_json::to_value(t).unwrap()
}

fn policy() -> api::Policy {
    api::Policy {
        rollout: api::RolloutPolicy {
            updates_enabled: true,
            safe_mode: false,
            max_updates_per_period: 10,
            period_secs: 3600,
            update_timeout_secs: 3600,
            timezone: "UTC".into(),
            maintenance_windows: vec![window()],
            rollout_percent: 50,
            failure_threshold_percent: 20,
            pinned_version: Some("2.0.0".into()),
            fleetlock_slots: 1,
        },
        halted_version: None,
        halted_reason: Some("failures".into()),
    }
}

fn window() -> api::MaintenanceWindow {
    api::MaintenanceWindow {
        days: vec!["sat".into(), "sun".into()],
        start: "22:00".into(),
        end: "04:00".into(),
    }
}

fn policy_update() -> api::PolicyUpdate {
    api::PolicyUpdate {
        updates_enabled: Some(true),
        safe_mode: Some(false),
        max_updates_per_period: Some(5),
        period_secs: Some(60),
        update_timeout_secs: Some(60),
        timezone: Some("Europe/Berlin".into()),
        maintenance_windows: Some(vec![window()]),
        rollout_percent: Some(10),
        failure_threshold_percent: Some(10),
        pinned_version: Some(None),
        fleetlock_slots: Some(2),
        resume: true,
    }
}

fn instance() -> api::Instance {
    api::Instance {
        id: 1,
        machine_id: "m-1".into(),
        application_id: "app".into(),
        group: Some("prod".into()),
        version: "1.0.0".into(),
        status: "error".into(),
        ip: "10.0.0.1".into(),
        alias: "node".into(),
        oem: "qemu".into(),
        aleph_version: "1.0.0".into(),
        last_check: 2,
        created_at: 1,
    }
}

fn package_extension() -> api::PackageExtension {
    api::PackageExtension {
        name: "jq".into(),
        size: 4096,
        sha256: "ab".repeat(32),
        sha1: "cd".repeat(20),
    }
}

/// One or more samples of the Rust type behind each schema name of the document.
fn samples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "FleetLockHolder",
            v(api::FleetLockHolder {
                group: "stable".into(),
                id: "e0b1c7f3a9d24c6b8f1e2d3c4b5a6978".into(),
                acquired_at: 1_796_400_000,
            }),
        ),
        (
            "Error",
            v(api::ErrorBody {
                error: "bad".into(),
                field: Some("name".into()),
            }),
        ),
        (
            "Error",
            v(api::ErrorBody {
                error: "bad".into(),
                field: None,
            }),
        ),
        (
            "Caller",
            v(api::Caller {
                token_id: "t".into(),
                role: api::Role::Admin,
            }),
        ),
        (
            "Application",
            v(api::Application {
                id: "a".into(),
                name: "A".into(),
                description: String::new(),
                created_at: 1,
            }),
        ),
        (
            "NewApplication",
            v(api::NewApplication {
                id: "a".into(),
                name: "A".into(),
                description: "d".into(),
            }),
        ),
        (
            "ApplicationUpdate",
            v(api::ApplicationUpdate {
                name: Some("n".into()),
                description: Some("d".into()),
            }),
        ),
        (
            "Channel",
            v(api::Channel {
                id: 1,
                application_id: "a".into(),
                name: "stable".into(),
                version: Some("2.0.0".into()),
                floors: vec!["1.5.0".into()],
                created_at: 1,
            }),
        ),
        (
            "Channel",
            v(api::Channel {
                id: 1,
                application_id: "a".into(),
                name: "stable".into(),
                version: None,
                floors: vec![],
                created_at: 1,
            }),
        ),
        (
            "NewChannel",
            v(api::NewChannel {
                name: "stable".into(),
                version: Some("2.0.0".into()),
                floors: vec!["1.0.0".into()],
            }),
        ),
        (
            "ChannelUpdate",
            v(api::ChannelUpdate {
                version: Some(None),
                floors: Some(vec![]),
            }),
        ),
        (
            "Package",
            v(api::Package {
                id: 1,
                application_id: "a".into(),
                version: "2.0.0".into(),
                filename: "f".into(),
                url: None,
                stored: true,
                download_path: Some("/packages/1/f".into()),
                size: 10,
                sha1_hex: "00".repeat(20),
                sha256_hex: "00".repeat(32),
                created_at: 1,
                extensions: vec![package_extension()],
            }),
        ),
        ("PackageExtension", v(package_extension())),
        (
            "NewExternalPackage",
            v(api::NewExternalPackage {
                version: "2.0.0".into(),
                filename: "f".into(),
                url: "https://x/".into(),
                size: 10,
                sha256_hex: "ab".repeat(32),
                sha1_hex: "ab".repeat(20),
            }),
        ),
        ("MaintenanceWindow", v(window())),
        ("Policy", v(policy())),
        ("PolicyUpdate", v(policy_update())),
        (
            "Group",
            v(api::Group {
                id: 1,
                application_id: "a".into(),
                name: "prod".into(),
                track: "stable".into(),
                channel: Some("stable".into()),
                policy: policy(),
                versions: vec![api::VersionCount {
                    version: "1.0.0".into(),
                    count: 3,
                }],
                statuses: vec![api::StatusCount {
                    status: "complete".into(),
                    count: 3,
                }],
                rollout: api::RolloutProgress {
                    target_version: Some("2.0.0".into()),
                    instances: 3,
                    on_target: 1,
                    in_progress: 1,
                    succeeded: 1,
                    failed: 0,
                    halted: false,
                },
                created_at: 1,
            }),
        ),
        (
            "NewGroup",
            v(api::NewGroup {
                name: "prod".into(),
                track: Some("stable".into()),
                channel: Some("stable".into()),
                policy: Some(policy_update()),
            }),
        ),
        (
            "GroupUpdate",
            v(api::GroupUpdate {
                name: Some("p".into()),
                track: Some("t".into()),
                channel: Some(None),
            }),
        ),
        ("Instance", v(instance())),
        (
            "InstancePage",
            v(api::InstancePage {
                total: 1,
                instances: vec![instance()],
            }),
        ),
        (
            "InstanceDetail",
            v(api::InstanceDetail {
                instance: instance(),
                status_history: vec![api::StatusEntry {
                    status: "error".into(),
                    version: "1.0.0".into(),
                    message: "m".into(),
                    created_at: 1,
                }],
                events: vec![
                    api::EventEntry {
                        event_type: 3,
                        event_result: 0,
                        error_code: Some(44),
                        version: "1.0.0".into(),
                        previous_version: String::new(),
                        created_at: 1,
                        reason: Some("boot_not_blessed".into()),
                    },
                    api::EventEntry {
                        event_type: 13,
                        event_result: 1,
                        error_code: None,
                        version: "1.0.0".into(),
                        previous_version: String::new(),
                        created_at: 1,
                        reason: None,
                    },
                ],
                rolled_back: vec!["2.0.0".into()],
            }),
        ),
        (
            "TokenInfo",
            v(api::TokenInfo {
                id: "t".into(),
                role: "viewer".into(),
                description: String::new(),
                created_at: 1,
                last_used: None,
            }),
        ),
        (
            "NewTokenRequest",
            v(api::NewTokenRequest {
                role: "admin".into(),
                description: "ci".into(),
            }),
        ),
        (
            "NewToken",
            v(api::NewToken {
                id: "t".into(),
                role: api::Role::Viewer,
                token: "kt_x".into(),
            }),
        ),
        (
            "ActivityEntry",
            v(api::ActivityEntry {
                id: 1,
                created_at: 1,
                severity: "warning".into(),
                kind: "rollout.halted".into(),
                actor: "omaha".into(),
                application_id: Some("a".into()),
                group_id: Some(1),
                version: None,
                message: "m".into(),
            }),
        ),
    ]
}

/// Does `value` have JSON type `ty` (OpenAPI 3.1 / JSON Schema names)?
fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// Check `value` against `schema`; problems go to `errs` with their JSON path.
fn check(doc: &Value, schema: &Value, value: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], value, path, errs);
    }
    if let Some(all) = schema["allOf"].as_array() {
        // Each part may only describe its own keys: check types and required keys per part,
        // and undocumented keys against the union of all parts.
        let mut known = Vec::new();
        for part in all {
            let part = resolve(doc, part);
            if let Some(props) = part["properties"].as_object() {
                known.extend(props.keys().cloned());
            }
            let mut lenient = part.clone();
            lenient["additionalProperties"] = Value::Bool(true);
            check(doc, &lenient, value, path, errs);
        }
        if let Some(obj) = value.as_object() {
            for k in obj.keys().filter(|k| !known.contains(k)) {
                errs.push(format!("{path}.{k}: sent but not in the schema"));
            }
        }
        return;
    }
    match &schema["type"] {
        Value::String(t) if !has_type(value, t) => {
            errs.push(format!("{path}: {value} is not of type {t}"));
            return;
        }
        Value::Array(ts) if !ts.iter().any(|t| has_type(value, t.as_str().unwrap_or(""))) => {
            errs.push(format!("{path}: {value} is none of {ts:?}"));
            return;
        }
        _ => {}
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errs.push(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(items) = schema.get("items")
        && let Some(arr) = value.as_array()
    {
        for (i, item) in arr.iter().enumerate() {
            check(doc, items, item, &format!("{path}[{i}]"), errs);
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for req in schema["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                errs.push(format!("{path}.{req}: required but not sent"));
            }
        }
        for (k, val) in obj {
            match props.get(k) {
                Some(p) => check(doc, p, val, &format!("{path}.{k}"), errs),
                None if schema["additionalProperties"] != Value::Bool(true) => {
                    errs.push(format!("{path}.{k}: sent but not in the schema"));
                }
                None => {}
            }
        }
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

#[test]
fn every_schema_matches_its_rust_type() {
    let doc = keelson_server::openapi::document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let samples = samples();
    for name in schemas.keys() {
        assert!(
            samples.iter().any(|(n, _)| n == name),
            "schema {name} has no Rust type sample in this test"
        );
    }
    let mut errs = Vec::new();
    for (name, value) in &samples {
        assert!(
            schemas.contains_key(*name),
            "no schema {name} in the document"
        );
        check(
            &doc,
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
            value,
            name,
            &mut errs,
        );
    }
    assert!(
        errs.is_empty(),
        "document and types disagree:\n{}",
        errs.join("\n")
    );
}

/// Reads a JSON value as one request type.
type Parser = fn(Value) -> Result<(), String>;

fn parses<T: serde::de::DeserializeOwned>(v: Value) -> Result<(), String> {
    serde_json::from_value::<T>(v)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn request_schemas_accept_exactly_the_fields_the_types_read() {
    // Every property a request schema documents is a field the Rust type reads (the types
    // refuse unknown fields, so a documented-but-unread field would be a 422).
    let doc = keelson_server::openapi::document();
    let s = &doc["components"]["schemas"];
    let bodies: Vec<(&str, Parser)> = vec![
        ("NewApplication", parses::<api::NewApplication>),
        ("ApplicationUpdate", parses::<api::ApplicationUpdate>),
        ("NewChannel", parses::<api::NewChannel>),
        ("ChannelUpdate", parses::<api::ChannelUpdate>),
        ("NewExternalPackage", parses::<api::NewExternalPackage>),
        ("PolicyUpdate", parses::<api::PolicyUpdate>),
        ("NewGroup", parses::<api::NewGroup>),
        ("GroupUpdate", parses::<api::GroupUpdate>),
        ("NewTokenRequest", parses::<api::NewTokenRequest>),
    ];
    let samples = samples();
    for (name, parse) in bodies {
        assert_eq!(
            s[name]["additionalProperties"], false,
            "{name} must refuse unknown fields"
        );
        let full = &samples.iter().find(|(n, _)| *n == name).unwrap().1;
        parse(full.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for prop in s[name]["properties"].as_object().unwrap().keys() {
            assert!(
                full.get(prop).is_some(),
                "{name}.{prop}: documented, but the sample (the type) has no such field"
            );
        }
        let mut unknown = full.clone();
        unknown["not_a_field"] = json!(1);
        assert!(parse(unknown).is_err(), "{name} accepts unknown fields");
    }
}
