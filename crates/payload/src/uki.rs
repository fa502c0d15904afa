//! The unified kernel image as far as payloads need it: the PE machine type and the
//! `.cmdline` section with its `usrhash=`. The section table is parsed by hand with bounds
//! checks on every offset (PE/COFF: DOS header -> `PE\0\0` -> COFF header -> section table).

use std::io::{Read, Seek, SeekFrom};

use crate::PayloadError;

/// The most sections a PE file may have (the Windows loader's limit, which ukify stays in).
const MAX_SECTIONS: u16 = 96;

/// The longest kernel command line read from a UKI.
const MAX_CMDLINE: u32 = 64 * 1024;

/// What a UKI says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiInfo {
    /// The systemd architecture name from the PE machine type (`x86-64`, `arm64`, ...), if known.
    pub arch: Option<&'static str>,
    /// The kernel command line (the `.cmdline` section, trailing NULs and whitespace trimmed).
    pub cmdline: String,
}

impl UkiInfo {
    /// The value of the last `usrhash=` on the command line (the kernel's rule: last wins).
    pub fn usrhash(&self) -> Option<&str> {
        self.cmdline
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("usrhash="))
            .next_back()
    }
}

fn bad(what: impl Into<String>) -> PayloadError {
    PayloadError::BadUki { what: what.into() }
}

fn read_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), PayloadError> {
    r.seek(SeekFrom::Start(offset))
        .and_then(|_| r.read_exact(buf))
        .map_err(|e| bad(format!("reading {what} at offset {offset}: {e}")))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The systemd architecture name of a PE machine type.
fn arch_of(machine: u16) -> Option<&'static str> {
    match machine {
        0x8664 => Some("x86-64"),
        0x014c => Some("x86"),
        0xaa64 => Some("arm64"),
        0x01c4 => Some("arm"),
        0x5064 => Some("riscv64"),
        0x6264 => Some("loongarch64"),
        _ => None,
    }
}

/// Read the machine type and the `.cmdline` section of a UKI.
pub fn read_uki<R: Read + Seek>(mut r: R) -> Result<UkiInfo, PayloadError> {
    let mut dos = [0u8; 64];
    read_at(&mut r, 0, &mut dos, "the DOS header")?;
    if &dos[..2] != b"MZ" {
        return Err(bad("not a PE file (no MZ signature)"));
    }
    let pe = u64::from(u32_at(&dos, 0x3c));
    let mut coff = [0u8; 24];
    read_at(&mut r, pe, &mut coff, "the PE header")?;
    if &coff[..4] != b"PE\0\0" {
        return Err(bad(format!("no PE signature at offset {pe}")));
    }
    let machine = u16_at(&coff, 4);
    let sections = u16_at(&coff, 6);
    let opt_size = u64::from(u16_at(&coff, 20));
    if sections > MAX_SECTIONS {
        return Err(bad(format!("{sections} sections (at most {MAX_SECTIONS})")));
    }
    let table = pe + 24 + opt_size;
    let mut buf = vec![0u8; usize::from(sections) * 40];
    read_at(&mut r, table, &mut buf, "the section table")?;
    for s in buf.chunks_exact(40) {
        if &s[..8] != b".cmdline" {
            continue;
        }
        let virtual_size = u32_at(s, 8);
        let raw_size = u32_at(s, 16);
        let raw_ptr = u32_at(s, 20);
        // VirtualSize is the real length; the raw data is padded to the file alignment.
        let len = if virtual_size == 0 {
            raw_size
        } else {
            virtual_size.min(raw_size)
        };
        if len > MAX_CMDLINE {
            return Err(bad(format!(
                ".cmdline is {len} bytes (at most {MAX_CMDLINE})"
            )));
        }
        let mut text = vec![0u8; len as usize];
        read_at(
            &mut r,
            u64::from(raw_ptr),
            &mut text,
            "the .cmdline section",
        )?;
        let text = String::from_utf8(text).map_err(|_| bad(".cmdline is not UTF-8"))?;
        let cmdline = text
            .trim_end_matches(|c: char| c == '\0' || c.is_ascii_whitespace())
            .to_string();
        return Ok(UkiInfo {
            arch: arch_of(machine),
            cmdline,
        });
    }
    Err(bad("no .cmdline section"))
}

/// The UKI's kernel command line (its `.cmdline` PE section) and the `usrhash=` in it.
pub fn uki_usrhash<R: Read + Seek>(uki: R) -> Result<String, PayloadError> {
    let info = read_uki(uki)?;
    let hash = info.usrhash().ok_or_else(|| {
        bad(format!(
            "no usrhash= on the command line {:?}",
            info.cmdline
        ))
    })?;
    if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("usrhash={hash:?} is not a hex root hash")));
    }
    Ok(hash.to_ascii_lowercase())
}
