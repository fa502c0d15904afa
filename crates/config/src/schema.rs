//! The Ignition 3.x field tree with the minor version each field appeared in.
//!
//! Checking a positioned tree against it for a declared version gives Ignition's behaviour for
//! that version: keys the version does not know are "unused key" warnings and are dropped
//! (so a 3.0 config's `kernelArguments` is ignored, as Ignition's 3.0 parser ignores it), and
//! wrong JSON types are errors. The result is plain JSON that deserializes into the 3.6 types.

use std::collections::HashMap;

use crate::report::{Kind, Pos, Report};
use crate::tree::{Node, Number, Value};

/// Shape of one field.
#[derive(Debug)]
pub enum Ty {
    /// JSON string.
    Str,
    /// JSON integer.
    Int,
    /// JSON boolean.
    Bool,
    /// JSON object with known fields.
    Obj(&'static [Field]),
    /// JSON array of one shape.
    List(&'static Ty),
}

/// One known key: name, shape, first minor version (3.N) that has it.
#[derive(Debug)]
pub struct Field {
    /// Key as written in JSON.
    pub name: &'static str,
    /// Shape.
    pub ty: Ty,
    /// First 3.N minor version where the key exists.
    pub since: u32,
}

const fn f(name: &'static str, ty: Ty, since: u32) -> Field {
    Field { name, ty, since }
}

const STRS: Ty = Ty::Str;

const HEADER: &[Field] = &[f("name", Ty::Str, 1), f("value", Ty::Str, 1)];
const VERIFICATION: &[Field] = &[f("hash", Ty::Str, 0)];
/// Resources in files (contents/append) had `compression` since 3.0.
const RESOURCE_FILE: &[Field] = &[
    f("compression", Ty::Str, 0),
    f("httpHeaders", Ty::List(&Ty::Obj(HEADER)), 1),
    f("source", Ty::Str, 0),
    f("verification", Ty::Obj(VERIFICATION), 0),
];
/// Config and CA references gained `compression` in 3.1.
const RESOURCE_OTHER: &[Field] = &[
    f("compression", Ty::Str, 1),
    f("httpHeaders", Ty::List(&Ty::Obj(HEADER)), 1),
    f("source", Ty::Str, 0),
    f("verification", Ty::Obj(VERIFICATION), 0),
];
const IGN_CONFIG: &[Field] = &[
    f("merge", Ty::List(&Ty::Obj(RESOURCE_OTHER)), 0),
    f("replace", Ty::Obj(RESOURCE_OTHER), 0),
];
const PROXY: &[Field] = &[
    f("httpProxy", Ty::Str, 1),
    f("httpsProxy", Ty::Str, 1),
    f("noProxy", Ty::List(&STRS), 1),
];
const TLS: &[Field] = &[f(
    "certificateAuthorities",
    Ty::List(&Ty::Obj(RESOURCE_OTHER)),
    0,
)];
const SECURITY: &[Field] = &[f("tls", Ty::Obj(TLS), 0)];
const TIMEOUTS: &[Field] = &[
    f("httpResponseHeaders", Ty::Int, 0),
    f("httpTotal", Ty::Int, 0),
];
const IGNITION: &[Field] = &[
    f("config", Ty::Obj(IGN_CONFIG), 0),
    f("proxy", Ty::Obj(PROXY), 1),
    f("security", Ty::Obj(SECURITY), 0),
    f("timeouts", Ty::Obj(TIMEOUTS), 0),
    f("version", Ty::Str, 0),
];
const KARGS: &[Field] = &[
    f("shouldExist", Ty::List(&STRS), 3),
    f("shouldNotExist", Ty::List(&STRS), 3),
];
const GROUP: &[Field] = &[
    f("gid", Ty::Int, 0),
    f("name", Ty::Str, 0),
    f("passwordHash", Ty::Str, 0),
    f("shouldExist", Ty::Bool, 2),
    f("system", Ty::Bool, 0),
];
const USER: &[Field] = &[
    f("gecos", Ty::Str, 0),
    f("groups", Ty::List(&STRS), 0),
    f("homeDir", Ty::Str, 0),
    f("name", Ty::Str, 0),
    f("noCreateHome", Ty::Bool, 0),
    f("noLogInit", Ty::Bool, 0),
    f("noUserGroup", Ty::Bool, 0),
    f("passwordHash", Ty::Str, 0),
    f("primaryGroup", Ty::Str, 0),
    f("shell", Ty::Str, 0),
    f("shouldExist", Ty::Bool, 2),
    f("sshAuthorizedKeys", Ty::List(&STRS), 0),
    f("system", Ty::Bool, 0),
    f("uid", Ty::Int, 0),
];
const PASSWD: &[Field] = &[
    f("groups", Ty::List(&Ty::Obj(GROUP)), 0),
    f("users", Ty::List(&Ty::Obj(USER)), 0),
];
const OWNER: &[Field] = &[f("id", Ty::Int, 0), f("name", Ty::Str, 0)];
const FILE: &[Field] = &[
    f("group", Ty::Obj(OWNER), 0),
    f("overwrite", Ty::Bool, 0),
    f("path", Ty::Str, 0),
    f("user", Ty::Obj(OWNER), 0),
    f("append", Ty::List(&Ty::Obj(RESOURCE_FILE)), 0),
    f("contents", Ty::Obj(RESOURCE_FILE), 0),
    f("mode", Ty::Int, 0),
];
const DIRECTORY: &[Field] = &[
    f("group", Ty::Obj(OWNER), 0),
    f("overwrite", Ty::Bool, 0),
    f("path", Ty::Str, 0),
    f("user", Ty::Obj(OWNER), 0),
    f("mode", Ty::Int, 0),
];
const LINK: &[Field] = &[
    f("group", Ty::Obj(OWNER), 0),
    f("overwrite", Ty::Bool, 0),
    f("path", Ty::Str, 0),
    f("user", Ty::Obj(OWNER), 0),
    f("hard", Ty::Bool, 0),
    f("target", Ty::Str, 0),
];
const PARTITION: &[Field] = &[
    f("guid", Ty::Str, 0),
    f("label", Ty::Str, 0),
    f("number", Ty::Int, 0),
    f("resize", Ty::Bool, 2),
    f("shouldExist", Ty::Bool, 0),
    f("sizeMiB", Ty::Int, 0),
    f("startMiB", Ty::Int, 0),
    f("typeGuid", Ty::Str, 0),
    f("wipePartitionEntry", Ty::Bool, 0),
];
const DISK: &[Field] = &[
    f("device", Ty::Str, 0),
    f("partitions", Ty::List(&Ty::Obj(PARTITION)), 0),
    f("wipeTable", Ty::Bool, 0),
];
const FILESYSTEM: &[Field] = &[
    f("device", Ty::Str, 0),
    f("format", Ty::Str, 0),
    f("label", Ty::Str, 0),
    f("mountOptions", Ty::List(&STRS), 1),
    f("options", Ty::List(&STRS), 0),
    f("path", Ty::Str, 0),
    f("uuid", Ty::Str, 0),
    f("wipeFilesystem", Ty::Bool, 0),
];
const RAID: &[Field] = &[
    f("devices", Ty::List(&STRS), 0),
    f("level", Ty::Str, 0),
    f("name", Ty::Str, 0),
    f("options", Ty::List(&STRS), 0),
    f("spares", Ty::Int, 0),
];
const TANG: &[Field] = &[
    f("advertisement", Ty::Str, 4),
    f("thumbprint", Ty::Str, 2),
    f("url", Ty::Str, 2),
];
const CUSTOM: &[Field] = &[
    f("config", Ty::Str, 2),
    f("needsNetwork", Ty::Bool, 2),
    f("pin", Ty::Str, 2),
];
const CLEVIS: &[Field] = &[
    f("custom", Ty::Obj(CUSTOM), 2),
    f("tang", Ty::List(&Ty::Obj(TANG)), 2),
    f("threshold", Ty::Int, 2),
    f("tpm2", Ty::Bool, 2),
];
const CEX: &[Field] = &[f("enabled", Ty::Bool, 5)];
const LUKS: &[Field] = &[
    f("cex", Ty::Obj(CEX), 5),
    f("clevis", Ty::Obj(CLEVIS), 2),
    f("device", Ty::Str, 2),
    f("discard", Ty::Bool, 4),
    f("keyFile", Ty::Obj(RESOURCE_FILE), 2),
    f("label", Ty::Str, 2),
    f("name", Ty::Str, 2),
    f("openOptions", Ty::List(&STRS), 4),
    f("options", Ty::List(&STRS), 2),
    f("uuid", Ty::Str, 2),
    f("wipeVolume", Ty::Bool, 2),
];
const STORAGE: &[Field] = &[
    f("directories", Ty::List(&Ty::Obj(DIRECTORY)), 0),
    f("disks", Ty::List(&Ty::Obj(DISK)), 0),
    f("files", Ty::List(&Ty::Obj(FILE)), 0),
    f("filesystems", Ty::List(&Ty::Obj(FILESYSTEM)), 0),
    f("links", Ty::List(&Ty::Obj(LINK)), 0),
    f("luks", Ty::List(&Ty::Obj(LUKS)), 2),
    f("raid", Ty::List(&Ty::Obj(RAID)), 0),
];
const DROPIN: &[Field] = &[f("contents", Ty::Str, 0), f("name", Ty::Str, 0)];
const UNIT: &[Field] = &[
    f("contents", Ty::Str, 0),
    f("dropins", Ty::List(&Ty::Obj(DROPIN)), 0),
    f("enabled", Ty::Bool, 0),
    f("mask", Ty::Bool, 0),
    f("name", Ty::Str, 0),
];
const SYSTEMD: &[Field] = &[f("units", Ty::List(&Ty::Obj(UNIT)), 0)];
/// The root of the Ignition 3.x field tree.
pub const CONFIG: &[Field] = &[
    f("ignition", Ty::Obj(IGNITION), 0),
    f("kernelArguments", Ty::Obj(KARGS), 3),
    f("passwd", Ty::Obj(PASSWD), 0),
    f("storage", Ty::Obj(STORAGE), 0),
    f("systemd", Ty::Obj(SYSTEMD), 0),
];

/// Positions of every value (and, under `key:` prefix, every key) by JSON path.
pub type PosMap = HashMap<String, Pos>;

/// A neutral stand-in for a null or mistyped list item, so indexes and typing stay intact.
fn placeholder(ty: &Ty) -> serde_json::Value {
    match ty {
        Ty::Str => serde_json::Value::String(String::new()),
        Ty::Int => serde_json::Value::from(0),
        Ty::Bool => serde_json::Value::Bool(false),
        Ty::Obj(_) => serde_json::Value::Object(serde_json::Map::new()),
        Ty::List(_) => serde_json::Value::Array(Vec::new()),
    }
}

fn ty_name(ty: &Ty) -> &'static str {
    match ty {
        Ty::Str => "string",
        Ty::Int => "integer",
        Ty::Bool => "boolean",
        Ty::Obj(_) => "object",
        Ty::List(_) => "array",
    }
}

/// Check `node` against `fields` for spec 3.`minor`; returns the cleaned JSON, filling
/// `report` (unused keys: warnings; wrong types: errors) and `positions`.
pub fn check(
    node: &Node,
    minor: u32,
    report: &mut Report,
    positions: &mut PosMap,
) -> serde_json::Value {
    check_ty(node, &Ty::Obj(CONFIG), "$", minor, report, positions)
        .unwrap_or(serde_json::Value::Null)
}

fn check_ty(
    node: &Node,
    ty: &Ty,
    path: &str,
    minor: u32,
    report: &mut Report,
    positions: &mut PosMap,
) -> Option<serde_json::Value> {
    positions.insert(path.to_string(), node.pos);
    if matches!(node.value, Value::Null) {
        // Go decodes null into a nil pointer/slice: the same as absent.
        return None;
    }
    let mismatch = |report: &mut Report| {
        report.add(
            Kind::Error,
            path,
            Some(node.pos),
            format!(
                "cannot unmarshal {} into a field of type {}",
                node.value.type_name(),
                ty_name(ty)
            ),
        );
        None
    };
    match (ty, &node.value) {
        (Ty::Str, Value::String(s)) => Some(serde_json::Value::String(s.clone())),
        (Ty::Bool, Value::Bool(b)) => Some(serde_json::Value::Bool(*b)),
        (Ty::Int, Value::Number(Number::Int(i))) => Some(serde_json::Value::from(*i)),
        (Ty::Int, Value::Number(Number::Float(x))) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
            // 1e3 is an integer to Go's decoder as long as it has no fraction.
            #[allow(clippy::cast_possible_truncation)]
            Some(serde_json::Value::from(*x as i64))
        }
        (Ty::List(inner), Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}.{i}");
                // Keep list indexes stable: a null or bad item stays a placeholder.
                out.push(
                    check_ty(item, inner, &p, minor, report, positions)
                        .unwrap_or_else(|| placeholder(inner)),
                );
            }
            Some(serde_json::Value::Array(out))
        }
        (Ty::Obj(fields), Value::Object(members)) => {
            let mut map = serde_json::Map::new();
            for m in members {
                let p = format!("{path}.{}", m.key);
                positions.insert(format!("key:{p}"), m.key_pos);
                match fields.iter().find(|f| f.name == m.key && f.since <= minor) {
                    Some(field) => {
                        if let Some(v) = check_ty(&m.node, &field.ty, &p, minor, report, positions)
                        {
                            map.insert(m.key.clone(), v);
                        } else {
                            map.remove(&m.key);
                        }
                    }
                    None => report.add(
                        Kind::Warning,
                        &p,
                        Some(m.key_pos),
                        format!("unused key {}", m.key),
                    ),
                }
            }
            Some(serde_json::Value::Object(map))
        }
        _ => mismatch(report),
    }
}
