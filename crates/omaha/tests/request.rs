#![allow(clippy::unwrap_used)]
//! Requests as update_engine sends them, and the ways a bad one is refused.

use keelson_omaha::{
    Arch, Error, ErrorCode, ErrorFlags, EventResult, EventType, ExitCode, FLATCAR_APP_ID, Limits,
    Request,
};

/// The update check captured from Flatcar's update_engine (docs: update-stack.md §1), verbatim
/// apart from the elided ids.
const CAPTURED_UPDATE_CHECK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/update_check.xml"
));

fn parse(s: &str) -> Result<Request, Error> {
    Request::parse(s.as_bytes(), &Limits::default())
}

#[test]
fn captured_update_check_parses_into_every_field() {
    let r = parse(CAPTURED_UPDATE_CHECK).unwrap();
    assert_eq!(r.protocol, "3.0");
    assert_eq!(r.version.as_deref(), Some("update_engine-0.4.10"));
    assert_eq!(r.updater_version.as_deref(), Some("update_engine-0.4.10"));
    assert_eq!(r.install_source.as_deref(), Some("scheduler"));
    assert_eq!(r.is_machine, Some(true));
    let os = r.os.as_ref().unwrap();
    assert_eq!(os.platform.as_deref(), Some("CoreOS"));
    assert_eq!(os.service_pack.as_deref(), Some("3975.2.0_x86_64"));
    assert_eq!(r.apps.len(), 1);
    let app = &r.apps[0];
    assert_eq!(app.app_id, FLATCAR_APP_ID);
    assert_eq!(app.version.as_deref(), Some("3975.2.0"));
    assert_eq!(app.track.as_deref(), Some("stable"));
    assert_eq!(
        app.machine_id.as_deref(),
        Some("3f2a8a5c2b2e4c6f9d1e0a7b5c3d2e1f")
    );
    assert_eq!(app.oem.as_deref(), Some("ami"));
    assert_eq!(app.oem_version.as_deref(), Some("0.1.0"));
    assert_eq!(app.aleph_version.as_deref(), Some("3510.2.0"));
    assert_eq!(app.machine_alias.as_deref(), Some(""));
    assert_eq!(app.lang.as_deref(), Some("en-US"));
    assert_eq!(app.board.as_deref(), Some("amd64-usr"));
    assert_eq!(app.hardware_class.as_deref(), Some(""));
    assert_eq!(app.delta_okay, Some(false));
    assert_eq!(app.ping.as_ref().unwrap().active, Some(true));
    assert!(app.update_check.is_some());
    assert_eq!(app.events.len(), 1);
    let e = &app.events[0];
    assert_eq!(e.event_type, EventType::UpdateComplete);
    assert_eq!(e.event_result, EventResult::SuccessReboot);
    assert_eq!(e.previous_version.as_deref(), Some(""));
    // An empty previousversion means "nothing was updated", not success.
    assert!(!e.is_update_success());
    assert!(!e.is_failure());
    assert_eq!(r.arch(app), Some(Arch::Amd64));
}

#[test]
fn captured_request_round_trips_deterministically() {
    let r = parse(CAPTURED_UPDATE_CHECK).unwrap();
    let xml = r.to_xml();
    let again = parse(&xml).unwrap();
    assert_eq!(again, r);
    assert_eq!(again.to_xml(), xml);
    assert!(xml.contains(r#"<ping active="1"></ping>"#), "{xml}");
    assert!(xml.contains(r#"<event eventtype="3" eventresult="2" previousversion=""></event>"#));
}

#[test]
fn event_only_requests_with_error_codes_and_flags() {
    // Rollback report (3/0/44), a flagged error written as %d (negative), download events.
    let xml = r#"<request protocol="3.0" version="update_engine-0.4.10">
      <app appid="e96281a6-d1af-4bde-9a0a-97b76e56dc57" version="3975.2.0" track="beta" machineid="m1">
        <event eventtype="3" eventresult="0" errorcode="44"></event>
        <event eventtype="3" eventresult="0" errorcode="-1073741815"/>
        <event eventtype="3" eventresult="0" errorcode="268435490"/>
        <event eventtype="13" eventresult="1"/>
        <event eventtype="14" eventresult="1"/>
        <event eventtype="3" eventresult="2" previousversion="3900.0.0"/>
        <event eventtype="3" eventresult="9" errorcode="40"/>
      </app></request>"#;
    let r = parse(xml).unwrap();
    let app = &r.apps[0];
    assert!(app.ping.is_none() && app.update_check.is_none());
    let ev = &app.events;
    assert!(ev[0].is_rollback());
    assert_eq!(app.rollback_event(), Some(&ev[0]));
    assert_eq!(
        ev[0].error_code.unwrap().exit_code(),
        Some(ExitCode::RollbackError)
    );
    let (base, flags) = ev[1].error_code.unwrap().decode();
    assert_eq!(base, ExitCode::DownloadTransferError.code());
    assert!(flags.dev_mode && flags.resumed && !flags.test_image && !flags.test_omaha_url);
    assert!(ev[1].is_failure() && !ev[1].is_rollback());
    assert_eq!(
        ev[2].error_code.unwrap().decode(),
        (
            ExitCode::OmahaResponseInvalid.code(),
            ErrorFlags::from_bits(ErrorFlags::TEST_OMAHA_URL)
        )
    );
    assert_eq!(ev[3].event_type, EventType::UpdateDownloadStarted);
    assert_eq!(ev[4].event_type, EventType::UpdateDownloadFinished);
    assert!(ev[5].is_update_success());
    assert_eq!(ev[6].event_result, EventResult::UpdateDeferred);
    // A rollback with flag bits is still a rollback.
    let flagged = xml.replace(
        r#"errorcode="44""#,
        &format!(r#"errorcode="{}""#, 44 | (1u32 << 28)),
    );
    assert!(parse(&flagged).unwrap().apps[0].events[0].is_rollback());
    // Written back unsigned, read back equal.
    let out = r.to_xml();
    assert!(out.contains(r#"errorcode="3221225481""#), "{out}");
    assert_eq!(parse(&out).unwrap(), r);
    assert_eq!(ErrorCode::ROLLBACK.0, 44);
}

#[test]
fn tolerates_unknown_attributes_elements_namespaces_and_whitespace() {
    let xml = "\u{feff}<?xml version='1.0'?>\n<!-- from a newer client -->\n\
        <request protocol='3.0' dedup='cr' xmlns:x='urn:x' x:extra='1'>\n\t\
        <hw physmemory='8'/><os platform='CoreOS' arch='arm'><x:note/></os>\n\
        <app appid='{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}' version='1.2.3' cohort='c' board='whatever'>\
        <data name='x'>text is ignored</data><updatecheck targetversionprefix='1.'/>\
        <ping active='0' a='-1' r='5'/></app>\n</request>\n\n";
    let r = parse(xml).unwrap();
    let app = &r.apps[0];
    assert_eq!(
        app.normalized_app_id(),
        "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
    );
    assert_eq!(
        app.update_check
            .as_ref()
            .unwrap()
            .target_version_prefix
            .as_deref(),
        Some("1.")
    );
    let ping = app.ping.as_ref().unwrap();
    assert_eq!(
        (ping.active, ping.active_days, ping.roll_call_days),
        (Some(false), Some(-1), Some(5))
    );
    // Unknown board: the architecture falls back to os@arch.
    assert_eq!(r.arch(app), Some(Arch::Arm64));
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let ok_app = r#"<app appid="a" version="1"><updatecheck/></app>"#;
    // (body, substring the error message must contain)
    let cases: Vec<(String, &str)> = vec![
        (CAPTURED_UPDATE_CHECK[..CAPTURED_UPDATE_CHECK.len() / 2].to_owned(), "XML"),
        (r#"<request protocol="3.0"><app appid="a">"#.to_owned(), "request/app[0] is never closed"),
        ("".to_owned(), "empty"),
        ("   \n".to_owned(), "empty"),
        (format!(r#"<response protocol="3.0">{ok_app}</response>"#), "expected <request>"),
        (format!("<request>{ok_app}</request>"), "request: required attribute protocol"),
        (format!(r#"<request protocol="2.0">{ok_app}</request>"#), "only \"3.0\""),
        (r#"<request protocol="3.0"><app version="1"/></request>"#.to_owned(), "request/app[0]: required attribute appid"),
        (r#"<request protocol="3.0"><app appid=" "/></request>"#.to_owned(), "attribute appid"),
        (
            r#"<request protocol="3.0"><app appid="a"><event eventtype="x3" eventresult="1"/></app></request>"#.to_owned(),
            "request/app[0]/event[0]: attribute eventtype is \"x3\"",
        ),
        (
            r#"<request protocol="3.0"><app appid="a"><event eventtype="3" eventresult="-1"/></app></request>"#.to_owned(),
            "attribute eventresult",
        ),
        (
            r#"<request protocol="3.0"><app appid="a"><event eventtype="3" eventresult="0" errorcode="99999999999"/></app></request>"#.to_owned(),
            "attribute errorcode",
        ),
        (
            r#"<request protocol="3.0"><app appid="a"><event eventresult="0"/></app></request>"#.to_owned(),
            "required attribute eventtype",
        ),
        (
            r#"<request protocol="3.0"><app appid="a"/><app appid="b"><ping active="yes"/></app></request>"#.to_owned(),
            "request/app[1]/ping[0]: attribute active",
        ),
        (format!(r#"<request protocol="3.0" ismachine="2">{ok_app}</request>"#), "attribute ismachine"),
        (format!(r#"<request protocol="3.0">{ok_app}</request><request/>"#), "after the root"),
    ];
    for (body, needle) in cases {
        let err = parse(&body).unwrap_err().to_string();
        assert!(
            err.contains(needle),
            "{body:?}\n  gave {err:?}\n  wanted {needle:?}"
        );
    }
}

#[test]
fn limits_stop_big_and_deep_bodies() {
    let limits = Limits::default();
    let too_big = format!(
        r#"<request protocol="3.0"><app appid="a" version="{}"/></request>"#,
        "9".repeat(limits.max_body_bytes)
    );
    assert!(matches!(
        Request::parse(too_big.as_bytes(), &limits),
        Err(Error::BodyTooLarge { .. })
    ));
    let deep = format!(
        r#"<request protocol="3.0">{}{}</request>"#,
        "<x>".repeat(limits.max_depth),
        "</x>".repeat(limits.max_depth)
    );
    match Request::parse(deep.as_bytes(), &limits) {
        Err(Error::TooDeep { path, limit }) => {
            assert_eq!(limit, limits.max_depth);
            assert!(path.starts_with("request/x[0]/x[0]"), "{path}");
        }
        other => panic!("{other:?}"),
    }
    let many = format!(
        r#"<request protocol="3.0">{}</request>"#,
        "<x/>".repeat(limits.max_elements)
    );
    assert!(matches!(
        Request::parse(many.as_bytes(), &limits),
        Err(Error::TooManyElements { .. })
    ));
    // A tighter limit applies to an otherwise fine request.
    let tight = Limits {
        max_body_bytes: 200,
        ..Limits::default()
    };
    assert!(matches!(
        Request::parse(CAPTURED_UPDATE_CHECK.as_bytes(), &tight),
        Err(Error::BodyTooLarge { limit: 200, .. })
    ));
}

#[test]
fn default_request_is_a_valid_empty_request() {
    let r = Request {
        apps: vec![keelson_omaha::RequestApp {
            app_id: "a".to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(parse(&r.to_xml()).unwrap(), r);
}

#[test]
fn keelson_reason_is_read_when_it_is_a_slug_and_dropped_otherwise() {
    let with = |reason: &str| {
        format!(
            r#"<request protocol="3.0"><app appid="a"><event eventtype="3" eventresult="0" errorcode="44" keelson_reason="{reason}"/></app></request>"#
        )
    };
    let r = parse(&with("health_check_failed")).unwrap();
    let e = &r.apps[0].events[0];
    assert_eq!(e.reason.as_deref(), Some("health_check_failed"));
    assert!(e.is_rollback(), "the extra attribute changes nothing else");
    // Written back as the same attribute, read back equal.
    let out = r.to_xml();
    assert!(
        out.contains(r#"keelson_reason="health_check_failed""#),
        "{out}"
    );
    assert_eq!(parse(&out).unwrap(), r);

    let longest = "a".repeat(keelson_omaha::MAX_REASON_LEN);
    assert_eq!(
        parse(&with(&longest)).unwrap().apps[0].events[0]
            .reason
            .as_deref(),
        Some(longest.as_str())
    );
    // Not a slug: ignored, and the event is still read.
    let too_long = "a".repeat(keelson_omaha::MAX_REASON_LEN + 1);
    for bad in [
        "",
        "Esp_Full",
        "esp full",
        "esp/full",
        "&lt;x&gt;",
        "ümlaut",
        &too_long,
    ] {
        let r = parse(&with(bad)).unwrap();
        let e = &r.apps[0].events[0];
        assert_eq!(e.reason, None, "{bad:?}");
        assert!(e.is_rollback(), "{bad:?}");
    }
    // Without the attribute, nothing is written.
    let plain = parse(
        r#"<request protocol="3.0"><app appid="a"><event eventtype="3" eventresult="0" errorcode="44"/></app></request>"#,
    )
    .unwrap();
    assert_eq!(plain.apps[0].events[0].reason, None);
    assert!(!plain.to_xml().contains("keelson_reason"));
}
