//! Validation reports in Ignition's form:
//! `error at $.storage.files.0.path, line 7 col 15: path not absolute`.

use std::fmt;

use serde::Serialize;

/// Severity of one report entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The config cannot be used.
    Error,
    /// The config works but probably not as intended.
    Warning,
    /// Informational.
    Info,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Info => "info",
        })
    }
}

/// A line/column position in the source text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

/// One report entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Severity.
    pub kind: Kind,
    /// JSON path like `$.storage.files.0.path` (`$` alone for the whole config).
    pub path: String,
    /// Position of the offending value in the source, when known.
    pub pos: Option<Pos>,
    /// Ignition's stable message.
    pub message: String,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.path)?;
        if let Some(p) = self.pos {
            write!(f, ", line {} col {}", p.line, p.col)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All entries produced while parsing/validating one config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Entries in the order they were found.
    pub entries: Vec<Entry>,
}

impl Report {
    /// Add an entry.
    pub fn add(
        &mut self,
        kind: Kind,
        path: impl Into<String>,
        pos: Option<Pos>,
        message: impl Into<String>,
    ) {
        self.entries.push(Entry {
            kind,
            path: path.into(),
            pos,
            message: message.into(),
        });
    }

    /// True when at least one entry is an error.
    pub fn is_fatal(&self) -> bool {
        self.entries.iter().any(|e| e.kind == Kind::Error)
    }

    /// True when there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append all entries of another report.
    pub fn merge(&mut self, other: Report) {
        self.entries.extend(other.entries);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
