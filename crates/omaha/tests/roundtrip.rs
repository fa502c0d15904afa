#![allow(clippy::unwrap_used)]
//! The fuzz target's property, on stable: parsing never panics, and whatever parses writes
//! back to XML that parses to the same value (see `fuzz/fuzz_targets/omaha_request.rs`).

use keelson_omaha::{
    ErrorCode, Event, EventResult, EventType, Limits, Os, Ping, Request, RequestApp, UpdateCheck,
    check_round_trip,
};
use proptest::prelude::*;

const SEED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/update_check.xml"
));

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{0,12}", "[\\t\\n\\r&<>\"' a-z0-9{}.-]{0,12}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn event() -> impl Strategy<Value = Event> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        opt_text(),
        proptest::option::of("[a-z0-9_-]{1,64}"),
    )
        .prop_map(|(t, r, c, p, reason)| Event {
            event_type: EventType::from_code(t % 20),
            event_result: EventResult::from_code(r),
            error_code: c.map(ErrorCode),
            previous_version: p,
            reason,
        })
}

fn app() -> impl Strategy<Value = RequestApp> {
    (
        "[a-z0-9{}-]{1,40}",
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        ),
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        ),
        proptest::option::of((
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<i64>()),
        )),
        proptest::option::of(opt_text()),
        proptest::collection::vec(event(), 0..4),
    )
        .prop_map(
            |(id, a, b, (delta, multi), ping, check, events)| RequestApp {
                app_id: id,
                version: a.0,
                track: a.1,
                boot_id: a.2,
                machine_id: a.3,
                machine_alias: a.4,
                oem: a.5,
                oem_version: b.0,
                aleph_version: b.1,
                lang: b.2,
                board: b.3,
                hardware_class: b.4,
                delta_okay: delta,
                multi_manifest_ok: multi,
                ping: ping.map(|(active, days)| Ping {
                    active,
                    active_days: days,
                    roll_call_days: days.map(|d| d.wrapping_neg()),
                }),
                update_check: check.map(|p| UpdateCheck {
                    target_version_prefix: p,
                }),
                events,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    (
        (
            opt_text(),
            opt_text(),
            opt_text(),
            proptest::option::of(any::<bool>()),
        ),
        proptest::option::of((opt_text(), opt_text(), opt_text(), opt_text())),
        proptest::collection::vec(app(), 0..3),
    )
        .prop_map(|((v, u, s, m), os, apps)| Request {
            protocol: "3.0".to_owned(),
            version: v,
            updater_version: u,
            install_source: s,
            is_machine: m,
            os: os.map(|(version, platform, service_pack, arch)| Os {
                version,
                platform,
                service_pack,
                arch,
            }),
            apps,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any typed request writes XML that parses back to itself.
    #[test]
    fn any_request_survives_write_then_parse(r in request()) {
        let xml = r.to_xml();
        let back = Request::parse(xml.as_bytes(), &Limits::default());
        prop_assert_eq!(back.as_ref().ok(), Some(&r), "{:?}\n{}", back, xml);
    }

    /// Arbitrary bytes: no panic, and the round-trip property holds when they parse.
    #[test]
    fn arbitrary_bytes_never_break_the_round_trip(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(check_round_trip(&body), Ok(()));
    }

    /// The real request with a few bytes overwritten by XML-significant characters: mostly
    /// still parseable, so this reaches the typed layer far more often than random bytes.
    #[test]
    fn mutated_real_request_keeps_the_round_trip(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(b"<>/=\"' &;#x01a-9\n".to_vec())), 1..4),
    ) {
        let mut body = SEED.as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        prop_assert_eq!(check_round_trip(&body), Ok(()));
    }
}

#[test]
fn seed_parses() {
    assert!(Request::parse(SEED.as_bytes(), &Limits::default()).is_ok());
    assert_eq!(check_round_trip(SEED.as_bytes()), Ok(()));
}
