//! docs/sysext.md shows the YAML `extensions:` section and the Ignition config it stands for
//! (Flatcar's hand-written form); the YAML must translate to exactly that config.
#![allow(clippy::unwrap_used)]

fn block<'d>(doc: &'d str, info: &str) -> &'d str {
    let open = format!("```{info}\n");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("no ```{info} block in docs/sysext.md"))
        + open.len();
    let body = &doc[start..];
    &body[..body.find("```").unwrap()]
}

#[test]
fn yaml_example_translates_to_the_ignition_example() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sysext.md"))
        .unwrap();
    let opts = keelson_config::yaml::Options {
        files_dir: None,
        strict: true,
    };
    let t = keelson_config::yaml::translate(block(&doc, "yaml keelson-example"), &opts)
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(t.report.is_empty(), "{}", t.report);
    // The Ignition example is a 3.4.0 config (what Flatcar nodes take); parsed, it is
    // translated forward to 3.6.0, like the YAML's output.
    let (from_json, report) =
        keelson_config::parse(block(&doc, "json ignition-example").as_bytes()).unwrap();
    assert!(report.is_empty(), "{report}");
    assert_eq!(t.config.storage, from_json.storage);
    assert_eq!(t.config.systemd, from_json.systemd);
}
