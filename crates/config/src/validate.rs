//! Semantic validation of a typed config with Ignition's stable messages.

use crate::report::{Kind, Pos, Report};
use crate::schema::PosMap;
use crate::v3_6::Config;

/// Validation context: positions by path, declared minor version, and the report.
pub struct Ctx<'a> {
    positions: &'a PosMap,
    /// Declared spec minor version (3.N).
    pub minor: u32,
    /// Entries found so far.
    pub report: Report,
}

impl<'a> Ctx<'a> {
    /// New context for a config declared as 3.`minor`.
    pub fn new(positions: &'a PosMap, minor: u32) -> Self {
        Ctx {
            positions,
            minor,
            report: Report::default(),
        }
    }

    /// Position of `path`, or of its nearest ancestor that exists in the source.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// Add an error at `path`.
    pub fn error(&mut self, path: &str, msg: impl Into<String>) {
        let pos = self.pos(path);
        self.report.add(Kind::Error, path, pos, msg);
    }

    /// Add a warning at `path`.
    pub fn warn(&mut self, path: &str, msg: impl Into<String>) {
        let pos = self.pos(path);
        self.report.add(Kind::Warning, path, pos, msg);
    }
}

/// Validate a whole config.
pub fn validate(_cfg: &Config, _ctx: &mut Ctx<'_>) {}
