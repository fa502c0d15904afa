//! The fenced blocks of a Markdown document and where their commands run: the one extractor
//! of the docs test (`crates/keelson/tests/docs.rs`) and of the VM tests' node commands
//! (`crates/image/tests/common`, through `#[path]`).
//!
//! Every fence carries an info string. A shell block (`sh`, `bash`, `shell`) must say where
//! it runs, as its second word:
//! - `doc-test`: on the host, by `tests/docs.rs`, each document's blocks in order as one
//!   bash script;
//! - `node`: on a Keelson node, by a VM test (`doc_node_commands`);
//! - `slow`: builds an image or boots a VM (minutes); the VM tests run the same commands.
//!
//! `text` and `console` blocks show output and must not show a prompt (`$ `): a command is
//! shown in a shell block, so it is run.
#![allow(dead_code)]

/// Languages of the blocks that hold commands.
pub const SHELL_LANGS: &[&str] = &["sh", "bash", "shell", "zsh"];
/// Where a shell block's commands run (the second word of its info string).
pub const PLACES: &[&str] = &["doc-test", "node", "slow"];
/// Languages of blocks that show output and must not show a prompt.
pub const OUTPUT_LANGS: &[&str] = &["text", "console"];

/// One fenced block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The 1-based line of the opening fence.
    pub line: usize,
    /// The info string's first word (empty for a bare fence).
    pub lang: String,
    /// The info string's second word, if any (`doc-test`, `node`, `slow`, `keelson-example`).
    pub tag: Option<String>,
    /// The lines between the fences, each with its 1-based line number in the document.
    pub lines: Vec<(usize, String)>,
}

impl Block {
    /// The body as text, one `\n` after each line.
    pub fn body(&self) -> String {
        let mut s = String::new();
        for (_, l) in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Whether the block holds commands (a shell language).
    pub fn is_shell(&self) -> bool {
        SHELL_LANGS.contains(&self.lang.as_str())
    }

    /// The logical commands of the block with the line each starts on: lines ending in `\`
    /// joined with the next, blank lines and comment lines dropped, a trailing `# comment`
    /// kept (the shell ignores it).
    pub fn commands(&self) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for (n, raw) in &self.lines {
            let line = raw.trim_end();
            match current.as_mut() {
                Some((_, cmd)) => {
                    cmd.push('\n');
                    cmd.push_str(line);
                }
                None => {
                    let t = line.trim_start();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    current = Some((*n, line.to_string()));
                }
            }
            if !line.ends_with('\\') {
                out.extend(current.take());
            }
        }
        out.extend(current);
        out
    }
}

/// The fence of a line (its backticks), if the line opens or closes a block.
fn fence(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    let ticks = t.len() - t.trim_start_matches('`').len();
    (ticks >= 3).then(|| (ticks, t[ticks..].trim()))
}

/// The fenced blocks of `doc`, in order. Errors name the line of an unterminated fence.
pub fn blocks(doc: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in doc.lines().enumerate() {
        let n = i + 1;
        match open.as_mut() {
            None => {
                if let Some((ticks, info)) = fence(line) {
                    let mut words = info.split_whitespace();
                    let lang = words.next().unwrap_or("").to_string();
                    let tag = words.next().map(str::to_string);
                    open = Some((
                        ticks,
                        Block {
                            line: n,
                            lang,
                            tag,
                            lines: Vec::new(),
                        },
                    ));
                }
            }
            Some((ticks, block)) => match fence(line) {
                Some((t, "")) if t >= *ticks => out.extend(open.take().map(|(_, b)| b)),
                _ => block.lines.push((n, line.to_string())),
            },
        }
    }
    match open {
        Some((_, b)) => Err(format!("line {}: the fence is never closed", b.line)),
        None => Ok(out),
    }
}

/// What is wrong with the blocks of `doc`, one message per problem with its line: a fence
/// without an info string, a shell block without a place to run, an unknown place, a prompt
/// in an output block.
pub fn lint(doc: &str) -> Vec<String> {
    let blocks = match blocks(doc) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for b in &blocks {
        if b.lang.is_empty() {
            problems.push(format!(
                "line {}: a fence without an info string (say what it is: `sh doc-test`, \
                 `sh node`, `sh slow`, `text`, `json`, ...)",
                b.line
            ));
        } else if b.is_shell() {
            match b.tag.as_deref() {
                Some(t) if PLACES.contains(&t) => {}
                Some(t) => problems.push(format!(
                    "line {}: `{} {t}`: the place must be one of {PLACES:?}",
                    b.line, b.lang
                )),
                None => problems.push(format!(
                    "line {}: a `{}` block without a place to run (add `doc-test`, `node` or \
                     `slow`), so its commands would be shown without being run",
                    b.line, b.lang
                )),
            }
        } else if OUTPUT_LANGS.contains(&b.lang.as_str()) {
            for (n, l) in &b.lines {
                if l.trim_start().starts_with("$ ") {
                    problems.push(format!(
                        "line {n}: a command with a prompt in a `{}` block: put commands in \
                         a `sh doc-test` (or `node`, `slow`) block and their output in a \
                         `text` block",
                        b.lang
                    ));
                }
            }
        }
    }
    problems
}

/// The blocks of `doc` whose language is a shell and whose place is `place`.
pub fn shell_blocks(doc: &str, place: &str) -> Result<Vec<Block>, String> {
    Ok(blocks(doc)?
        .into_iter()
        .filter(|b| b.is_shell() && b.tag.as_deref() == Some(place))
        .collect())
}
