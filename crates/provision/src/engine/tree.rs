//! The dry-run tree: changes grouped by directory, like `tree(1)`.

use std::collections::BTreeMap;

use super::{Change, NodeKind};

#[derive(Default)]
struct Dir {
    children: BTreeMap<String, Dir>,
    notes: Vec<String>,
    is_dir: bool,
}

/// Render changes as a tree rooted at `/`; devices are listed after the tree.
pub fn render_tree(changes: &[Change]) -> String {
    let mut root = Dir {
        is_dir: true,
        ..Default::default()
    };
    let mut devices = Vec::new();
    for c in changes {
        if c.kind == NodeKind::Device {
            devices.push(c);
            continue;
        }
        let mut node = &mut root;
        for part in c.path.split('/').filter(|p| !p.is_empty()) {
            node.is_dir = true;
            node = node.children.entry(part.to_string()).or_default();
        }
        if c.kind == NodeKind::Directory {
            node.is_dir = true;
        }
        node.notes.push(describe(c));
    }
    let mut out = String::new();
    if !root.children.is_empty() || !root.notes.is_empty() {
        out.push('/');
        if !root.notes.is_empty() {
            out.push_str(&format!(" ({})", root.notes.join("; ")));
        }
        out.push('\n');
        walk(&root, "", &mut out);
    }
    for d in devices {
        out.push_str(&format!("{} ({})\n", d.path, d.action));
    }
    if out.is_empty() {
        out.push_str("(no changes)\n");
    }
    out
}

fn describe(c: &Change) -> String {
    match c.kind {
        NodeKind::Symlink => format!("symlink: {}", c.action),
        NodeKind::Hardlink => format!("hard link: {}", c.action),
        _ => c.action.clone(),
    }
}

fn walk(dir: &Dir, prefix: &str, out: &mut String) {
    let n = dir.children.len();
    for (i, (name, child)) in dir.children.iter().enumerate() {
        let last = i + 1 == n;
        out.push_str(prefix);
        out.push_str(if last { "└── " } else { "├── " });
        out.push_str(name);
        if child.is_dir {
            out.push('/');
        }
        if !child.notes.is_empty() {
            out.push_str(&format!(" ({})", child.notes.join("; ")));
        }
        out.push('\n');
        let next = format!("{prefix}{}", if last { "    " } else { "│   " });
        walk(child, &next, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nested_tree() {
        let c = |path: &str, kind, action: &str| Change {
            path: path.into(),
            kind,
            action: action.into(),
        };
        let changes = vec![
            c("/etc/passwd", NodeKind::File, "modify: add user core"),
            c("/etc/systemd/system/a.service", NodeKind::File, "create"),
            c("/home/core", NodeKind::Directory, "create"),
            c(
                "/etc/localtime",
                NodeKind::Symlink,
                "create -> /usr/share/zoneinfo/UTC",
            ),
            c("/dev/vdb", NodeKind::Device, "create partition 1"),
        ];
        let want = "\
/
├── etc/
│   ├── localtime (symlink: create -> /usr/share/zoneinfo/UTC)
│   ├── passwd (modify: add user core)
│   └── systemd/
│       └── system/
│           └── a.service (create)
└── home/
    └── core/ (create)
/dev/vdb (create partition 1)
";
        assert_eq!(render_tree(&changes), want);
        assert_eq!(render_tree(&[]), "(no changes)\n");
    }
}
