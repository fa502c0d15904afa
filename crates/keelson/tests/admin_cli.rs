//! `keelson admin` end to end against a real keelson-server (SQLite) started in the test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use keelson_server::embedded::EmbeddedServer;
use serde_json::Value;

const APP: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";

struct Cli<'a> {
    server: &'a EmbeddedServer,
}

impl Cli<'_> {
    fn run_with(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("admin")
            .args(args)
            .env("KEELSON_SERVER", self.server.url())
            .env("KEELSON_TOKEN", token)
            .env_remove("KEELSON_APP")
            .output()
            .unwrap()
    }

    /// Run as admin; must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(&self.server.admin_token, args);
        assert!(
            out.status.success(),
            "keelson admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run as admin with --json; returns the parsed output.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.ok(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Run with `token`; must fail; returns stderr.
    fn fails(&self, token: &str, args: &[&str]) -> String {
        let out = self.run_with(token, args);
        assert!(!out.status.success(), "keelson admin {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[test]
fn admin_cli_drives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let server = EmbeddedServer::start(&url, &dir.path().join("data")).unwrap();
    let cli = Cli { server: &server };

    // Applications.
    let app = cli.json(&[
        "app",
        "create",
        &format!("{{{}}}", APP.to_uppercase()),
        "--name",
        "Keelson OS",
    ]);
    assert_eq!(app["id"], APP);
    assert!(cli.ok(&["app", "list"]).contains("Keelson OS"));

    // Packages: one uploaded from a file, one external.
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = dir.path().join("keelson_update.gz");
    std::fs::write(&file, &payload).unwrap();
    let pkg = cli.json(&[
        "package",
        "upload",
        "--app",
        APP,
        "--version",
        "2.0.0",
        file.to_str().unwrap(),
    ]);
    assert_eq!(pkg["size"], 50_000);
    assert_eq!(pkg["stored"], true);
    // Independent check of the server's hash: sha256sum from coreutils.
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    let sha = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(pkg["sha256_hex"], sha.as_str());
    cli.ok(&[
        "package",
        "add",
        "--app",
        APP,
        "--version",
        "1.0.0",
        "--url",
        "https://updates.example.com/1.0.0/",
        "--filename",
        "keelson_update.gz",
        "--size",
        "10",
        "--sha256",
        &"ab".repeat(32),
    ]);
    let list = cli.json(&["package", "list", "--app", APP]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["version"], "2.0.0");

    // OS-bound extensions: the name comes from the file name (NAME_VERSION.raw) or --name.
    let ext: Vec<u8> = (0..9_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let ext_file = dir.path().join("jq_1.7.1.raw");
    std::fs::write(&ext_file, &ext).unwrap();
    let pkg = cli.json(&[
        "package",
        "add-extension",
        "--app",
        APP,
        "--version",
        "2.0.0",
        ext_file.to_str().unwrap(),
    ]);
    assert_eq!(pkg["extensions"][0]["name"], "jq");
    assert_eq!(pkg["extensions"][0]["size"], 9_000);
    let human = cli.ok(&[
        "package",
        "add-extension",
        "--app",
        APP,
        "--version",
        "2.0.0",
        "--name",
        "tools",
        ext_file.to_str().unwrap(),
    ]);
    assert!(
        human.contains("EXTENSION") && human.contains("tools"),
        "{human}"
    );
    let list = cli.json(&["package", "list", "--app", APP]);
    let names: Vec<&str> = list[0]["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jq", "tools"]);
    assert!(
        cli.ok(&["package", "list", "--app", APP])
            .contains("jq,tools")
    );
    // The external package cannot carry extensions; the server names the field.
    let err = cli.fails(
        &server.admin_token,
        &[
            "package",
            "add-extension",
            "--app",
            APP,
            "--version",
            "1.0.0",
            ext_file.to_str().unwrap(),
        ],
    );
    assert!(err.contains("field version"), "{err}");
    let err = cli.fails(
        &server.admin_token,
        &[
            "package",
            "add-extension",
            "--app",
            APP,
            "--version",
            "2.0.0",
            "--name",
            ".bad",
            ext_file.to_str().unwrap(),
        ],
    );
    assert!(err.contains("must not start with a dot"), "{err}");
    cli.ok(&[
        "package",
        "remove-extension",
        "--app",
        APP,
        "--version",
        "2.0.0",
        "tools",
    ]);
    let list = cli.json(&["package", "list", "--app", APP]);
    assert_eq!(list[0]["extensions"].as_array().unwrap().len(), 1);

    // Channel and group.
    let ch = cli.json(&[
        "channel",
        "create",
        "--app",
        APP,
        "stable",
        "--version",
        "1.0.0",
    ]);
    assert_eq!(ch["version"], "1.0.0");
    let ch = cli.json(&[
        "channel",
        "set",
        "--app",
        APP,
        "stable",
        "--version",
        "2.0.0",
        "--floors",
        "1.0.0",
    ]);
    assert_eq!(ch["version"], "2.0.0");
    assert_eq!(ch["floors"][0], "1.0.0");
    let g = cli.json(&[
        "group",
        "create",
        "--app",
        APP,
        "prod",
        "--track",
        "stable",
        "--channel",
        "stable",
    ]);
    assert_eq!(g["rollout"]["target_version"], "2.0.0");
    assert!(cli.ok(&["group", "list", "--app", APP]).contains("prod"));

    // Policy: set some values, the rest stay.
    let p = cli.json(&[
        "policy",
        "set",
        "--app",
        APP,
        "prod",
        "--max-updates",
        "5",
        "--timezone",
        "Europe/Berlin",
        "--window",
        "sat,sun 22:00-04:00",
        "--rollout-percent",
        "20",
        "--pin",
        "1.0.0",
    ]);
    assert_eq!(p["max_updates_per_period"], 5);
    assert_eq!(p["rollout_percent"], 20);
    assert_eq!(p["pinned_version"], "1.0.0");
    assert_eq!(p["maintenance_windows"][0]["days"][1], "sun");
    assert_eq!(p["updates_enabled"], true);
    let human = cli.ok(&["policy", "get", "--app", APP, "prod"]);
    assert!(
        human.contains("sat,sun 22:00-04:00 (Europe/Berlin)"),
        "{human}"
    );
    let p = cli.json(&[
        "policy",
        "set",
        "--app",
        APP,
        "prod",
        "--unpin",
        "--clear-windows",
    ]);
    assert_eq!(p["pinned_version"], Value::Null);
    assert_eq!(p["maintenance_windows"], serde_json::json!([]));

    // Invalid values come back naming the field; nothing changes.
    let err = cli.fails(
        &server.admin_token,
        &[
            "policy",
            "set",
            "--app",
            APP,
            "prod",
            "--rollout-percent",
            "300",
        ],
    );
    assert!(
        err.contains("400") && err.contains("field rollout_percent"),
        "{err}"
    );
    let err = cli.fails(
        &server.admin_token,
        &[
            "policy",
            "set",
            "--app",
            APP,
            "prod",
            "--timezone",
            "Moon/Base",
        ],
    );
    assert!(err.contains("field timezone"), "{err}");
    assert_eq!(
        cli.json(&["policy", "get", "--app", APP, "prod"])["rollout_percent"],
        20
    );

    // Roles: a viewer reads but cannot write; no token is refused before any request.
    let viewer = &server.viewer_token;
    let out = cli.run_with(viewer, &["group", "list", "--app", APP, "--json"]);
    assert!(out.status.success());
    let err = cli.fails(
        viewer,
        &["policy", "set", "--app", APP, "prod", "--safe-mode", "true"],
    );
    assert!(err.contains("403"), "{err}");
    let err = cli.fails("", &["app", "list"]);
    assert!(err.contains("KEELSON_TOKEN"), "{err}");
    let err = cli.fails("kt_wrong", &["app", "list"]);
    assert!(err.contains("401"), "{err}");

    // --server and --token work without the environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args([
            "admin",
            "app",
            "list",
            "--json",
            "--server",
            &server.url(),
            "--token",
        ])
        .arg(&server.viewer_token)
        .env_remove("KEELSON_SERVER")
        .env_remove("KEELSON_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(apps[0]["id"], APP);

    // Tokens: create one, use it, revoke it.
    let t = cli.json(&["token", "create", "--role", "viewer", "--description", "ci"]);
    let secret = t["token"].as_str().unwrap().to_string();
    let out = cli.run_with(&secret, &["app", "list"]);
    assert!(out.status.success());
    let list = cli.json(&["token", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&secret));
    cli.ok(&["token", "revoke", t["id"].as_str().unwrap()]);
    let err = cli.fails(&secret, &["app", "list"]);
    assert!(err.contains("401"), "{err}");
    let err = cli.fails(viewer, &["token", "list"]);
    assert!(err.contains("403"), "{err}");

    // FleetLock holders: a node takes a slot of prod (track stable), an admin releases it.
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/pre-reboot", server.addr))
        .header("fleet-lock-protocol", "true")
        .body(r#"{"client_params": {"id": "gone-node", "group": "stable"}}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let hs = cli.json(&["fleetlock", "holders"]);
    assert_eq!(hs[0]["group"], "stable");
    assert_eq!(hs[0]["id"], "gone-node");
    assert!(hs[0]["acquired_at"].as_i64().unwrap() > 0);
    let text = cli.ok(&["fleetlock", "holders", "--group", "stable"]);
    assert!(
        text.contains("gone-node") && text.contains("SINCE"),
        "{text}"
    );
    let err = cli.fails(viewer, &["fleetlock", "release", "stable", "gone-node"]);
    assert!(err.contains("403"), "{err}");
    cli.ok(&["fleetlock", "release", "stable", "gone-node"]);
    assert_eq!(
        cli.json(&["fleetlock", "holders"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let err = cli.fails(
        &server.admin_token,
        &["fleetlock", "release", "stable", "gone-node"],
    );
    assert!(err.contains("404"), "{err}");

    // Instances and activity.
    let page = cli.json(&["instance", "list", "--app", APP]);
    assert_eq!(page["total"], 0);
    let err = cli.fails(&server.admin_token, &["instance", "show", "99"]);
    assert!(err.contains("404") && err.contains("not found"), "{err}");
    let act = cli.json(&["activity", "--limit", "3"]);
    assert_eq!(act.as_array().unwrap().len(), 3);
    assert_eq!(act[0]["kind"], "fleetlock.released_by_admin");
    assert_eq!(act[1]["kind"], "fleetlock.locked");
    assert_eq!(act[2]["kind"], "token.revoked");

    // A node's failure report with its reason: `instance show` lists it; clearing a rollback
    // the node does not have is the server's 404.
    let report = format!(
        r#"<request protocol="3.0" ismachine="1"><app appid="{{{APP}}}" version="1.0.0" track="stable" machineid="node-a">
           <event eventtype="3" eventresult="0" errorcode="10" keelson_reason="esp_full"/></app></request>"#
    );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/update/", server.url()))
        .body(report)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page = cli.json(&["instance", "list", "--app", APP]);
    let id = page["instances"][0]["id"].as_i64().unwrap().to_string();
    let shown = cli.ok(&["instance", "show", &id]);
    assert!(
        shown.contains("REASON") && shown.contains("esp_full"),
        "{shown}"
    );
    let d = cli.json(&["instance", "show", &id]);
    assert_eq!(d["events"][0]["reason"], "esp_full");
    assert_eq!(d["rolled_back"], serde_json::json!([]));
    let err = cli.fails(
        &server.admin_token,
        &["instance", "clear-rollback", &id, "2.0.0"],
    );
    assert!(err.contains("404"), "{err}");
    let err = cli.fails(viewer, &["instance", "clear-rollback", &id, "2.0.0"]);
    assert!(err.contains("403"), "{err}");

    // Deletes.
    let err = cli.fails(
        &server.admin_token,
        &["package", "delete", "--app", APP, "2.0.0"],
    );
    assert!(err.contains("409"), "{err}");
    cli.ok(&["group", "delete", "--app", APP, "prod"]);
    cli.ok(&["channel", "delete", "--app", APP, "stable"]);
    cli.ok(&["package", "delete", "--app", APP, "2.0.0"]);
    let d = cli.json(&["app", "delete", APP]);
    assert_eq!(d["deleted"], format!("application {APP}"));
    assert_eq!(cli.json(&["app", "list"]), serde_json::json!([]));
}
