//! The `keelson-example` YAML blocks in docs/provisioning-yaml.md must translate cleanly with
//! `--strict`, so the documentation cannot drift from the translator.

#![allow(clippy::unwrap_used)]

use keelson_config::yaml;

#[test]
fn documented_yaml_examples_translate_strictly() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/provisioning-yaml.md"
    ))
    .unwrap();
    let mut examples = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match current.as_mut() {
            None if line.trim() == "```yaml keelson-example" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => examples.extend(current.take()),
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
            }
        }
    }
    assert!(
        examples.len() >= 3,
        "found only {} examples",
        examples.len()
    );
    let opts = yaml::Options {
        files_dir: None,
        strict: true,
    };
    for (i, ex) in examples.iter().enumerate() {
        let t = yaml::translate(ex, &opts)
            .unwrap_or_else(|e| panic!("example {i} fails:\n{}\n{ex}", e.report()));
        assert!(t.report.is_empty(), "example {i}: {}", t.report);
        // The output is a valid Ignition config of its own version.
        let json = serde_json::to_vec(&t.config).unwrap();
        keelson_config::parse(&json).unwrap();
    }
}
