//! What Go's `net/url.Parse` accepts, and the parts Ignition looks at.
//!
//! Ignition decides "unable to parse url" by calling `url.Parse` (`config/v3_*/types/url.go`,
//! `validateURL`; `proxy.go`; `tang.go`), so a URL is valid here exactly when Go's parser
//! takes it: a scheme is optional, `//` is not required (`http:host` is an opaque URL), spaces
//! in the path are fine, but control bytes, a bad `%` escape, a bad port, a character no host
//! may contain, or a colon in the first segment of a scheme-less URL are errors.

/// The parts of a parsed URL that validation needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoUrl {
    /// Scheme, lowercased (`""` when there is none).
    pub scheme: String,
    /// Everything after `scheme:` when it does not start with `/` (`arn:aws:s3:::b/k`).
    pub opaque: String,
    /// Host (with port), unescaped.
    pub host: String,
    /// Raw query, without the `?`.
    pub raw_query: String,
}

/// Why Go's parser refuses a URL (Ignition only ever reports "unable to parse url").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(m.into()))
}

/// Parse like Go's `url.Parse`.
pub fn parse(raw: &str) -> Result<GoUrl, ParseError> {
    let (u, frag) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let url = parse_no_fragment(u)?;
    if let Some(f) = frag {
        unescape(f, Mode::Fragment)?;
    }
    Ok(url)
}

fn parse_no_fragment(raw: &str) -> Result<GoUrl, ParseError> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return err("net/url: invalid control character in URL");
    }
    let mut url = GoUrl::default();
    if raw == "*" {
        return Ok(url);
    }
    let (scheme, rest) = scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else if let Some((r, q)) = rest.split_once('?') {
        url.raw_query = q.to_string();
        r
    } else {
        rest
    };
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            url.opaque = rest.to_string();
            return Ok(url);
        }
        let segment = rest.split('/').next().unwrap_or("");
        if segment.contains(':') {
            return err("first path segment in URL cannot contain colon");
        }
    }
    let mut path = rest;
    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, p) = match authority_and_path.find('/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (authority_and_path, ""),
        };
        url.host = authority_host(authority)?;
        path = p;
    }
    unescape(path, Mode::Path)?;
    Ok(url)
}

/// Go's `getScheme`: letters, then letters/digits/`+-.`, up to the first `:`.
fn scheme(raw: &str) -> Result<(&str, &str), ParseError> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(("", raw));
                }
            }
            b':' => {
                if i == 0 {
                    return err("missing protocol scheme");
                }
                return Ok((&raw[..i], &raw[i + 1..]));
            }
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn authority_host(authority: &str) -> Result<String, ParseError> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(u) = userinfo {
        let valid = u.chars().all(|c| {
            c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c) || !c.is_ascii()
        });
        if !valid {
            return err("net/url: invalid userinfo");
        }
        for part in u.splitn(2, ':') {
            unescape(part, Mode::UserPassword)?;
        }
    }
    Ok(host)
}

fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn parse_host(host: &str) -> Result<String, ParseError> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return err("missing ']' in host");
        };
        if !valid_optional_port(&host[i + 1..]) {
            return err(format!("invalid port {:?} after host", &host[i + 1..]));
        }
        // A zone (`%25eth0`) is unescaped with its own, looser rules.
        let inner = &host[..i];
        if let Some(z) = inner.find("%25") {
            unescape(&inner[..z], Mode::Host)?;
            unescape(&inner[z..], Mode::Zone)?;
            unescape(&host[i..], Mode::Host)?;
            return Ok(host.to_string());
        }
    } else if let Some(i) = host.rfind(':')
        && !valid_optional_port(&host[i..])
    {
        return err(format!("invalid port {:?} after host", &host[i..]));
    }
    unescape(host, Mode::Host)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    Fragment,
    QueryComponent,
}

/// Go's `shouldEscape` for the modes that can fail here (host and zone).
fn host_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c)
}

/// Go's `unescape`: `%XX` must be two hex digits; hosts refuse other characters outside
/// the allowed set and `%`-escapes of ASCII (except `%25`).
fn unescape(s: &str, mode: Mode) -> Result<String, ParseError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) else {
                    let end = (i + 3).min(b.len());
                    return err(format!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&b[i..end])
                    ));
                };
                if mode == Mode::Host && h < 8 && &b[i..i + 3] != b"%25" {
                    return err(format!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&b[i..i + 3])
                    ));
                }
                #[allow(clippy::cast_possible_truncation)]
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' if mode == Mode::QueryComponent => {
                out.push(b' ');
                i += 1;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && !host_char_ok(c) {
                    return err(format!(
                        "invalid character {:?} in host name",
                        char::from(c)
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.ParseQuery` as `u.Query()` uses it: pairs that fail to parse are skipped.
pub fn query(raw_query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in raw_query.split('&') {
        if part.is_empty() || part.contains(';') {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (Ok(k), Ok(v)) = (
            unescape(k, Mode::QueryComponent),
            unescape(v, Mode::QueryComponent),
        ) else {
            continue;
        };
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_what_go_accepts() {
        for (u, scheme) in [
            ("http://example.com/a b", "http"),
            ("HTTPS://example.com:8443/x?y#z", "https"),
            ("http:example.com", "http"),
            ("s3://bucket/key?versionId=1", "s3"),
            ("arn:aws:s3:::bucket/key", "arn"),
            ("data:,hello%20world", "data"),
            ("data:text/plain;base64,aGk=", "data"),
            ("ftp://x", "ftp"),
            ("/just/a/path", ""),
            ("relative", ""),
            ("http://[::1]:80/", "http"),
            ("http://user:p%40ss@host/", "http"),
            ("", ""),
        ] {
            assert_eq!(parse(u).map(|x| x.scheme), Ok(scheme.to_string()), "{u}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for u in [
            ":nothing",
            "http://exa mple.com/",
            "http://host:port/",
            "http://host/%zz",
            "http://host/%4",
            "a:b/c\u{7}",
            "http://host/\n",
            "foo:bar:baz/x",
            "x/y#%g0",
            "http://[::1/",
            "http://ho%41st/",
            "http://a{b}/",
            "http://us er@host/",
        ] {
            if u == "foo:bar:baz/x" {
                // has a scheme: opaque, fine
                assert!(parse(u).is_ok(), "{u}");
                continue;
            }
            assert!(parse(u).is_err(), "{u} should not parse");
        }
        assert!(
            parse("1a:b").is_err(),
            "no scheme, colon in the first segment"
        );
    }

    #[test]
    fn query_pairs() {
        assert_eq!(
            query("versionId=&a=b+c&bad=%zz"),
            vec![
                ("versionId".to_string(), String::new()),
                ("a".to_string(), "b c".to_string())
            ]
        );
    }
}
