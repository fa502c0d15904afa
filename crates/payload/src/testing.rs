//! Test helpers (feature `test-util`): a minimal UKI-shaped PE file and a fake output
//! directory of `keelson image build`, for tests of this crate and of its users.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// PE machine type of x86-64.
pub const MACHINE_X86_64: u16 = 0x8664;

/// PE machine type of arm64.
pub const MACHINE_ARM64: u16 = 0xaa64;

/// A minimal PE32+ file with the given sections (name, contents), as ukify lays out a UKI:
/// DOS header, `PE\0\0`, COFF header, optional header, section table, raw data at 512-byte
/// alignment with VirtualSize the real length.
pub fn minimal_pe(machine: u16, sections: &[(&str, &[u8])]) -> Vec<u8> {
    const ALIGN: usize = 512;
    const OPT: usize = 240;
    let mut out = vec![0u8; 64];
    out[..2].copy_from_slice(b"MZ");
    out[0x3c..0x40].copy_from_slice(&64u32.to_le_bytes());
    out.extend_from_slice(b"PE\0\0");
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0u8; 12]); // time, symbol table, symbol count
    out.extend_from_slice(&(OPT as u16).to_le_bytes());
    out.extend_from_slice(&0x22u16.to_le_bytes()); // executable, large address aware
    let mut opt = vec![0u8; OPT];
    opt[..2].copy_from_slice(&0x20bu16.to_le_bytes()); // PE32+
    out.extend_from_slice(&opt);
    let table_end = out.len() + 40 * sections.len();
    let mut raw_at = table_end.div_ceil(ALIGN) * ALIGN;
    let mut raw = Vec::new();
    for (i, (name, data)) in sections.iter().enumerate() {
        let mut s = [0u8; 40];
        let n = name.as_bytes();
        let n = &n[..n.len().min(8)];
        s[..n.len()].copy_from_slice(n);
        let raw_size = data.len().div_ceil(ALIGN) * ALIGN;
        s[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        s[12..16].copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
        s[16..20].copy_from_slice(&(raw_size as u32).to_le_bytes());
        s[20..24].copy_from_slice(&(raw_at as u32).to_le_bytes());
        s[36..40].copy_from_slice(&0x4000_0040u32.to_le_bytes()); // initialised data, read
        out.extend_from_slice(&s);
        let mut d = data.to_vec();
        d.resize(raw_size, 0);
        raw.extend_from_slice(&d);
        raw_at += raw_size;
    }
    out.resize(table_end.div_ceil(ALIGN) * ALIGN, 0);
    out.extend_from_slice(&raw);
    out
}

/// A UKI-shaped PE for x86-64 with `.osrel`, `.cmdline` and a small `.linux`.
pub fn minimal_uki(cmdline: &str) -> Vec<u8> {
    minimal_pe(
        MACHINE_X86_64,
        &[
            (".osrel", b"ID=keelson\n"),
            (".cmdline", format!("{cmdline}\n").as_bytes()),
            (".linux", &[0x4d; 3000]),
        ],
    )
}

/// The files of a fake image build output.
#[derive(Debug, Clone)]
pub struct FakeImage {
    /// The usr erofs image.
    pub usr: PathBuf,
    /// The verity tree.
    pub usr_verity: PathBuf,
    /// The UKI.
    pub uki: PathBuf,
    /// The build record.
    pub record: PathBuf,
}

/// Write a fake output of `keelson image build` into `dir`: the parts (`usr`, `usr_verity`,
/// a UKI with `cmdline`) and the build record `<name>_<version>.json` naming them by
/// absolute path with `root_hash` as the usr root hash.
pub fn fake_image_dir(
    dir: &Path,
    name: &str,
    version: &str,
    root_hash: &str,
    usr: &[u8],
    usr_verity: &[u8],
    cmdline: &str,
) -> io::Result<FakeImage> {
    let dir = std::path::absolute(dir)?;
    fs::create_dir_all(&dir)?;
    let stem = format!("{name}_{version}");
    let img = FakeImage {
        usr: dir.join(format!("{stem}.usr.erofs")),
        usr_verity: dir.join(format!("{stem}.usr.verity")),
        uki: dir.join(format!("{stem}+3.efi")),
        record: dir.join(format!("{stem}.json")),
    };
    fs::write(&img.usr, usr)?;
    fs::write(&img.usr_verity, usr_verity)?;
    fs::write(&img.uki, minimal_uki(cmdline))?;
    let file = |kind: &str, p: &Path| serde_json::json!({"kind": kind, "path": p, "size": 0, "sha256": ""});
    let record = serde_json::json!({
        "version": version,
        "image": dir.join(format!("{stem}.img")),
        "usr_root_hash": root_hash,
        "cmdline": cmdline,
        "files": [
            file("usr", &img.usr),
            file("usr-verity", &img.usr_verity),
            file("uki", &img.uki),
            file("disk", &dir.join(format!("{stem}.img"))),
        ],
    });
    fs::write(&img.record, format!("{record:#}\n"))?;
    Ok(img)
}

/// Deterministic, incompressible bytes: zstd stores them as raw blocks, so a flipped byte in a
/// stored chunk stays a flipped byte (a hash mismatch, not a decode error).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
