//! RFC 2397 `data:` URLs: `data:[<mediatype>][;base64],<data>`, percent-encoded or base64.

use base64::Engine as _;

/// Why a `data:` URL could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataUrlError {
    /// The URL does not start with `data:`.
    #[error("{url_head}: not a data URL")]
    NotDataUrl {
        /// The first characters of the URL.
        url_head: String,
    },
    /// No comma separates the header from the data.
    #[error("{url_head}: data URL has no ',' before the data")]
    NoComma {
        /// The first characters of the URL.
        url_head: String,
    },
    /// A `%` is not followed by two hex digits.
    #[error("{url_head}: bad percent-escape at byte {offset} of the data")]
    BadEscape {
        /// The first characters of the URL.
        url_head: String,
        /// Offset in the data part.
        offset: usize,
    },
    /// The base64 payload does not decode.
    #[error("{url_head}: bad base64 data: {reason}")]
    BadBase64 {
        /// The first characters of the URL.
        url_head: String,
        /// Decoder message.
        reason: String,
    },
}

/// The first 40 characters of a URL, to name it in errors without dumping a whole payload.
pub fn url_head(url: &str) -> String {
    let mut s: String = url.chars().take(40).collect();
    if url.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// Decode a `data:` URL into its bytes.
pub fn decode(url: &str) -> Result<Vec<u8>, DataUrlError> {
    let head = || url_head(url);
    let rest = url
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("data:"))
        .map(|_| &url[5..])
        .ok_or_else(|| DataUrlError::NotDataUrl { url_head: head() })?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| DataUrlError::NoComma { url_head: head() })?;
    let is_base64 = meta
        .rsplit(';')
        .next()
        .is_some_and(|last| last.eq_ignore_ascii_case("base64"));
    let raw = percent_decode(data).map_err(|offset| DataUrlError::BadEscape {
        url_head: head(),
        offset,
    })?;
    if !is_base64 {
        return Ok(raw);
    }
    // Whitespace is allowed inside base64 data URLs; padding is optional in practice.
    let compact: Vec<u8> = raw
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(&compact)
        .map_err(|e| DataUrlError::BadBase64 {
            url_head: head(),
            reason: e.to_string(),
        })
}

/// Percent-decode; `Err(offset)` names the bad escape.
fn percent_decode(s: &str) -> Result<Vec<u8>, usize> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(i)?;
            let hi = (hex[0] as char).to_digit(16).ok_or(i)?;
            let lo = (hex[1] as char).to_digit(16).ok_or(i)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_table() {
        let cases: &[(&str, &[u8])] = &[
            ("data:,", b""),
            ("data:,hello%20world", b"hello world"),
            ("data:text/plain;charset=utf-8,a%0Ab", b"a\nb"),
            ("data:;base64,aGVsbG8=", b"hello"),
            ("data:;base64,aGVsbG8", b"hello"),
            ("data:text/plain;base64,aGVs%0AbG8=", b"hello"),
            ("DATA:,x", b"x"),
            ("data:,a,b", b"a,b"),
            ("data:,%e2%9c%93", "✓".as_bytes()),
        ];
        for (url, want) in cases {
            assert_eq!(decode(url).unwrap(), *want, "{url}");
        }
    }

    #[test]
    fn rejects_table() {
        assert!(matches!(
            decode("http://x"),
            Err(DataUrlError::NotDataUrl { .. })
        ));
        assert!(matches!(
            decode("data:text/plain"),
            Err(DataUrlError::NoComma { .. })
        ));
        assert_eq!(
            decode("data:,ab%zz"),
            Err(DataUrlError::BadEscape {
                url_head: "data:,ab%zz".into(),
                offset: 2
            })
        );
        assert!(matches!(
            decode("data:,ab%4"),
            Err(DataUrlError::BadEscape { .. })
        ));
        assert!(matches!(
            decode("data:;base64,!!!"),
            Err(DataUrlError::BadBase64 { .. })
        ));
    }

    #[test]
    fn long_urls_are_shortened_in_errors() {
        let url = format!("data:;base64,{}!", "A".repeat(1000));
        let msg = decode(&url).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
