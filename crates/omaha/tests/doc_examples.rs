#![allow(clippy::unwrap_used)]
//! Every ```xml block in docs/omaha.md must parse (and round-trip), so the spec cannot rot.

use keelson_omaha::{Limits, Request, Response};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/omaha.md"));

fn xml_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match &mut current {
            None if line.trim_start() == "```xml" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "unterminated ```xml block in docs/omaha.md"
    );
    blocks
}

#[test]
fn every_doc_example_parses_and_round_trips() {
    let limits = Limits::default();
    let (mut requests, mut responses) = (0, 0);
    for block in xml_blocks() {
        if block.contains("<request") {
            let r = Request::parse(block.as_bytes(), &limits)
                .unwrap_or_else(|e| panic!("{e}\n{block}"));
            assert_eq!(Request::parse(r.to_xml().as_bytes(), &limits).unwrap(), r);
            requests += 1;
        } else {
            let r = Response::parse(block.as_bytes(), &limits)
                .unwrap_or_else(|e| panic!("{e}\n{block}"));
            assert_eq!(Response::parse(r.to_xml().as_bytes(), &limits).unwrap(), r);
            // Responses written with a declaration are documented in our canonical form.
            if block.starts_with("<?xml") {
                assert_eq!(r.to_xml(), block);
            }
            responses += 1;
        }
    }
    assert_eq!((requests, responses), (4, 3), "examples were added or lost");
}

#[test]
fn doc_update_example_is_exactly_what_the_builder_writes() {
    // The documented "no update" answer is byte-for-byte what ResponseApp::no_update produces.
    let blocks = xml_blocks();
    let documented = blocks
        .iter()
        .find(|b| b.contains(r#"status="noupdate""#))
        .unwrap();
    let built = Response::new(vec![keelson_omaha::ResponseApp::no_update(
        keelson_omaha::FLATCAR_APP_ID,
        true,
        1,
    )])
    .to_xml();
    assert_eq!(&built, documented);
}

#[test]
fn doc_rollback_example_is_a_rollback() {
    let blocks = xml_blocks();
    let block = blocks
        .iter()
        .find(|b| b.contains(r#"errorcode="44""#))
        .unwrap();
    let r = Request::parse(block.as_bytes(), &Limits::default()).unwrap();
    assert!(r.apps[0].events[0].is_rollback());
}

#[test]
fn doc_reason_example_carries_its_slug() {
    let blocks = xml_blocks();
    let block = blocks
        .iter()
        .find(|b| b.contains("keelson_reason="))
        .unwrap();
    let r = Request::parse(block.as_bytes(), &Limits::default()).unwrap();
    let e = &r.apps[0].events[0];
    assert!(e.is_rollback());
    assert_eq!(e.reason.as_deref(), Some("boot_not_blessed"));
}
