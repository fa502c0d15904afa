//! The documentation's commands are run, so they cannot drift from the code.
//!
//! README.md and every docs/*.md: each fenced block says what it is (`doc_blocks::lint`); a
//! shell block says where it runs. The `sh doc-test` blocks of each document run here, in
//! order, as one bash script (`set -eEu`) in a scratch directory with this build's `keelson`,
//! `keelson-server` and `keelson-agent` first on PATH, inside their own network (and PID)
//! namespace: the documents use `127.0.0.1:8080` as a user would, without meeting another
//! test's server, and nothing a document starts in the background outlives its script. The
//! scratch directory holds what the `sh slow` blocks would have made: `os` (the repository's
//! OS definition) and `build/` (the update parts of versions 0.2.0, 0.3.0 and 4081.2.0, as
//! `keelson image build --out build` writes them, small and fake). A failing command is
//! named by its document, line and text. The `sh node` blocks run on a node in the VM tests
//! (`crates/image/tests/common::doc_node_commands`); here their `keelson-agent` commands must
//! parse. The command synopses of `text` blocks must name real subcommands and flags.
//!
//! Run alone: `cargo build -p keelson-server -p keelson-agent && cargo test -p keelson --test
//! docs` (`KEELSON_DOCS_ONLY=README.md` runs one document, `KEELSON_DOCS_SHOW=1` prints what
//! the commands printed).
#![allow(clippy::unwrap_used)]

mod doc_blocks;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use doc_blocks::{Block, blocks, lint, shell_blocks};

/// The root hash the fake builds claim (their UKI's `usrhash=` says the same).
const ROOT_HASH: &str = "3f1c2a9b8e7d6c5b4a392817160504f3e2d1c0b9a8978675645342312010fedc";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// README.md and docs/*.md, as paths relative to the repository root, sorted.
fn documents() -> Vec<String> {
    let root = root();
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    docs.insert(0, "README.md".to_string());
    docs
}

fn read(doc: &str) -> String {
    std::fs::read_to_string(root().join(doc)).unwrap()
}

#[test]
fn every_block_says_what_it_is_and_where_it_runs() {
    let mut problems = Vec::new();
    for doc in documents() {
        for p in lint(&read(&doc)) {
            problems.push(format!("{doc}: {p}"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_page_of_docs_is_reachable_from_the_readme() {
    let readme = read("README.md");
    let missing: Vec<String> = documents()
        .into_iter()
        .skip(1)
        .filter(|d| !readme.contains(&format!("]({d})")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md links to none of {missing:?} (the index under \"Documentation\")"
    );
}

/// The newest modification time of the files under `dir` (recursively).
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut t = std::time::SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        t = t.max(if m.is_dir() {
            newest(&e.path())
        } else {
            m.modified().unwrap()
        });
    }
    t
}

/// The directory of this build's binaries. Cargo builds only this package's binaries for its
/// tests; `cargo test --workspace` (so `cargo xtask test`) builds `keelson-server` and
/// `keelson-agent` too. Run alone, build them first; an older binary than its sources is
/// refused rather than tested.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_keelson"))
        .parent()
        .unwrap()
        .to_path_buf();
    let build = "cargo build -p keelson-server -p keelson-agent";
    for (bin, src) in [
        ("keelson-server", "crates/server/src"),
        ("keelson-agent", "crates/agent/src"),
    ] {
        let path = dir.join(bin);
        let built = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: run `{build}` first", path.display()))
            .modified()
            .unwrap();
        assert!(
            built >= newest(&root().join(src)),
            "{} is older than {src}: run `{build}` first",
            path.display()
        );
    }
    dir
}

/// What the `sh slow` blocks would have made, in the scratch directory `dir`.
fn stand_in_for_slow_blocks(dir: &Path) {
    std::os::unix::fs::symlink(root().join("os"), dir.join("os")).unwrap();
    for (i, v) in ["0.2.0", "0.3.0", "4081.2.0"].iter().enumerate() {
        let usr = keelson_payload::testing::noise(300_000, i as u64 + 1);
        keelson_payload::testing::fake_image_dir(
            &dir.join("build"),
            "keelson",
            v,
            ROOT_HASH,
            &usr,
            &[0xa5; 12_288],
            &format!("console=ttyS0 usrhash={ROOT_HASH}"),
        )
        .unwrap();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

/// A document's host script: its `sh doc-test` blocks in order, and for each script line the
/// document line it came from (0: the harness's own lines).
fn script(blocks: &[Block]) -> (String, Vec<usize>) {
    let mut text = String::new();
    let mut origin = Vec::new();
    for l in [
        "set -eEu",
        "trap 'echo \"__DOCTEST_FAILED__ $LINENO\" >&2' ERR",
        "ip link set lo up",
    ] {
        text.push_str(l);
        text.push('\n');
        origin.push(0);
    }
    for b in blocks {
        for (n, l) in &b.lines {
            text.push_str(l);
            text.push('\n');
            origin.push(*n);
        }
    }
    (text, origin)
}

/// The document line of the command that failed, from the ERR trap's marker (the first,
/// innermost one) or from bash's own `line N:` message (an unset variable).
fn failed_line(stderr: &str, origin: &[usize]) -> Option<usize> {
    let script_line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("__DOCTEST_FAILED__ "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .or_else(|| {
            stderr.lines().rev().find_map(|l| {
                let rest = l.split("line ").nth(1)?;
                rest.split(':').next()?.trim().parse::<usize>().ok()
            })
        })?;
    origin
        .get(script_line.checked_sub(1)?)
        .copied()
        .filter(|n| *n > 0)
}

struct Run {
    ok: bool,
    stdout: String,
    report: String,
}

fn run_doc(doc: &str, text: &str, bins: &Path) -> Option<Run> {
    let blocks = shell_blocks(text, "doc-test").unwrap();
    if blocks.is_empty() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    stand_in_for_slow_blocks(dir.path());
    let (script, origin) = script(&blocks);
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("timeout");
    // A guard against a hanging command, not a timed assertion: it ends the namespace.
    cmd.args(["--kill-after=10", "300", "unshare"]);
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "--pid", "--fork", "--kill-child", "bash", "-c"])
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("KEELSON_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KEELSON_SERVER")
        .env_remove("KEELSON_TOKEN")
        .env_remove("KEELSON_APP")
        .env_remove("KEELSON_DATABASE_URL");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut report = String::new();
    if !out.status.success() {
        match failed_line(&stderr, &origin) {
            Some(n) => {
                let cmd = blocks
                    .iter()
                    .flat_map(Block::commands)
                    .rev()
                    .find(|(start, _)| *start <= n)
                    .map(|(_, c)| c)
                    .unwrap_or_default();
                writeln!(
                    report,
                    "{doc}:{n}: this command failed ({}):\n    {cmd}",
                    out.status
                )
                .unwrap();
            }
            None => writeln!(report, "{doc}: the script failed ({})", out.status).unwrap(),
        }
        writeln!(report, "--- stdout\n{stdout}--- stderr\n{stderr}").unwrap();
    }
    let mut ok = out.status.success();
    if ok {
        for p in after(doc, dir.path(), &stdout) {
            ok = false;
            writeln!(report, "{doc}: {p}").unwrap();
        }
    }
    Some(Run { ok, stdout, report })
}

/// What a document's blocks say they make, checked after they ran.
fn after(doc: &str, dir: &Path, stdout: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut file = |f: &str| {
        if !dir.join(f).exists() {
            problems.push(format!("{f} was not made"));
        }
    };
    match doc {
        "docs/sysext.md" => {
            for f in [
                "hello.raw",
                "sysext.crt",
                "published/SHA256SUMS",
                "published/hello.transfer",
            ] {
                file(f);
            }
            for s in ["hello-1.0-", "signed:    yes"] {
                if !stdout.contains(s) {
                    problems.push(format!("the output lacks {s:?}"));
                }
            }
        }
        "README.md" => {
            for f in [
                "node.ign",
                "keys/keelson-release.key",
                "keelson_0.2.0.payload",
                "hello.raw",
            ] {
                file(f);
            }
        }
        _ => {}
    }
    problems
}

#[test]
fn documented_host_commands_run() {
    let bins = bin_dir();
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    // KEELSON_DOCS_ONLY=README.md: run one document (while writing it).
    let only = std::env::var("KEELSON_DOCS_ONLY").ok();
    for doc in documents() {
        if only.as_ref().is_some_and(|o| *o != doc) {
            continue;
        }
        let text = read(&doc);
        let Some(run) = run_doc(&doc, &text, &bins) else {
            continue;
        };
        ran.push(doc.clone());
        if !run.ok {
            failures.push(run.report);
        } else if std::env::var_os("KEELSON_DOCS_SHOW").is_some() {
            println!("=== {doc}\n{}", run.stdout);
        }
    }
    assert!(
        only.is_some() || (ran.iter().any(|d| d == "README.md") && ran.len() >= 4),
        "only {ran:?} have `sh doc-test` blocks"
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_extractor_finds_untagged_commands_and_joins_lines() {
    let doc = "# T\n\n```sh doc-test\necho a \\\n  b   # two lines\n\n# a comment\nls\n```\n\
               ```sh\nrm -rf /\n```\n```\nkeelson x\n```\n```text\n$ keelson y\n```\n\
               ````md\n```sh\nnot a block\n```\n````\n```sh node\nkeelson-agent status\n```\n";
    let b = blocks(doc).unwrap();
    assert_eq!(b.len(), 6, "{b:?}");
    assert_eq!(b[0].line, 3);
    assert_eq!(
        b[0].commands(),
        vec![
            (4, "echo a \\\n  b   # two lines".to_string()),
            (8, "ls".to_string())
        ]
    );
    assert_eq!(b[4].lang, "md");
    assert_eq!(b[4].lines.len(), 3);
    let problems = lint(doc);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("line 10: a `sh` block without a place"));
    assert!(problems[1].starts_with("line 13: a fence without an info string"));
    assert!(problems[2].starts_with("line 17: a command with a prompt"));
    let node = shell_blocks(doc, "node").unwrap();
    assert_eq!(
        node[0].commands(),
        vec![(25, "keelson-agent status".to_string())]
    );
    assert!(
        blocks("```sh doc-test\nls\n")
            .unwrap_err()
            .contains("line 1")
    );
}

#[test]
fn a_failing_command_is_named_by_its_document_line() {
    let doc =
        "intro\n\n```sh doc-test\ntrue\n```\n\n```sh doc-test\necho one\nfalse\necho never\n```\n";
    let run = run_doc("x.md", doc, Path::new("/nonexistent")).unwrap();
    assert!(!run.ok);
    assert!(
        run.report.starts_with("x.md:9: this command failed"),
        "{}",
        run.report
    );
    assert!(run.report.contains("    false\n"), "{}", run.report);
    assert!(run.stdout.contains("one") && !run.stdout.contains("never"));
    let doc = "```sh doc-test\necho $UNSET_IN_THE_DOC\n```\n";
    let run = run_doc("y.md", doc, Path::new("/nonexistent")).unwrap();
    assert!(run.report.starts_with("y.md:2: "), "{}", run.report);
}

/// The `sh node` blocks run in the VM tests; here, each `keelson-agent` command among them
/// must at least parse (its subcommand and flags exist: `--help` after them), and every
/// command must start with a program the node has.
#[test]
fn node_commands_name_what_the_node_has() {
    let on_node = [
        "keelson-agent",
        "systemctl",
        "systemd-sysext",
        "journalctl",
        "cat",
        "hello", // the extension of README.md's step 3
    ];
    let agent = bin_dir().join("keelson-agent");
    let mut problems = Vec::new();
    let mut seen = 0;
    for doc in documents() {
        for b in shell_blocks(&read(&doc), "node").unwrap() {
            for (line, cmd) in b.commands() {
                seen += 1;
                let words: Vec<&str> = cmd.split_whitespace().collect();
                if !on_node.contains(&words[0]) {
                    problems.push(format!("{doc}:{line}: `{}` is not on a node", words[0]));
                    continue;
                }
                if words[0] == "keelson-agent" {
                    let out = Command::new(&agent)
                        .args(words[1..].iter().take_while(|w| !w.starts_with('#')))
                        .arg("--help")
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        problems.push(format!(
                            "{doc}:{line}: `{cmd}` does not parse:\n{}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
            }
        }
    }
    assert!(seen >= 5, "only {seen} node commands");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The command synopses of the `text` blocks (`keelson disk create IMAGE --size 4G [...]`):
/// their subcommands exist and every `--flag` they name is in that subcommand's `--help`.
fn synopses(doc: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for b in blocks(doc).unwrap().iter().filter(|b| b.lang == "text") {
        let mut open = false;
        for (n, l) in &b.lines {
            let starts = ["keelson ", "keelson-agent ", "keelson-server "]
                .iter()
                .any(|p| l.starts_with(p));
            let cont = l.starts_with(' ') && l.trim_start().starts_with(['[', '-']);
            if starts {
                out.push((*n, l.clone()));
                open = true;
            } else if open && cont {
                let last = out.last_mut().unwrap();
                last.1.push(' ');
                last.1.push_str(l.trim());
            } else {
                open = false;
            }
        }
    }
    out
}

#[test]
fn synopses_match_the_cli() {
    let bins = bin_dir();
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        for (line, syn) in synopses(&read(&doc)) {
            let mut words = syn.split_whitespace();
            let prog = words.next().unwrap();
            let subs: Vec<&str> = words
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .filter(|w| !w.starts_with('-'))
                .collect();
            let out = Command::new(bins.join(prog))
                .args(&subs)
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                problems.push(format!(
                    "{doc}:{line}: `{prog} {}` is not a command:\n{}",
                    subs.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            checked += 1;
            let flags = syn
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--") && w.len() > 2);
            for f in flags {
                let f = f.trim_end_matches('-');
                if !help.contains(&format!("{f} ")) && !help.contains(&format!("{f}\n")) {
                    problems.push(format!(
                        "{doc}:{line}: `{prog} {}` has no {f}",
                        subs.join(" ")
                    ));
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} synopses found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
