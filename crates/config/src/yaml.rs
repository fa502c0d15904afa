//! The YAML front end: Butane's `variant: flatcar` 1.0.0/1.1.0 and our `variant: keelson`
//! 1.0.0, translated to Ignition JSON with every report entry at the YAML line and column.
//!
//! The YAML is loaded into the same positioned tree as JSON (scalars resolved the way Butane's
//! YAML library does, so `0644` is octal), rewritten into an Ignition tree (snake_case keys to
//! camelCase, `inline`/`local` to data URLs, trees, local files, mount units, Keelson's
//! `updates`/`extensions` sugar) with the YAML positions carried along, and then parsed and
//! validated by the Ignition parser of the variant's target spec version.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::report::{Kind, Pos, Report};
use crate::tree::{Member, Node, Number, Value};
use crate::{Config, Error};

mod keelson;

/// Options of `keelson config translate`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directory that `local` paths are relative to (`--files-dir`).
    pub files_dir: Option<PathBuf>,
    /// Treat warnings as errors (`--strict`).
    pub strict: bool,
}

/// A successful translation.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The Ignition config at the variant's output version, ready to serialize.
    pub config: Config,
    /// Warnings (never errors).
    pub report: Report,
}

/// Which YAML variant/version a document is, and what it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Butane flatcar 1.0.0 -> Ignition 3.3.0.
    Flatcar1_0,
    /// Butane flatcar 1.1.0 -> Ignition 3.4.0.
    Flatcar1_1,
    /// Keelson 1.0.0 -> Ignition 3.6.0.
    Keelson1_0,
}

impl Variant {
    /// Ignition spec minor version the variant emits.
    pub fn ignition_minor(self) -> u32 {
        match self {
            Variant::Flatcar1_0 => 3,
            Variant::Flatcar1_1 => 4,
            Variant::Keelson1_0 => 6,
        }
    }

    /// `*_local` unit contents and SSH key files arrived with Butane base v0_5.
    fn has_local_extras(self) -> bool {
        !matches!(self, Variant::Flatcar1_0)
    }

    fn is_flatcar(self) -> bool {
        matches!(self, Variant::Flatcar1_0 | Variant::Flatcar1_1)
    }
}

/// Translate a YAML config to a typed Ignition config at the variant's output version.
pub fn translate(src: &str, opts: &Options) -> Result<Translated, Error> {
    let loaded = load(src)?;
    let mut t = Translator {
        opts,
        report: Report::default(),
        variant: Variant::Keelson1_0,
        decimal_ints: loaded.decimal_ints,
        orig_keys: HashMap::new(),
        extra_units: Vec::new(),
    };
    let root = loaded.root;
    let Some(variant) = t.variant(&root) else {
        return Err(Error::Invalid { report: t.report });
    };
    t.variant = variant;
    let ign = t.root(&root);
    let mut report = std::mem::take(&mut t.report);
    if report.is_fatal() {
        return Err(Error::Invalid { report });
    }
    let result = crate::parse_tree_untranslated(&ign);
    let (config, ign_report) = match result {
        Ok((c, r, _)) => (Some(c), r),
        Err(e) => (None, e.report()),
    };
    for mut e in ign_report.entries {
        // Unknown keys name the key as written in the YAML, not its camelCase form.
        if let Some(pos) = e.pos
            && e.message.starts_with("unused key ")
            && let Some(orig) = t.orig_keys.get(&(pos.line, pos.col))
        {
            e.message = format!("unused key {orig}");
        }
        // Paths name the YAML's keys too: `$.storage.disks.0.partitions.0.size_mib`.
        e.path = e.path.split('.').map(snake).collect::<Vec<_>>().join(".");
        report.entries.push(e);
    }
    if opts.strict {
        for e in &mut report.entries {
            e.kind = Kind::Error;
        }
    }
    match config {
        Some(config) if !report.is_fatal() => Ok(Translated { config, report }),
        _ => Err(Error::Invalid { report }),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading YAML into a positioned tree.

struct Loaded {
    root: Node,
    /// Positions of integers written in plain decimal (for the octal-mode warning).
    decimal_ints: HashSet<(usize, usize)>,
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<Member>, Option<(String, Pos)>),
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    decimal_ints: HashSet<(usize, usize)>,
    error: Option<(Pos, String)>,
}

fn marker_pos(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Resolve a plain scalar like Butane's YAML library: null, booleans, integers (a leading
/// `0` means octal), floats, else string.
fn resolve_plain(s: &str) -> (Value, bool) {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return (Value::Null, false),
        "true" | "True" | "TRUE" => return (Value::Bool(true), false),
        "false" | "False" | "FALSE" => return (Value::Bool(false), false),
        _ => {}
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let body_clean = body.replace('_', "");
    let parsed = if let Some(h) = body_clean.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok().map(|v| (v, false))
    } else if let Some(o) = body_clean.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok().map(|v| (v, false))
    } else if let Some(b) = body_clean.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok().map(|v| (v, false))
    } else if body_clean.len() > 1
        && body_clean.starts_with('0')
        && body_clean.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&body_clean, 8).ok().map(|v| (v, false))
    } else if !body_clean.is_empty()
        && body_clean.bytes().all(|b| b.is_ascii_digit())
        && body == body_clean
    {
        body_clean.parse::<i64>().ok().map(|v| (v, true))
    } else {
        None
    };
    if let Some((v, decimal)) = parsed {
        return (
            Value::Number(Number::Int(if neg { -v } else { v })),
            decimal,
        );
    }
    let looks_float = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_float && let Ok(f) = s.parse::<f64>() {
        return (Value::Number(Number::Float(f)), false);
    }
    (Value::String(s.to_string()), false)
}

/// Nesting limit, as in the JSON parser.
const MAX_DEPTH: usize = 256;

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, members, pending)) => match pending.take() {
                None => match node.value {
                    Value::String(k) => *pending = Some((k, node.pos)),
                    Value::Null => *pending = Some((String::new(), node.pos)),
                    Value::Bool(b) => *pending = Some((b.to_string(), node.pos)),
                    Value::Number(Number::Int(i)) => *pending = Some((i.to_string(), node.pos)),
                    _ => {
                        if self.error.is_none() {
                            self.error = Some((node.pos, "mapping keys must be scalars".into()));
                        }
                        *pending = Some((String::new(), node.pos));
                    }
                },
                Some((key, key_pos)) => {
                    if members.iter().any(|m| m.key == key) && self.error.is_none() {
                        self.error =
                            Some((key_pos, format!("mapping key \"{key}\" already defined")));
                    }
                    members.push(Member { key, key_pos, node });
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = marker_pos(mark);
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let (value, decimal) = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(&s)
                } else {
                    (Value::String(s), false)
                };
                if decimal {
                    self.decimal_ints.insert((pos.line, pos.col));
                }
                self.push(Node::new(value, pos), anchor);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                // Deeper trees are never configs; refusing them keeps every later walk (and
                // drop) of the tree within a bounded stack.
                self.error.get_or_insert((pos, "nesting too deep".into()));
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(p, anchor, items)) => {
                    self.push(Node::new(Value::Array(items), p), anchor)
                }
                Some(Frame::Map(p, anchor, members, _)) => {
                    // A block mapping's start mark is after its first key; the key is clearer.
                    let p = members.first().map_or(p, |m| m.key_pos);
                    self.push(Node::new(Value::Object(members), p), anchor);
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut n) => {
                    n.pos = pos;
                    self.push(n, 0);
                }
                None => {
                    if self.error.is_none() {
                        self.error = Some((pos, "unknown anchor".into()));
                    }
                }
            },
            _ => {}
        }
    }
}

/// A conservative estimate of the nesting depth, line by line: indentation, plus leading
/// `- `/`? ` indicators, plus open flow brackets. The YAML parser recurses once per level, so
/// hostile input must be refused before it runs; real configs stay far below the limit.
fn too_deep(src: &str) -> Option<Pos> {
    let mut flow: usize = 0;
    for (n, line) in src.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = line.trim_start_matches([' ', '\t']);
        let mut indicators = 0;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
            indicators += 1;
            rest = r.trim_start_matches(' ');
        }
        let mut quote: Option<char> = None;
        for c in rest.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        if indent + indicators + flow > MAX_DEPTH {
            return Some(Pos {
                line: n + 1,
                col: 1,
            });
        }
    }
    None
}

fn load(src: &str) -> Result<Loaded, Error> {
    if src.trim().is_empty() {
        return Err(Error::Empty);
    }
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        decimal_ints: HashSet::new(),
        error: None,
    };
    if let Some(pos) = too_deep(src) {
        return Err(Error::Syntax {
            pos,
            message: "yaml: nesting too deep".into(),
        });
    }
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut b, true).map_err(|e| Error::Syntax {
        pos: marker_pos(*e.marker()),
        message: format!("yaml: {}", e.info()),
    })?;
    if let Some((pos, message)) = b.error {
        return Err(Error::Syntax {
            pos,
            message: format!("yaml: {message}"),
        });
    }
    let mut docs = b.docs.into_iter();
    let root = docs.next().ok_or(Error::Empty)?;
    if let Some(second) = docs.next() {
        return Err(Error::Syntax {
            pos: second.pos,
            message: "yaml: a config is a single YAML document".into(),
        });
    }
    Ok(Loaded {
        root,
        decimal_ints: b.decimal_ints,
    })
}

// ---------------------------------------------------------------------------------------------
// Translation.

struct Translator<'a> {
    opts: &'a Options,
    report: Report,
    variant: Variant,
    decimal_ints: HashSet<(usize, usize)>,
    /// Original YAML key by key position, to name unknown keys as written.
    orig_keys: HashMap<(usize, usize), String>,
    /// Units generated by sugar (mount units, keelson sections), appended to systemd.units.
    extra_units: Vec<Node>,
}

/// Build helpers for generated nodes; they carry the position of the YAML they came from.
pub(crate) fn s(v: impl Into<String>, pos: Pos) -> Node {
    Node::new(Value::String(v.into()), pos)
}
pub(crate) fn int(v: i64, pos: Pos) -> Node {
    Node::new(Value::Number(Number::Int(v)), pos)
}
pub(crate) fn boolean(v: bool, pos: Pos) -> Node {
    Node::new(Value::Bool(v), pos)
}
pub(crate) fn obj(members: Vec<(&str, Node)>, pos: Pos) -> Node {
    Node::new(
        Value::Object(
            members
                .into_iter()
                .map(|(k, n)| Member {
                    key: k.to_string(),
                    key_pos: n.pos,
                    node: n,
                })
                .collect(),
        ),
        pos,
    )
}

fn members(node: &Node) -> &[Member] {
    match &node.value {
        Value::Object(m) => m,
        _ => &[],
    }
}

fn set(node: &mut Node, key: &str, value: Node) {
    if let Value::Object(ms) = &mut node.value {
        match ms.iter_mut().find(|m| m.key == key) {
            Some(m) => m.node = value,
            None => ms.push(Member {
                key: key.to_string(),
                key_pos: value.pos,
                node: value,
            }),
        }
    }
}

/// Like [`set`], keeping the position of the key as written in the YAML.
fn set_at(node: &mut Node, key: &str, value: Node, key_pos: Pos) {
    set(node, key, value);
    if let Value::Object(ms) = &mut node.value
        && let Some(m) = ms.iter_mut().rev().find(|m| m.key == key)
    {
        m.key_pos = key_pos;
    }
}

fn list_mut<'n>(node: &'n mut Node, key: &str, pos: Pos) -> Option<&'n mut Vec<Node>> {
    if node.get(key).is_none() {
        set(node, key, Node::new(Value::Array(Vec::new()), pos));
    }
    let Value::Object(ms) = &mut node.value else {
        return None;
    };
    let m = ms.iter_mut().rev().find(|m| m.key == key)?;
    match &mut m.node.value {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn obj_mut<'n>(node: &'n mut Node, key: &str, pos: Pos) -> Option<&'n mut Node> {
    if node.get(key).is_none() {
        set(node, key, Node::new(Value::Object(Vec::new()), pos));
    }
    let Value::Object(ms) = &mut node.value else {
        return None;
    };
    ms.iter_mut()
        .rev()
        .find(|m| m.key == key)
        .map(|m| &mut m.node)
}

/// snake_case to Ignition's camelCase (`size_mib` -> `sizeMiB`).
fn camel(key: &str) -> String {
    let mut out = String::new();
    for (i, part) in key.split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else if part == "mib" {
            out.push_str("MiB");
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

/// Ignition's camelCase back to the YAML's snake_case (`sizeMiB` -> `size_mib`).
fn snake(seg: &str) -> String {
    let seg = seg.replace("MiB", "Mib");
    let mut out = String::with_capacity(seg.len() + 4);
    for (i, c) in seg.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a local file may be read from: inside the files dir, never above it.
pub(crate) fn local_path(files_dir: Option<&Path>, local: &str) -> Result<PathBuf, String> {
    let Some(dir) = files_dir else {
        return Err("local file paths are relative to a files directory that must be specified with -d/--files-dir".into());
    };
    let mut depth: i32 = 0;
    for c in Path::new(local).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err("local file path traverses outside the files directory".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("local file path traverses outside the files directory".into());
            }
        }
    }
    Ok(dir.join(local))
}

/// Encode bytes without compression (percent-escaped or base64, whichever is shorter), for
/// generated files that people should be able to read in the output.
pub fn data_url_plain(bytes: &[u8]) -> String {
    let mut pct = String::from("data:,");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            pct.push(b as char);
        } else {
            pct.push_str(&format!("%{b:02X}"));
        }
    }
    let b64 = format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    if b64.len() < pct.len() { b64 } else { pct }
}

/// Encode bytes as the smallest of: percent-escaped, base64, gzip+base64 (Butane's choice).
/// Returns the data URL and the compression to declare.
pub fn data_url(bytes: &[u8]) -> (String, &'static str) {
    let mut best = data_url_plain(bytes);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gz = enc.write_all(bytes).ok().and_then(|()| enc.finish().ok());
    if let Some(gz) = gz {
        let gz_url = format!(
            "data:;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(gz)
        );
        if gz_url.len() < best.len() {
            return (gz_url, "gzip");
        }
    }
    best.shrink_to_fit();
    (best, "")
}

/// A systemd unit name for a path, like `systemd-escape --path --suffix=SUFFIX`.
pub fn systemd_escape_path(path: &str, suffix: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return format!("-.{suffix}");
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    format!("{out}.{suffix}")
}

impl Translator<'_> {
    fn error(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.report.add(Kind::Error, path, Some(pos), msg);
    }

    fn warn(&mut self, pos: Pos, path: &str, msg: impl Into<String>) {
        self.report.add(Kind::Warning, path, Some(pos), msg);
    }

    fn variant(&mut self, root: &Node) -> Option<Variant> {
        if !matches!(root.value, Value::Object(_)) {
            self.error(root.pos, "$", "config must be a YAML mapping");
            return None;
        }
        let variant = root.get("variant");
        let version = root.get("version");
        let Some(variant_s) = variant.and_then(Node::as_str).filter(|v| !v.is_empty()) else {
            self.error(
                variant.map_or(root.pos, |n| n.pos),
                "$.variant",
                "error parsing variant; must be specified",
            );
            return None;
        };
        let Some(version_s) = version.and_then(Node::as_str) else {
            self.error(
                version.map_or(root.pos, |n| n.pos),
                "$.version",
                "error parsing version; must be a valid semver",
            );
            return None;
        };
        let parts: Vec<&str> = version_s
            .split('-')
            .next()
            .unwrap_or("")
            .split('.')
            .collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            self.error(
                version.map_or(root.pos, |n| n.pos),
                "$.version",
                "error parsing version; must be a valid semver",
            );
            return None;
        }
        match (variant_s, version_s) {
            ("flatcar", "1.0.0") => Some(Variant::Flatcar1_0),
            ("flatcar", "1.1.0") => Some(Variant::Flatcar1_1),
            ("keelson", "1.0.0") => Some(Variant::Keelson1_0),
            _ => {
                self.error(
                    version.map_or(root.pos, |n| n.pos),
                    "$.version",
                    format!(
                        "no translator exists for variant {variant_s} with version {version_s}"
                    ),
                );
                None
            }
        }
    }

    /// The whole document -> an Ignition tree.
    fn root(&mut self, root: &Node) -> Node {
        let mut out = Node::new(Value::Object(Vec::new()), root.pos);
        let minor = self.variant.ignition_minor();
        for m in members(root) {
            match m.key.as_str() {
                "variant" | "version" => {}
                "updates" | "extensions" if self.variant == Variant::Keelson1_0 => {}
                _ => {
                    let path = format!("$.{}", m.key);
                    if let Some((k, v)) = self.member(m, &path, &m.key) {
                        set_at(&mut out, &k, v, m.key_pos);
                    }
                }
            }
        }
        if self.variant == Variant::Keelson1_0 {
            if let Some(u) = root.get("updates") {
                keelson::updates(self, u, &mut out);
            }
            if let Some(e) = root.get("extensions") {
                keelson::extensions(self, e, &mut out);
            }
        }
        if let Some(trees) = root.get("storage").and_then(|s| s.get("trees")) {
            self.trees(trees, &mut out);
        }
        if !self.extra_units.is_empty() {
            let units = std::mem::take(&mut self.extra_units);
            if let Some(systemd) = obj_mut(&mut out, "systemd", root.pos)
                && let Some(list) = list_mut(systemd, "units", root.pos)
            {
                for u in units {
                    let name = u.get("name").and_then(Node::as_str).map(str::to_string);
                    // A unit the user wrote wins; generated fields fill in what it leaves unset.
                    match list
                        .iter_mut()
                        .find(|x| x.get("name").and_then(Node::as_str) == name.as_deref())
                    {
                        Some(existing) => {
                            for m in members(&u).to_vec() {
                                if existing.get(&m.key).is_none() {
                                    set(existing, &m.key, m.node);
                                }
                            }
                        }
                        None => list.push(u),
                    }
                }
            }
        }
        let ign = obj_mut(&mut out, "ignition", root.pos);
        if let Some(ign) = ign {
            if let Some(v) = ign.get("version") {
                let p = v.pos;
                self.warn(p, "$.ignition.version", "unused key version");
            }
            set(ign, "version", s(format!("3.{minor}.0"), root.pos));
        }
        out
    }

    /// Convert one member; `None` drops it (a camelCase key is unknown in YAML, as in Butane).
    fn member(&mut self, m: &Member, path: &str, pattern: &str) -> Option<(String, Node)> {
        let key = m.key.as_str();
        if key.chars().any(|c| c.is_ascii_uppercase()) {
            self.warn(m.key_pos, path, format!("unused key {key}"));
            return None;
        }
        self.orig_keys
            .insert((m.key_pos.line, m.key_pos.col), key.to_string());
        let node = self.value(&m.node, path, pattern);
        Some((camel(key), node))
    }

    /// Convert a value; `pattern` is the key path with list indexes as `*`.
    fn value(&mut self, node: &Node, path: &str, pattern: &str) -> Node {
        match &node.value {
            Value::Array(items) => {
                let item_pattern = format!("{pattern}.*");
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, &format!("{path}.{i}"), &item_pattern))
                    .collect();
                Node::new(Value::Array(items), node.pos)
            }
            Value::Object(_) => self.object(node, path, pattern),
            Value::Number(Number::Int(v)) if pattern.ends_with(".mode") => {
                if self.decimal_ints.contains(&(node.pos.line, node.pos.col))
                    && reasonable_if_octal(*v)
                {
                    self.warn(
                        node.pos,
                        path,
                        "unreasonable mode would be reasonable if specified in octal; remember to add a leading zero",
                    );
                }
                node.clone()
            }
            _ => node.clone(),
        }
    }

    fn object(&mut self, node: &Node, path: &str, pattern: &str) -> Node {
        let is_resource = matches!(
            pattern,
            "ignition.config.merge.*"
                | "ignition.config.replace"
                | "ignition.security.tls.certificate_authorities.*"
                | "storage.files.*.contents"
                | "storage.files.*.append.*"
                | "storage.luks.*.key_file"
        );
        let mut out = Node::new(Value::Object(Vec::new()), node.pos);
        let mut skip: HashSet<&str> = HashSet::new();
        if is_resource {
            skip.extend(["inline", "local"]);
            self.resource_sugar(node, path, &mut out);
        }
        match pattern {
            "storage" => {
                skip.insert("trees");
            }
            "systemd.units.*" | "systemd.units.*.dropins.*" if self.variant.has_local_extras() => {
                skip.insert("contents_local");
                self.contents_local(node, path, &mut out);
            }
            "passwd.users.*" if self.variant.has_local_extras() => {
                skip.insert("ssh_authorized_keys_local");
            }
            "storage.filesystems.*" => {
                skip.insert("with_mount_unit");
                self.mount_unit(node, path);
            }
            "storage.luks.*" if self.variant.is_flatcar() => {
                if let Some(c) = node.get("clevis") {
                    self.error(
                        c.pos,
                        &format!("{path}.clevis"),
                        "clevis is not supported in this spec version",
                    );
                }
            }
            _ => {}
        }
        for m in members(node) {
            if skip.contains(m.key.as_str()) {
                continue;
            }
            let p = format!("{path}.{}", m.key);
            let pat = format!("{pattern}.{}", m.key);
            if let Some((k, v)) = self.member(m, &p, &pat) {
                set_at(&mut out, &k, v, m.key_pos);
            }
        }
        if pattern == "passwd.users.*" && self.variant.has_local_extras() {
            self.ssh_keys_local(node, path, &mut out);
        }
        out
    }

    fn read_local(&mut self, node: &Node, path: &str) -> Option<Vec<u8>> {
        let Some(local) = node.as_str() else {
            self.error(node.pos, path, "local must be a string");
            return None;
        };
        let full = match local_path(self.opts.files_dir.as_deref(), local) {
            Ok(p) => p,
            Err(e) => {
                self.error(node.pos, path, e);
                return None;
            }
        };
        match std::fs::read(&full) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(node.pos, path, format!("reading local file {local:?}: {e}"));
                None
            }
        }
    }

    fn resource_sugar(&mut self, node: &Node, path: &str, out: &mut Node) {
        let set_fields: Vec<&str> = ["inline", "local", "source"]
            .into_iter()
            .filter(|k| node.get(k).is_some())
            .collect();
        if set_fields.len() > 1 {
            self.error(
                node.pos,
                path,
                "only one of the following can be set: inline, local, source",
            );
            return;
        }
        let bytes = if let Some(inline) = node.get("inline") {
            match &inline.value {
                Value::String(v) => Some((v.clone().into_bytes(), inline.pos)),
                _ => {
                    self.error(
                        inline.pos,
                        &format!("{path}.inline"),
                        "inline must be a string",
                    );
                    None
                }
            }
        } else if let Some(local) = node.get("local") {
            self.read_local(local, &format!("{path}.local"))
                .map(|b| (b, local.pos))
        } else {
            None
        };
        if let Some((bytes, pos)) = bytes {
            if node.get("compression").is_some() {
                self.error(
                    pos,
                    &format!("{path}.compression"),
                    "compression cannot be set with inline or local contents",
                );
            }
            let (url, compression) = data_url(&bytes);
            set(out, "source", s(url, pos));
            set(out, "compression", s(compression, pos));
        }
    }

    fn contents_local(&mut self, node: &Node, path: &str, out: &mut Node) {
        let Some(local) = node.get("contents_local") else {
            return;
        };
        if node.get("contents").is_some() {
            self.error(
                local.pos,
                path,
                "only one of the following can be set: contents, contents_local",
            );
            return;
        }
        if let Some(bytes) = self.read_local(local, &format!("{path}.contents_local")) {
            match String::from_utf8(bytes) {
                Ok(text) => set(out, "contents", s(text, local.pos)),
                Err(_) => self.error(
                    local.pos,
                    &format!("{path}.contents_local"),
                    "unit contents must be UTF-8 text",
                ),
            }
        }
    }

    fn ssh_keys_local(&mut self, node: &Node, path: &str, out: &mut Node) {
        let Some(list) = node.get("ssh_authorized_keys_local") else {
            return;
        };
        let Value::Array(items) = &list.value else {
            self.error(
                list.pos,
                &format!("{path}.ssh_authorized_keys_local"),
                "must be a list of file paths",
            );
            return;
        };
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}.ssh_authorized_keys_local.{i}");
            if let Some(bytes) = self.read_local(item, &p) {
                // One key per line; blank lines and comments are not keys.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                for line in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    keys.push(s(line, item.pos));
                }
            }
        }
        if let Some(existing) = list_mut(out, "sshAuthorizedKeys", list.pos) {
            existing.extend(keys);
        }
    }

    fn mount_unit(&mut self, fs: &Node, path: &str) {
        let Some(w) = fs.get("with_mount_unit") else {
            return;
        };
        if w.value != Value::Bool(true) {
            return;
        }
        let format = fs.get("format").and_then(Node::as_str);
        let device = fs.get("device").and_then(Node::as_str).unwrap_or("");
        let Some(format) = format else {
            self.error(
                w.pos,
                &format!("{path}.format"),
                "format is required if with_mount_unit is true",
            );
            return;
        };
        let options: Vec<String> = match fs.get("mount_options").map(|n| &n.value) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let (name, contents) = if format == "swap" {
            let name = systemd_escape_path(device, "swap");
            let mut c = format!("# Generated by keelson config translate\n[Swap]\nWhat={device}\n");
            if !options.is_empty() {
                c.push_str(&format!("Options={}\n", options.join(",")));
            }
            c.push_str("\n[Install]\nRequiredBy=swap.target\n");
            (name, c)
        } else {
            let Some(mp) = fs.get("path").and_then(Node::as_str) else {
                self.error(
                    w.pos,
                    &format!("{path}.path"),
                    "path is required if with_mount_unit is true and format is not swap",
                );
                return;
            };
            let name = systemd_escape_path(mp, "mount");
            let fsck = systemd_escape_path(device, "service");
            let mut c = format!(
                "# Generated by keelson config translate\n[Unit]\nRequires=systemd-fsck@{fsck}\nAfter=systemd-fsck@{fsck}\n\n[Mount]\nWhere={mp}\nWhat={device}\nType={format}\n"
            );
            if !options.is_empty() {
                c.push_str(&format!("Options={}\n", options.join(",")));
            }
            c.push_str("\n[Install]\nRequiredBy=local-fs.target\n");
            (name, c)
        };
        self.extra_units.push(obj(
            vec![
                ("name", s(name, w.pos)),
                ("enabled", boolean(true, w.pos)),
                ("contents", s(contents, w.pos)),
            ],
            w.pos,
        ));
    }

    /// `storage.trees`: embed a directory tree from the files dir.
    fn trees(&mut self, trees: &Node, out: &mut Node) {
        let Value::Array(items) = &trees.value else {
            self.error(trees.pos, "$.storage.trees", "trees must be a list");
            return;
        };
        let mut new_files: Vec<(String, Vec<u8>, bool, Pos)> = Vec::new();
        let mut new_links: Vec<(String, String, Pos)> = Vec::new();
        for (i, t) in items.iter().enumerate() {
            let p = format!("$.storage.trees.{i}");
            let Some(local) = t.get("local") else {
                self.error(t.pos, &format!("{p}.local"), "local is required");
                continue;
            };
            for m in members(t) {
                if m.key != "local" && m.key != "path" {
                    self.warn(
                        m.key_pos,
                        &format!("{p}.{}", m.key),
                        format!("unused key {}", m.key),
                    );
                }
            }
            let dest = t
                .get("path")
                .and_then(Node::as_str)
                .unwrap_or("/")
                .to_string();
            let Some(local_s) = local.as_str() else {
                self.error(local.pos, &format!("{p}.local"), "local must be a string");
                continue;
            };
            let root = match local_path(self.opts.files_dir.as_deref(), local_s) {
                Ok(r) => r,
                Err(e) => {
                    self.error(local.pos, &format!("{p}.local"), e);
                    continue;
                }
            };
            if let Err(e) = walk_tree(&root, &dest, local.pos, &mut new_files, &mut new_links) {
                self.error(local.pos, &format!("{p}.local"), e);
            }
        }
        let pos = trees.pos;
        let Some(storage) = obj_mut(out, "storage", pos) else {
            return;
        };
        let explicit_links: HashMap<String, usize> = match storage.get("links").map(|l| &l.value) {
            Some(Value::Array(ls)) => ls
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    l.get("path")
                        .and_then(Node::as_str)
                        .map(|p| (p.to_string(), i))
                })
                .collect(),
            _ => HashMap::new(),
        };
        if let Some(files) = list_mut(storage, "files", pos) {
            for (path, bytes, exec, fpos) in new_files {
                let (url, compression) = data_url(&bytes);
                let contents = obj(
                    vec![
                        ("source", s(url, fpos)),
                        ("compression", s(compression, fpos)),
                    ],
                    fpos,
                );
                let mode = if exec { 0o755 } else { 0o644 };
                match files
                    .iter_mut()
                    .find(|f| f.get("path").and_then(Node::as_str) == Some(path.as_str()))
                {
                    Some(existing) => {
                        if existing.get("contents").is_some() {
                            let p = existing.pos;
                            self.report.add(
                                Kind::Error,
                                "$.storage.files",
                                Some(p),
                                format!(
                                    "file {path} is in a tree; its entry must not set contents"
                                ),
                            );
                        } else {
                            set(existing, "contents", contents);
                            if existing.get("mode").is_none() {
                                set(existing, "mode", int(mode, fpos));
                            }
                        }
                    }
                    None => files.push(obj(
                        vec![
                            ("path", s(path, fpos)),
                            ("contents", contents),
                            ("mode", int(mode, fpos)),
                        ],
                        fpos,
                    )),
                }
            }
        }
        if let Some(links) = list_mut(storage, "links", pos) {
            for (path, target, lpos) in new_links {
                match explicit_links.get(&path).and_then(|i| links.get_mut(*i)) {
                    Some(existing) => {
                        if existing.get("target").is_some() {
                            self.report.add(
                                Kind::Error,
                                "$.storage.links",
                                Some(existing.pos),
                                format!("link {path} is in a tree; its entry must not set target"),
                            );
                        } else {
                            set(existing, "target", s(target, lpos));
                        }
                    }
                    None => links.push(obj(
                        vec![("path", s(path, lpos)), ("target", s(target, lpos))],
                        lpos,
                    )),
                }
            }
        }
    }
}

type TreeFile = (String, Vec<u8>, bool, Pos);

/// Collect regular files and symlinks below `dir` (sorted, so output is reproducible).
fn walk_tree(
    dir: &Path,
    dest: &str,
    pos: Pos,
    files: &mut Vec<TreeFile>,
    links: &mut Vec<(String, String, Pos)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading tree {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let target_path = format!("{}/{name}", dest.trim_end_matches('/'));
        let meta = std::fs::symlink_metadata(e.path())
            .map_err(|err| format!("{}: {err}", e.path().display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path())
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            links.push((target_path, t.to_string_lossy().into_owned(), pos));
        } else if ft.is_dir() {
            walk_tree(&e.path(), &target_path, pos, files, links)?;
        } else if ft.is_file() {
            let bytes =
                std::fs::read(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
            files.push((
                target_path,
                bytes,
                meta.permissions().mode() & 0o111 != 0,
                pos,
            ));
        } else {
            return Err(format!(
                "{}: only regular files, directories and symlinks are allowed in a tree",
                e.path().display()
            ));
        }
    }
    Ok(())
}

/// Butane's check: a decimal mode whose digits, read as octal, make a sensible mode.
fn reasonable_if_octal(v: i64) -> bool {
    let text = v.to_string();
    v > 0o777
        && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && i64::from_str_radix(&text, 8).is_ok_and(|m| m <= 0o7777)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_scalars_resolve_like_butane() {
        let cases: &[(&str, Value)] = &[
            ("0644", Value::Number(Number::Int(420))),
            ("0o755", Value::Number(Number::Int(493))),
            ("420", Value::Number(Number::Int(420))),
            ("0x1F", Value::Number(Number::Int(31))),
            ("-3", Value::Number(Number::Int(-3))),
            ("1.5", Value::Number(Number::Float(1.5))),
            ("true", Value::Bool(true)),
            ("~", Value::Null),
            ("yes", Value::String("yes".into())),
            ("0889", Value::Number(Number::Float(889.0))),
            ("1.2.3", Value::String("1.2.3".into())),
        ];
        for (src, want) in cases {
            assert_eq!(&resolve_plain(src).0, want, "{src}");
        }
    }

    #[test]
    fn yaml_positions_are_one_based() {
        let l = load("a:\n  b: [1, x]\n").unwrap();
        let b = l.root.get("a").unwrap().get("b").unwrap();
        let Value::Array(items) = &b.value else {
            panic!("not a list")
        };
        assert_eq!(items[1].pos, Pos { line: 2, col: 10 });
    }

    #[test]
    fn key_case_round_trips() {
        for (snake_key, camel_key) in [
            ("ssh_authorized_keys", "sshAuthorizedKeys"),
            ("size_mib", "sizeMiB"),
            ("start_mib", "startMiB"),
            ("type_guid", "typeGuid"),
            ("http_headers", "httpHeaders"),
            ("path", "path"),
        ] {
            assert_eq!(camel(snake_key), camel_key);
            assert_eq!(snake(camel_key), snake_key);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        // Just below the limit parses (and is refused as not a mapping) without a crash.
        let ok = format!("{}{}", "[".repeat(250), "]".repeat(250));
        assert!(matches!(
            translate(&ok, &Options::default()),
            Err(Error::Invalid { .. })
        ));
        let flow = "[".repeat(100_000);
        assert!(translate(&flow, &Options::default()).is_err());
        let compact = format!("{}x\n", "- ".repeat(100_000));
        assert!(translate(&compact, &Options::default()).is_err());
        let block: String = (0..2000)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect();
        assert!(translate(&block, &Options::default()).is_err());
    }

    #[test]
    fn escape_paths_like_systemd() {
        assert_eq!(
            systemd_escape_path("/var/lib/data", "mount"),
            "var-lib-data.mount"
        );
        assert_eq!(
            systemd_escape_path("/dev/disk/by-label/swap", "swap"),
            "dev-disk-by\\x2dlabel-swap.swap"
        );
        assert_eq!(systemd_escape_path("/", "mount"), "-.mount");
        assert_eq!(
            systemd_escape_path("/.hidden", "mount"),
            "\\x2ehidden.mount"
        );
    }

    #[test]
    fn data_urls_pick_the_smallest_encoding() {
        assert_eq!(data_url(b"hello"), ("data:,hello".to_string(), ""));
        assert_eq!(data_url(b"a b\n"), ("data:,a%20b%0A".to_string(), ""));
        let (url, comp) = data_url(&[b'x'; 4096]);
        assert_eq!(comp, "gzip");
        assert!(url.starts_with("data:;base64,H4sI"), "{url}");
        assert_eq!(
            data_url(&[0xff, 0xfe, 0x00, 0x80]),
            ("data:,%FF%FE%00%80".to_string(), "")
        );
        assert_eq!(
            data_url(&[0xff, 0xfe, 0x00, 0x80, 0x81, 0x90, 0xa0, 0xb0, 0xc0]),
            ("data:;base64,//4AgIGQoLDA".to_string(), "")
        );
    }

    #[test]
    fn local_paths_stay_inside_the_files_dir() {
        let d = Path::new("/files");
        assert_eq!(local_path(Some(d), "a/b").unwrap(), Path::new("/files/a/b"));
        assert_eq!(
            local_path(Some(d), "a/../b").unwrap(),
            Path::new("/files/a/../b")
        );
        assert!(local_path(Some(d), "../etc/passwd").is_err());
        assert!(local_path(Some(d), "a/../../x").is_err());
        assert!(local_path(Some(d), "/etc/passwd").is_err());
        assert!(local_path(None, "a").is_err());
    }
}
