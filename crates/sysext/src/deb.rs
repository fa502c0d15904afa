//! Debian packages as extension content: resolve the packages and the dependencies the OS
//! image does not already have (apt, against a dpkg status made from the image's recorded
//! package set), download them, and unpack them into a tree.
//!
//! The image build records its package set with [`DPKG_QUERY_FORMAT`] next to the image as
//! `keelson_<v>.packages`; [`BasePackages::parse`] reads it back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use keelson_cmd as cmd;

use crate::error::SysextError;

/// `dpkg-query -W -f` format of the recorded package set: status, name, version,
/// architecture, Multi-Arch and Provides, tab separated.
pub const DPKG_QUERY_FORMAT: &str = "${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\t${Multi-Arch}\\t${Provides}\\n";

/// The default keyring apt checks the archive with.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One installed package of the base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BasePackage {
    /// Package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`).
    pub arch: String,
    /// Multi-Arch field, if any.
    pub multi_arch: Option<String>,
    /// Provides field, if any.
    pub provides: Option<String>,
}

/// The installed package set of an OS image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BasePackages {
    /// The packages, in file order.
    pub packages: Vec<BasePackage>,
}

impl BasePackages {
    /// Parses [`DPKG_QUERY_FORMAT`] output (only `installed` rows count), or plain
    /// `dpkg-query -W` output (`name[:arch]<TAB>version`). `default_arch` is used where the
    /// line has none; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path, default_arch: &str) -> Result<Self, SysextError> {
        let mut packages = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let err = |reason: String| SysextError::BasePackages {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let cols: Vec<&str> = line.split('\t').collect();
            let opt = |s: Option<&&str>| {
                s.map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(String::from)
            };
            let p = match cols.as_slice() {
                [status, name, version, arch, rest @ ..] => {
                    if *status != "installed" {
                        continue;
                    }
                    BasePackage {
                        name: name.to_string(),
                        version: version.to_string(),
                        arch: arch.to_string(),
                        multi_arch: opt(rest.first()),
                        provides: opt(rest.get(1)),
                    }
                }
                [name, version] => {
                    let (name, arch) = name.split_once(':').unwrap_or((name, default_arch));
                    BasePackage {
                        name: name.to_string(),
                        version: version.to_string(),
                        arch: arch.to_string(),
                        multi_arch: None,
                        provides: None,
                    }
                }
                _ => {
                    return Err(err(format!(
                        "expected `name<TAB>version` or keelson's {} columns, got {} column(s)",
                        6,
                        cols.len()
                    )));
                }
            };
            if !valid_package_name(&p.name) || p.version.is_empty() || p.arch.is_empty() {
                return Err(err(format!(
                    "{line:?} has no valid name, version and architecture"
                )));
            }
            packages.push(p);
        }
        if packages.is_empty() {
            return Err(SysextError::BasePackages {
                path: path.to_path_buf(),
                line: 0,
                reason: "no installed packages listed".into(),
            });
        }
        Ok(BasePackages { packages })
    }

    /// Reads the file at `path`.
    pub fn read(path: &Path, default_arch: &str) -> Result<Self, SysextError> {
        let text = fs::read_to_string(path).map_err(SysextError::io_on("reading", path))?;
        Self::parse(&text, path, default_arch)
    }

    /// A dpkg status file saying these packages are installed (what apt resolves against).
    pub fn dpkg_status(&self) -> String {
        let mut s = String::new();
        for p in &self.packages {
            s.push_str(&format!(
                "Package: {}\nStatus: install ok installed\nPriority: optional\nVersion: {}\nArchitecture: {}\n",
                p.name, p.version, p.arch
            ));
            if let Some(m) = &p.multi_arch {
                s.push_str(&format!("Multi-Arch: {m}\n"));
            }
            if let Some(pr) = &p.provides {
                s.push_str(&format!("Provides: {pr}\n"));
            }
            s.push_str(
                "Maintainer: keelson base image\nDescription: installed in the base image\n\n",
            );
        }
        s
    }
}

/// Debian package names: lowercase letters, digits, `+ - .`, at least two characters.
pub fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// The archive to take packages from (the OS definition's suite, mirror and components).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// Suite (`trixie`).
    pub suite: String,
    /// Mirror URL.
    pub mirror: String,
    /// Components (`main`).
    pub components: Vec<String>,
    /// Debian architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Keyring that signs the archive.
    pub keyring: PathBuf,
}

/// The Debian architecture of a systemd architecture name.
pub fn debian_arch(systemd_arch: &str) -> Option<&'static str> {
    match systemd_arch {
        "x86-64" => Some("amd64"),
        "arm64" => Some("arm64"),
        _ => None,
    }
}

/// A package apt chose to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetched {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The downloaded .deb.
    pub path: PathBuf,
}

fn apt(apt_dir: &Path) -> Command {
    let mut c = Command::new("apt-get");
    c.env("APT_CONFIG", apt_dir.join("apt.conf"))
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("-q");
    c
}

/// Resolves `wanted` (package names, optionally `name=version`) against the archive with
/// `base` counted as installed, and downloads what is missing into `work/debs`. `cache` keeps
/// apt's package lists between runs.
pub fn fetch(
    wanted: &[String],
    base: &BasePackages,
    source: &AptSource,
    cache: &Path,
    work: &Path,
) -> Result<Vec<Fetched>, SysextError> {
    for w in wanted {
        let name = w.split_once('=').map(|(n, _)| n).unwrap_or(w);
        if !valid_package_name(name) {
            return Err(SysextError::invalid(
                "--deb",
                w,
                "not a Debian package name",
            ));
        }
    }
    if wanted.is_empty() {
        return Err(SysextError::invalid(
            "--deb",
            "",
            "name at least one package",
        ));
    }
    let key = {
        use sha2::{Digest, Sha256};
        let k = format!(
            "{}\n{}\n{}\n{}",
            source.suite,
            source.mirror,
            source.components.join(" "),
            source.arch
        );
        hex::encode(&Sha256::digest(k.as_bytes())[..8])
    };
    let apt_dir = cache.join("sysext-apt").join(key);
    let lists = apt_dir.join("lists");
    let status = work.join("status");
    let archives = work.join("debs");
    for d in [
        lists.join("partial"),
        archives.join("partial"),
        apt_dir.join("etc/apt.conf.d"),
        apt_dir.join("etc/preferences.d"),
        apt_dir.join("etc/sources.list.d"),
    ] {
        fs::create_dir_all(&d).map_err(SysextError::io_on("creating", &d))?;
    }
    fs::write(&status, base.dpkg_status()).map_err(SysextError::io_on("writing", &status))?;
    let sources = apt_dir.join("etc/sources.list");
    fs::write(
        &sources,
        format!(
            "deb [signed-by={}] {} {} {}\n",
            source.keyring.display(),
            source.mirror,
            source.suite,
            source.components.join(" ")
        ),
    )
    .map_err(SysextError::io_on("writing", &sources))?;
    // Everything apt reads and writes is under apt_dir or work: not the host's apt state.
    let conf = format!(
        "Dir \"{dir}/\";\n\
         Dir::Etc \"{dir}/etc/\";\n\
         Dir::Etc::Main \"/dev/null\";\n\
         Dir::Etc::Parts \"{dir}/etc/apt.conf.d/\";\n\
         Dir::Etc::SourceList \"{dir}/etc/sources.list\";\n\
         Dir::Etc::SourceParts \"{dir}/etc/sources.list.d/\";\n\
         Dir::Etc::Preferences \"/dev/null\";\n\
         Dir::Etc::PreferencesParts \"{dir}/etc/preferences.d/\";\n\
         Dir::State \"{dir}/\";\n\
         Dir::State::Lists \"{dir}/lists/\";\n\
         Dir::State::status \"{status}\";\n\
         Dir::Cache \"{work}/cache/\";\n\
         Dir::Cache::Archives \"{archives}/\";\n\
         Dir::Log \"{work}/log/\";\n\
         APT::Architecture \"{arch}\";\n\
         APT::Architectures {{ \"{arch}\"; }};\n\
         APT::Install-Recommends \"false\";\n\
         APT::Install-Suggests \"false\";\n\
         Acquire::Languages \"none\";\n\
         Debug::NoLocking \"true\";\n\
         APT::Sandbox::User \"root\";\n",
        dir = apt_dir.display(),
        status = status.display(),
        work = work.display(),
        archives = archives.display(),
        arch = source.arch,
    );
    let conf_path = apt_dir.join("apt.conf");
    fs::write(&conf_path, conf).map_err(SysextError::io_on("writing", &conf_path))?;
    cmd::run(apt(&apt_dir).arg("update"))?;
    // What apt would install on the base image, then exactly those downloaded.
    let sim = cmd::run(apt(&apt_dir).args(["install", "-s", "-y"]).args(wanted))?;
    let planned = parse_simulation(&sim);
    if planned.is_empty() {
        return Err(SysextError::invalid(
            "--deb",
            &wanted.join(" "),
            "the base image already has every one of these packages: nothing to put in the extension",
        ));
    }
    let pins: Vec<String> = planned.iter().map(|(n, v)| format!("{n}={v}")).collect();
    cmd::run(
        apt(&apt_dir)
            .args(["install", "-y", "--download-only"])
            .args(&pins),
    )?;
    let mut out = Vec::new();
    for (name, version) in planned {
        let file_version = version.replace(':', "%3a");
        let found = fs::read_dir(&archives)
            .map_err(SysextError::io_on("listing", &archives))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .map(|f| {
                        f.to_string_lossy()
                            .starts_with(&format!("{name}_{file_version}_"))
                    })
                    .unwrap_or(false)
            });
        let path = found.ok_or_else(|| SysextError::Forbidden {
            path: archives.clone(),
            reason: format!("apt did not download {name} {version}"),
        })?;
        out.push(Fetched {
            name,
            version,
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The `Inst name (version ...)` lines of `apt-get install -s`.
pub fn parse_simulation(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            // "Inst foo [old] (1.2-3 Debian:13/stable [amd64])"
            let open = rest.find('(')?;
            let version = rest[open + 1..].split_whitespace().next()?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// The merged-/usr aliases: content a package ships under these goes to `usr/<same>`.
pub const USR_ALIASES: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// Unpacks the packages into `root` (with `dpkg-deb -x`, no maintainer scripts run) and folds
/// the merged-/usr aliases (`/bin`, `/sbin`, `/lib`, `/lib64`) into `usr/`, as the OS has them.
pub fn unpack(debs: &[Fetched], root: &Path) -> Result<(), SysextError> {
    fs::create_dir_all(root).map_err(SysextError::io_on("creating", root))?;
    for d in debs {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&d.path).arg(root))?;
    }
    for alias in USR_ALIASES {
        let from = root.join(alias);
        let meta = match fs::symlink_metadata(&from) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if !meta.is_dir() {
            continue;
        }
        let to = root.join("usr").join(alias);
        fs::create_dir_all(&to).map_err(SysextError::io_on("creating", &to))?;
        let mut src = from.as_os_str().to_owned();
        src.push("/.");
        cmd::run(Command::new("cp").arg("-a").arg(src).arg(&to))?;
        fs::remove_dir_all(&from).map_err(SysextError::io_on("removing", &from))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base_packages_both_formats() {
        let p = Path::new("keelson_1.0.packages");
        let b = BasePackages::parse(
            "installed\tlibc6\t2.41-12\tamd64\tsame\t\nconfig-files\told\t1\tamd64\t\t\ninstalled\tmawk\t1.3.4\tamd64\tforeign\tawk\n",
            p,
            "amd64",
        )
        .unwrap();
        assert_eq!(b.packages.len(), 2);
        assert_eq!(b.packages[1].provides.as_deref(), Some("awk"));
        let s = b.dpkg_status();
        assert!(
            s.contains("Package: libc6\nStatus: install ok installed\n"),
            "{s}"
        );
        assert!(
            s.contains("Multi-Arch: same\n") && s.contains("Provides: awk\n"),
            "{s}"
        );
        let plain = BasePackages::parse("libc6:amd64\t2.41\nbash\t5.2\n", p, "arm64").unwrap();
        assert_eq!(plain.packages[0].arch, "amd64");
        assert_eq!(plain.packages[1].arch, "arm64");
    }

    #[test]
    fn bad_base_packages_name_the_line() {
        let p = Path::new("f");
        let e = BasePackages::parse("libc6\t2\nonly-one-column\n", p, "amd64").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = BasePackages::parse("", p, "amd64").unwrap_err();
        assert!(e.to_string().contains("no installed packages"), "{e}");
        let e = BasePackages::parse("BAD\t1\n", p, "amd64").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn simulation_lines() {
        let sim = "NOTE: This is only a simulation!\nInst libonig5 (6.9.9-1+b1 Debian:13.2/stable [amd64])\nInst jq [1.6] (1.7.1-6 Debian:13.2/stable [amd64])\nConf jq (1.7.1-6 Debian:13.2/stable [amd64])\n";
        assert_eq!(
            parse_simulation(sim),
            vec![
                ("libonig5".to_string(), "6.9.9-1+b1".to_string()),
                ("jq".to_string(), "1.7.1-6".to_string())
            ]
        );
    }

    #[test]
    fn package_names() {
        assert!(valid_package_name("libstdc++6"));
        assert!(!valid_package_name("Foo"));
        assert!(!valid_package_name("-x"));
        assert!(!valid_package_name("a"));
    }
}
