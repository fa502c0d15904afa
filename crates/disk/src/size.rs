//! Byte sizes as people type them (`4G`, `512MiB`, `1048576`) and as `keelson disk show`
//! prints them.

use crate::DiskError;

/// Parses a size: a whole number of bytes with an optional binary suffix
/// (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`; all powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, DiskError> {
    let bad = |reason: &'static str| DiskError::BadSize {
        text: text.to_string(),
        reason,
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad(
            "expected a number, optionally followed by K, M, G or T",
        ));
    }
    let number: u64 = digits.parse().map_err(|_| bad("number too large"))?;
    let shift = match suffix.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(bad("unknown suffix (use K, M, G, T or KiB, MiB, GiB, TiB)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("size does not fit in 64 bits"))
}

/// Formats a byte count with a binary unit and one decimal (`1.0 GiB`), bytes below 1 KiB.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Display only: the float rounding is fine here.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("512", 512),
            ("512B", 512),
            ("4K", 4096),
            ("1MiB", 1 << 20),
            ("2G", 2 << 30),
            (" 3 GiB ", 3 << 30),
            ("1T", 1 << 40),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text).unwrap(), *bytes, "{text}");
        }
        let bad = [
            "",
            "G",
            "1.5G",
            "12X",
            "-1",
            "99999999999999999999",
            "16777216T",
        ];
        for text in bad {
            let e = parse_size(text).unwrap_err();
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn format_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1 << 20, "1.0 MiB"),
            (3 << 29, "1.5 GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(format_size(*bytes), *text);
        }
    }
}
