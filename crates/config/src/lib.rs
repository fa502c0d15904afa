//! Provisioning configs: Ignition v3.0-3.6 parsing, validation, translation and the YAML front end.
//!
//! Entry points: [`parse`] (bytes of any Ignition 3.0.0..3.6.0 config to a typed 3.6.0
//! [`Config`] plus a [`Report`]), [`validate_bytes`] (report only, for `keelson config
//! validate`), [`merge`] (Ignition's parent/child merge) and [`yaml::translate`] (the YAML
//! front end).

pub mod dataurl;
pub mod gourl;
pub mod json;
pub mod merge;
pub mod report;
pub mod schema;
pub mod tree;
pub mod v3_6;
pub mod validate;
pub mod version;
pub mod yaml;

pub use merge::merge;
pub use report::{Entry, Kind, Pos, Report};
pub use v3_6::*;
pub use version::Version;

/// Why a config could not be parsed into a usable [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing but whitespace.
    #[error("not a config (empty)")]
    Empty,
    /// Not JSON.
    #[error("error at line {} col {}: {message}", pos.line, pos.col)]
    Syntax {
        /// Where.
        pos: Pos,
        /// What.
        message: String,
    },
    /// The report contains errors (version problems, type mismatches, validation).
    #[error("config is not valid:\n{report}")]
    Invalid {
        /// Every entry, errors and warnings.
        report: Report,
    },
}

impl Error {
    /// The error as report entries (a syntax error becomes one `$` entry).
    pub fn report(&self) -> Report {
        match self {
            Error::Invalid { report } => report.clone(),
            Error::Empty => {
                let mut r = Report::default();
                r.add(Kind::Error, "$", None, "not a config (empty)");
                r
            }
            Error::Syntax { pos, message } => {
                let mut r = Report::default();
                r.add(Kind::Error, "$", Some(*pos), message.clone());
                r
            }
        }
    }
}

/// Parse and validate an Ignition 3.0.0..3.6.0 config, translated forward to 3.6.0.
///
/// Returns the config and its (non-fatal) report, or [`Error::Invalid`] carrying the full
/// report when any entry is an error.
pub fn parse(bytes: &[u8]) -> Result<(Config, Report), Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Syntax {
        pos: utf8_pos(bytes, e.valid_up_to()),
        message: "config is not valid UTF-8".into(),
    })?;
    if text.trim().is_empty() {
        return Err(Error::Empty);
    }
    let node = json::parse(text).map_err(|e| Error::Syntax {
        pos: e.pos,
        message: e.message,
    })?;
    parse_tree(&node)
}

/// Parse a positioned tree (from JSON or a YAML front end) as an Ignition config.
pub fn parse_tree(node: &tree::Node) -> Result<(Config, Report), Error> {
    let (mut config, report, version) = parse_tree_untranslated(node)?;
    version::translate_forward(&mut config, version.minor);
    Ok((config, report))
}

/// Parse and validate a tree under its declared version without translating it forward:
/// the config still means what it meant in that version (the YAML front end emits this).
pub fn parse_tree_untranslated(node: &tree::Node) -> Result<(Config, Report, Version), Error> {
    let mut report = Report::default();
    let version = match version::detect(node, &mut report) {
        Some(v) => v,
        None => return Err(Error::Invalid { report }),
    };
    let mut positions = schema::PosMap::new();
    let cleaned = schema::check(node, version.minor, &mut report, &mut positions);
    if report.is_fatal() {
        return Err(Error::Invalid { report });
    }
    let mut config: Config = match serde_json::from_value(cleaned) {
        Ok(c) => c,
        Err(e) => {
            // The schema walk mirrors the types, so this only happens on a schema/type drift.
            report.add(
                Kind::Error,
                "$",
                Some(node.pos),
                format!("config is not valid: {e}"),
            );
            return Err(Error::Invalid { report });
        }
    };
    let mut ctx = validate::Ctx::new(&positions, version.minor);
    validate::validate(&config, &mut ctx);
    report.merge(ctx.report);
    // Entries in source order, so the report reads top to bottom like the file.
    report
        .entries
        .sort_by_key(|e| e.pos.map(|p| (p.line, p.col)));
    if report.is_fatal() {
        return Err(Error::Invalid { report });
    }
    config.ignition.version = format!("3.{}.0", version.minor);
    Ok((config, report, version))
}

/// Validate a config and return every report entry, whether or not it parses.
pub fn validate_bytes(bytes: &[u8]) -> Report {
    match parse(bytes) {
        Ok((_, report)) => report,
        Err(e) => e.report(),
    }
}

fn utf8_pos(bytes: &[u8], upto: usize) -> Pos {
    let prefix = bytes.get(..upto).unwrap_or(bytes);
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, col }
}
