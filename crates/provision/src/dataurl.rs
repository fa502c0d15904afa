//! RFC 2397 `data:` URLs, decoded as Ignition's fetcher decodes them: through
//! `keelson_config::dataurl` (the port of the `vincent-petithory/dataurl` package that
//! validation uses too), so a URL the fetch stage reads is one validation accepted, with the
//! same grammar and messages. Like Ignition's `FetchFromDataURL`, which decodes the
//! re-serialized URL, the scheme may be in any case.

/// Why a `data:` URL could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataUrlError {
    /// The URL does not decode; `reason` is the dataurl package's message.
    #[error("{url_head}: {reason}")]
    Invalid {
        /// The first characters of the URL.
        url_head: String,
        /// Why, in Ignition's words (`invalid data character`, `missing comma before data`).
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
    // Go's url.Parse lowercases the scheme and the fetcher decodes u.String().
    let lowered;
    let url_in = match url.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("data:") && p != "data:" => {
            lowered = format!("data:{}", &url[5..]);
            lowered.as_str()
        }
        _ => url,
    };
    keelson_config::dataurl::decode(url_in)
        .map(|d| d.data)
        .map_err(|reason| DataUrlError::Invalid {
            url_head: url_head(url),
            reason,
        })
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
        let reason = |url: &str| match decode(url) {
            Err(DataUrlError::Invalid { reason, .. }) => reason,
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(reason("http://x"), "missing data prefix");
        assert_eq!(reason("data:text/plain"), "incomplete media type");
        assert_eq!(
            reason("data:,ab%zz"),
            "rfc2396: invalid char 0x25 in unescape sequence"
        );
        assert_eq!(
            reason("data:,ab%4"),
            "rfc2396: unexpected end of unescape sequence"
        );
        assert_eq!(reason("data:;base64,!!!"), "invalid data character");
        // Ignition's decoder wants base64 padding, and no escapes in base64 data.
        assert_eq!(
            reason("data:;base64,aGVsbG8"),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            reason("data:text/plain;base64,aGVs%0AbG8="),
            "invalid data character"
        );
        assert_eq!(reason("data:,a b"), "invalid data character");
    }

    #[test]
    fn long_urls_are_shortened_in_errors() {
        let url = format!("data:;base64,{}!", "A".repeat(1000));
        let msg = decode(&url).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
