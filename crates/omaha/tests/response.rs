#![allow(clippy::unwrap_used)]
//! Responses in Nebraska's shape, and what update_engine requires of them.

use keelson_omaha::{
    Action, AppStatus, Error, FLATCAR_APP_ID, Limits, Package, Response, ResponseApp, UpdateOffer,
    UpdateStatus,
};

/// A Nebraska update answer with an OEM sysext package (update-stack.md §1), with
/// concrete hashes filled in.
const NEBRASKA_UPDATE: &str = r#"<response protocol="3.0" server="nebraska">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">
    <ping status="ok"></ping>
    <updatecheck status="ok">
      <urls><url codebase="https://update.release.flatcar-linux.net/amd64-usr/4081.2.0/"></url></urls>
      <manifest version="4081.2.0">
        <packages>
          <package name="flatcar_production_update.gz" hash="2jmj7l5rSw0yVb/vlWAYkK/YBwk=" size="382137917" required="true"></package>
          <package name="oem-azure.gz" hash="2jmj7l5rSw0yVb/vlWAYkK/YBwk=" hash_sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" size="40897503" required="false"></package>
        </packages>
        <actions><action event="postinstall" sha256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" DisablePayloadBackoff="true"></action></actions>
      </manifest>
    </updatecheck>
    <event status="ok"></event>
  </app>
</response>"#;

fn parse(s: &str) -> Result<Response, Error> {
    Response::parse(s.as_bytes(), &Limits::default())
}

#[test]
fn nebraska_update_response_parses_and_round_trips() {
    let r = parse(NEBRASKA_UPDATE).unwrap();
    assert_eq!(r.server.as_deref(), Some("nebraska"));
    assert_eq!(r.daystart.unwrap().elapsed_seconds, 0);
    let app = &r.apps[0];
    assert_eq!(app.status, AppStatus::Ok);
    assert_eq!(app.ping.as_deref(), Some("ok"));
    assert_eq!(app.events, vec!["ok".to_owned()]);
    let u = app.update_check.as_ref().unwrap();
    assert_eq!(u.status, UpdateStatus::Ok);
    assert_eq!(
        u.urls,
        vec!["https://update.release.flatcar-linux.net/amd64-usr/4081.2.0/"]
    );
    let m = u.manifest.as_ref().unwrap();
    assert_eq!(m.version, "4081.2.0");
    assert_eq!(m.packages.len(), 2);
    assert_eq!(m.packages[0].size, 382137917);
    assert!(m.packages[0].required && !m.packages[1].required);
    assert_eq!(
        m.packages[1].hash_sha256_hex.as_deref().map(str::len),
        Some(64)
    );
    let action = &m.actions[0];
    assert_eq!(action.event, "postinstall");
    assert_eq!(action.disable_payload_backoff, Some(true));
    // sha256 of the empty string, base64.
    assert_eq!(
        action.sha256_bytes().unwrap()[..4],
        [0xe3, 0xb0, 0xc4, 0x42]
    );

    let xml = r.to_xml();
    let again = parse(&xml).unwrap();
    assert_eq!(again, r);
    assert_eq!(again.to_xml(), xml);
}

#[test]
fn builders_produce_what_update_engine_accepts() {
    let offer = UpdateOffer {
        version: "4081.2.0".to_owned(),
        urls: vec!["http://10.0.2.2:8080/packages/p1/".to_owned()],
        package_name: "keelson_update.gz".to_owned(),
        size: 1234,
        sha256: [0xab; 32],
        sha1: Some([0x01; 20]),
        extra_packages: vec![Package {
            name: "oem-qemu.gz".to_owned(),
            hash_sha1: None,
            hash_sha256_hex: Some("00".repeat(32)),
            size: 10,
            required: false,
        }],
    };
    let resp = Response::new(vec![ResponseApp::update(FLATCAR_APP_ID, true, 1, &offer)]);
    let xml = resp.to_xml();
    // Exactly the elements and attributes update_engine reads.
    for needle in [
        r#"<response protocol="3.0" server="keelson">"#,
        r#"<daystart elapsed_seconds="0"></daystart>"#,
        r#"<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">"#,
        r#"<ping status="ok"></ping>"#,
        r#"<updatecheck status="ok">"#,
        r#"<url codebase="http://10.0.2.2:8080/packages/p1/"></url>"#,
        r#"<manifest version="4081.2.0">"#,
        r#"<package name="keelson_update.gz" hash="AQEBAQEBAQEBAQEBAQEBAQEBAQE=" size="1234" required="true"></package>"#,
        r#"<package name="oem-qemu.gz" hash_sha256="0000"#,
        r#"<action event="postinstall" sha256="q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=" needsadmin="false" IsDeltaPayload="false" DisablePayloadBackoff="true"></action>"#,
        r#"<event status="ok"></event>"#,
    ] {
        assert!(xml.contains(needle), "missing {needle}\n{xml}");
    }
    let back = parse(&xml).unwrap();
    assert_eq!(back, resp);
    let action: &Action = &back.apps[0]
        .update_check
        .as_ref()
        .unwrap()
        .manifest
        .as_ref()
        .unwrap()
        .actions[0];
    assert_eq!(action.sha256_bytes(), Some([0xab; 32]));

    let none = Response::new(vec![ResponseApp::no_update(FLATCAR_APP_ID, true, 1)]).to_xml();
    assert!(
        none.contains(r#"<updatecheck status="noupdate"></updatecheck>"#),
        "{none}"
    );
    assert!(!none.contains("manifest"));
    let events = Response::new(vec![ResponseApp::events_only("a", 2)]).to_xml();
    assert_eq!(events.matches(r#"<event status="ok"></event>"#).count(), 2);
    assert!(!events.contains("updatecheck") && !events.contains("<ping"));
}

#[test]
fn error_statuses_are_kept_whole() {
    let xml = r#"<response protocol="3.0"><app appid="a" status="error-maxUpdatesPerPeriodLimitReached">
        <updatecheck status="error-internal"/></app></response>"#;
    let r = parse(xml).unwrap();
    assert_eq!(
        r.apps[0].status,
        AppStatus::Other("error-maxUpdatesPerPeriodLimitReached".into())
    );
    assert_eq!(
        r.apps[0].update_check.as_ref().unwrap().status,
        UpdateStatus::Error("error-internal".into())
    );
    assert_eq!(parse(&r.to_xml()).unwrap(), r);
}

#[test]
fn ok_responses_missing_what_update_engine_needs_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"<urls><url codebase="https://update.release.flatcar-linux.net/amd64-usr/4081.2.0/"></url></urls>"#,
            "",
            "urls/url is missing",
        ),
        (
            r#"size="382137917""#,
            r#"size="0""#,
            "attribute size is \"0\"",
        ),
        (
            r#"size="382137917""#,
            r#"size="-5""#,
            "attribute size is \"-5\"",
        ),
        (
            r#" sha256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=""#,
            "",
            "attribute sha256",
        ),
        (
            r#"sha256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=""#,
            r#"sha256="bm90IGEgaGFzaA==""#,
            "attribute sha256",
        ),
        (
            r#"event="postinstall""#,
            r#"event="preinstall""#,
            "action[@event=postinstall] is missing",
        ),
        (
            r#"<updatecheck status="ok">"#,
            r#"<updatecheck status="maybe">"#,
            "attribute status is \"maybe\"",
        ),
        (
            r#"<updatecheck status="ok">"#,
            "<updatecheck>",
            "required attribute status",
        ),
        (
            r#"codebase="https://update.release.flatcar-linux.net/amd64-usr/4081.2.0/""#,
            r#"codebase="""#,
            "updatecheck[0]/urls[0]/url[0]: attribute codebase",
        ),
        (r#"protocol="3.0""#, r#"protocol="3.1""#, "only \"3.0\""),
        (
            r#"elapsed_seconds="0""#,
            r#"elapsed_seconds="zero""#,
            "response/daystart[0]: attribute elapsed_seconds",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(NEBRASKA_UPDATE.contains(from), "{from}");
        let body = NEBRASKA_UPDATE.replacen(from, to, 1);
        let err = parse(&body).unwrap_err().to_string();
        assert!(
            err.contains(needle),
            "{from} -> {to}: {err:?} lacks {needle:?}"
        );
    }
}

#[test]
fn go_omaha_malformed_no_update_fixture_is_rejected() {
    // go-omaha's fixtures/update-engine/no-update/response.xml is broken this way.
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<response" protocol="3.0" server="update.core-os.net">
 <daystart elapsed_seconds="49008"/>
 <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">
  <updatecheck status="noupdate"/>
 </app>
"#;
    assert!(parse(body).is_err());
}

#[test]
fn manifest_version_is_optional_like_in_update_engine() {
    let body = NEBRASKA_UPDATE.replace(r#"<manifest version="4081.2.0">"#, "<manifest>");
    let r = parse(&body).unwrap();
    let m = r.apps[0]
        .update_check
        .as_ref()
        .unwrap()
        .manifest
        .as_ref()
        .unwrap();
    assert_eq!(m.version, "");
    assert_eq!(parse(&r.to_xml()).unwrap(), r);
}

#[test]
fn missing_status_and_ping_status_read_as_ok() {
    let r = parse(r#"<response protocol="3.0"><app appid="a"><ping/><updatecheck status="noupdate"/></app></response>"#).unwrap();
    assert_eq!(r.apps[0].status, AppStatus::Ok);
    assert_eq!(r.apps[0].ping.as_deref(), Some("ok"));
    assert!(r.daystart.is_none());
}
