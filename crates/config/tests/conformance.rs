//! Data-driven conformance suite: every `tests/cases/**/*.case` file is one case.
//!
//! A case file is a list of sections, each starting with a `=== NAME` line:
//! - `input.json`: an Ignition config, run through `parse` (normalized to 3.6.0);
//! - `parent.json` + `child.json`: two valid configs, run through `merge`;
//! - `input.yaml`: a YAML config, run through `yaml::translate`; `file PATH` / `file+x PATH`
//!   sections make up its files dir, and an `args` section may say `strict`;
//! - `expect.json`: the expected output (parse/merge/translate must succeed);
//! - `expect.report`: the expected report, one entry per line, in order (may be empty).
//!
//! Lines before the first section are a description. `KEELSON_BLESS=1` rewrites the expect
//! sections from the current output (review the diff before committing it).

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use keelson_config::{Config, Report, yaml};

#[derive(Debug, Default)]
struct Case {
    description: String,
    sections: Vec<(String, String)>,
}

impl Case {
    fn parse(text: &str) -> Case {
        let mut case = Case::default();
        let mut current: Option<(String, String)> = None;
        for line in text.split_inclusive('\n') {
            if let Some(name) = line.strip_prefix("=== ") {
                if let Some(s) = current.take() {
                    case.sections.push(s);
                }
                current = Some((name.trim().to_string(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
            } else {
                case.description.push_str(line);
            }
        }
        if let Some(s) = current.take() {
            case.sections.push(s);
        }
        case
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_str())
    }

    fn render(&self) -> String {
        let mut out = self.description.clone();
        for (name, body) in &self.sections {
            let _ = writeln!(out, "=== {name}");
            out.push_str(body);
            if !body.is_empty() && !body.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    fn set(&mut self, name: &str, body: String) {
        match self.sections.iter_mut().find(|(n, _)| n == name) {
            Some((_, b)) => *b = body,
            None => self.sections.push((name.to_string(), body)),
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "case") {
            out.push(p);
        }
    }
}

fn report_text(r: &Report) -> String {
    r.entries.iter().map(|e| format!("{e}\n")).collect()
}

fn config_text(c: &Config) -> String {
    format!("{}\n", serde_json::to_string_pretty(c).unwrap())
}

/// Run one case; returns (output json if any, report).
fn run(case: &Case, name: &str) -> Result<(Option<String>, String), String> {
    if let Some(input) = case.get("input.json") {
        // Section bodies end with the newline before the next header; the config is the text.
        return Ok(match keelson_config::parse(input.as_bytes()) {
            Ok((c, r)) => (Some(config_text(&c)), report_text(&r)),
            Err(e) => (None, report_text(&e.report())),
        });
    }
    if let (Some(p), Some(c)) = (case.get("parent.json"), case.get("child.json")) {
        let (parent, mut report) =
            keelson_config::parse(p.as_bytes()).map_err(|e| format!("parent: {e}"))?;
        let (child, r2) = keelson_config::parse(c.as_bytes()).map_err(|e| format!("child: {e}"))?;
        report.merge(r2);
        let merged = keelson_config::merge(&parent, &child);
        return Ok((Some(config_text(&merged)), report_text(&report)));
    }
    if let Some(input) = case.get("input.yaml") {
        let dir =
            std::env::temp_dir().join(format!("keelson-config-case-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut has_files = false;
        for (sec, body) in &case.sections {
            let (exec, rel) = if let Some(rel) = sec.strip_prefix("file+x ") {
                (true, rel)
            } else if let Some(rel) = sec.strip_prefix("file ") {
                (false, rel)
            } else if let Some(rel) = sec.strip_prefix("symlink ") {
                let (link, target) = rel.split_once(" -> ").unwrap();
                let p = dir.join(link);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, p).unwrap();
                has_files = true;
                continue;
            } else {
                continue;
            };
            has_files = true;
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, body).unwrap();
            if exec {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let args = case.get("args").unwrap_or("");
        let opts = yaml::Options {
            files_dir: (has_files || args.contains("files-dir")).then(|| dir.clone()),
            strict: args.contains("strict"),
        };
        let result = yaml::translate(input, &opts);
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(match result {
            Ok(t) => (Some(config_text(&t.config)), report_text(&t.report)),
            Err(e) => (None, report_text(&e.report())),
        });
    }
    Err("no input section (input.json, parent.json+child.json or input.yaml)".into())
}

#[test]
fn conformance_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let bless = std::env::var_os("KEELSON_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let mut case = Case::parse(&text);
        let (json, report) = match run(&case, &name.replace('/', "_")) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if bless {
            match &json {
                Some(j) => case.set("expect.json", j.clone()),
                None => case.sections.retain(|(n, _)| n != "expect.json"),
            }
            case.set("expect.report", report);
            std::fs::write(path, case.render()).unwrap();
            continue;
        }
        let want_json = case.get("expect.json");
        let want_report = case.get("expect.report");
        if want_json.is_none() && want_report.is_none() {
            failures.push(format!("{name}: no expect.json or expect.report section"));
            continue;
        }
        if let Some(want) = want_json {
            match &json {
                None => failures.push(format!("{name}: expected success, got:\n{report}")),
                Some(got) => {
                    let w: serde_json::Value = serde_json::from_str(want).unwrap();
                    let g: serde_json::Value = serde_json::from_str(got).unwrap();
                    if w != g {
                        failures.push(format!(
                            "{name}: output differs\n--- want\n{want}--- got\n{got}"
                        ));
                    }
                }
            }
        }
        if let Some(want) = want_report
            && want.trim_end() != report.trim_end()
        {
            failures.push(format!(
                "{name}: report differs\n--- want\n{want}--- got\n{report}"
            ));
        }
    }
    assert!(
        bless || files.len() >= 150,
        "the conformance suite must keep at least 150 cases, found {}",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

fn schema_paths(fields: &[keelson_config::schema::Field], prefix: &str, out: &mut Vec<String>) {
    use keelson_config::schema::Ty;
    for f in fields {
        let p = format!("{prefix}.{}", f.name);
        out.push(p.clone());
        let mut ty = &f.ty;
        let mut q = p;
        while let Ty::List(inner) = ty {
            q.push_str(".*");
            ty = inner;
        }
        if let Ty::Obj(sub) = ty {
            schema_paths(sub, &q, out);
        }
    }
}

fn value_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::HashSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                value_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                value_paths(x, &format!("{prefix}.*"), out);
            }
        }
        _ => {}
    }
}

/// Every field of spec 3.6.0 appears in the expected output of at least one passing case.
#[test]
fn cases_cover_every_field_of_3_6() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut seen = std::collections::HashSet::new();
    for path in &files {
        let case = Case::parse(&std::fs::read_to_string(path).unwrap());
        if let Some(j) = case.get("expect.json") {
            value_paths(&serde_json::from_str(j).unwrap(), "$", &mut seen);
        }
    }
    let mut want = Vec::new();
    schema_paths(keelson_config::schema::CONFIG, "$", &mut want);
    let missing: Vec<&String> = want.iter().filter(|p| !seen.contains(*p)).collect();
    assert!(missing.is_empty(), "fields no case covers: {missing:#?}");
}
