//! Data URLs as Ignition reads them: a port of the `vincent-petithory/dataurl` package
//! (`lex.go`, `dataurl.go`, `rfc2396.go`) that Ignition's `validateURL` runs on every `data:`
//! source (`config/v3_*/types/url.go`), with its grammar and its error messages.
//!
//! It is stricter than RFC 2397 readers usually are, and Ignition refuses a config whose
//! data URL it cannot decode:
//! - the URL must start with `data:` exactly (Go's `url.Parse` lowercases the scheme, this
//!   does not: `DATA:,x` is "missing data prefix");
//! - a media type is `type/subtype`, and the type must start with `text`, `image`, `audio`,
//!   `video`, `application`, `message` or `multipart`, or be `x-…`;
//! - a parameter without `=` must be `base64` and the last one;
//! - plain data may hold only URL characters (no space, `"`, `#`, `<`, `>`, `{`, `}`, `|`,
//!   `\`, `^`, `[`, `]`, backquote, control or non-ASCII characters) and valid `%XX`;
//! - base64 data is Go's `base64.StdEncoding` (padding required, no whitespace, no `-`/`_`).

use std::collections::BTreeMap;

/// A decoded data URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrl {
    /// The media type, `text/plain` when none is given.
    pub media_type: String,
    /// The parameters (`charset=US-ASCII` when no media type is given).
    pub params: BTreeMap<String, String>,
    /// Whether the data was base64.
    pub base64: bool,
    /// The data.
    pub data: Vec<u8>,
}

/// The lexer's items (`itemType` in lex.go) that the parser acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    MediaType(String),
    MediaSubType(String),
    ParamAttr(String),
    LeftStringQuote,
    ParamVal(String),
    Base64Enc,
    DataComma,
    Data(String),
    Eof,
    Error(String),
}

fn is_tspecial(r: char) -> bool {
    matches!(
        r,
        '(' | ')' | '<' | '>' | '@' | ',' | ';' | ':' | '\\' | '"' | '/' | '[' | ']' | '?' | '='
    )
}

/// `isTokenRune`: ASCII, not a control, not a space, not a tspecial.
fn is_token(r: char) -> bool {
    r.is_ascii() && !r.is_ascii_control() && !r.is_whitespace() && !is_tspecial(r)
}

/// `isURLCharRune`.
fn is_url_char(r: char) -> bool {
    r.is_ascii()
        && !(r <= '\u{1f}' || r == '\u{7f}')
        && !matches!(
            r,
            ' ' | '<' | '>' | '#' | '"' | '{' | '}' | '|' | '\\' | '^' | '[' | ']' | '`'
        )
}

fn is_base64_char(r: char) -> bool {
    r.is_ascii_alphanumeric() || matches!(r, '+' | '/' | '=')
}

fn is_discrete_or_composite(s: &str) -> bool {
    [
        "text",
        "image",
        "audio",
        "video",
        "application",
        "message",
        "multipart",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// lex.go's states.
#[derive(Clone, Copy)]
enum State {
    AfterDataPrefix,
    XTokenMediaType,
    InDiscreteMediaType,
    MediaType,
    MediaSep,
    AfterMediaSep,
    MediaSubType,
    AfterMediaSubType,
    ParamSemicolon,
    AfterParamSemicolon,
    Base64Enc,
    InParamAttr,
    ParamAttr,
    ParamEqual,
    AfterParamEqual,
    InQuotedStringParamVal,
    EscapedChar,
    InParamVal,
    QuotedStringParamVal,
    ParamVal,
    AfterParamVal,
    DataComma,
    Data,
    Base64Data,
}

struct Lexer<'a> {
    input: &'a str,
    start: usize,
    pos: usize,
    width: usize,
    seen_base64: bool,
    items: Vec<Item>,
}

impl Lexer<'_> {
    /// `next`: the next rune, `None` at the end (and then `backup` does not move).
    fn next(&mut self) -> Option<char> {
        let r = self.input[self.pos..].chars().next();
        self.width = r.map_or(0, char::len_utf8);
        self.pos += self.width;
        r
    }

    fn backup(&mut self) {
        self.pos -= self.width;
    }

    fn text(&self) -> String {
        self.input[self.start..self.pos].to_string()
    }

    fn emit(&mut self, item: Item) {
        self.items.push(item);
        self.start = self.pos;
    }

    fn error(&mut self, msg: impl Into<String>) -> Option<State> {
        self.items.push(Item::Error(msg.into()));
        None
    }

    fn step(&mut self, state: State) -> Option<State> {
        use State as S;
        match state {
            S::AfterDataPrefix => match self.next() {
                Some(';') => {
                    self.backup();
                    Some(S::ParamSemicolon)
                }
                Some(',') => {
                    self.backup();
                    Some(S::DataComma)
                }
                None => self.error("missing comma before data"),
                Some('x' | 'X') => {
                    if self.next() == Some('-') {
                        Some(S::XTokenMediaType)
                    } else {
                        Some(S::InDiscreteMediaType)
                    }
                }
                Some(r) if is_token(r) => Some(S::InDiscreteMediaType),
                Some(_) => self.error("invalid character after data prefix"),
            },
            S::XTokenMediaType => loop {
                match self.next() {
                    Some('/') => {
                        self.backup();
                        break Some(S::MediaType);
                    }
                    None => break self.error("missing media type slash"),
                    Some(r) if is_token(r) => {}
                    Some(_) => break self.error("invalid character for media type"),
                }
            },
            S::InDiscreteMediaType => loop {
                match self.next() {
                    Some('/') => {
                        self.backup();
                        if !is_discrete_or_composite(&self.input[self.start..self.pos]) {
                            break self.error("invalid media type");
                        }
                        break Some(S::MediaType);
                    }
                    None => break self.error("missing media type slash"),
                    Some(r) if is_token(r) => {}
                    Some(_) => break self.error("invalid character for media type"),
                }
            },
            S::MediaType => {
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::MediaType(t));
                }
                Some(S::MediaSep)
            }
            S::MediaSep => {
                self.next();
                self.start = self.pos;
                Some(S::AfterMediaSep)
            }
            S::AfterMediaSep => loop {
                match self.next() {
                    Some(';' | ',') => {
                        self.backup();
                        break Some(S::MediaSubType);
                    }
                    None => break self.error("incomplete media type"),
                    Some(r) if is_token(r) => {}
                    Some(_) => break self.error("invalid character for media subtype"),
                }
            },
            S::MediaSubType => {
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::MediaSubType(t));
                }
                Some(S::AfterMediaSubType)
            }
            S::AfterMediaSubType | S::AfterParamVal => match self.next() {
                Some(';') => {
                    self.backup();
                    Some(S::ParamSemicolon)
                }
                Some(',') => {
                    self.backup();
                    Some(S::DataComma)
                }
                None => self.error("missing comma before data"),
                Some(_) => self.error("expected semicolon or comma"),
            },
            S::ParamSemicolon => {
                self.next();
                self.start = self.pos;
                Some(S::AfterParamSemicolon)
            }
            S::AfterParamSemicolon => match self.next() {
                None | Some('=' | ',') => self.error("unterminated parameter sequence"),
                Some(r) if is_token(r) => {
                    self.backup();
                    Some(S::InParamAttr)
                }
                Some(_) => self.error("invalid character for parameter attribute"),
            },
            S::Base64Enc => {
                if self.pos > self.start {
                    let v = self.text();
                    if v != "base64" {
                        return self.error(format!("expected base64, got {v}"));
                    }
                    self.seen_base64 = true;
                    self.emit(Item::Base64Enc);
                }
                Some(S::DataComma)
            }
            S::InParamAttr => loop {
                match self.next() {
                    Some('=') => {
                        self.backup();
                        break Some(S::ParamAttr);
                    }
                    Some(',') => {
                        self.backup();
                        break Some(S::Base64Enc);
                    }
                    None => break self.error("unterminated parameter sequence"),
                    Some(r) if is_token(r) => {}
                    Some(_) => break self.error("invalid character for parameter attribute"),
                }
            },
            S::ParamAttr => {
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::ParamAttr(t));
                }
                Some(S::ParamEqual)
            }
            S::ParamEqual => {
                self.next();
                self.start = self.pos;
                Some(S::AfterParamEqual)
            }
            S::AfterParamEqual => match self.next() {
                Some('"') => {
                    self.emit(Item::LeftStringQuote);
                    Some(S::InQuotedStringParamVal)
                }
                None => self.error("missing comma before data"),
                Some(r) if is_token(r) => Some(S::InParamVal),
                Some(_) => self.error("invalid character for parameter value"),
            },
            S::InQuotedStringParamVal => loop {
                match self.next() {
                    None => break self.error("unclosed quoted string"),
                    Some('\\') => break Some(S::EscapedChar),
                    Some('"') => {
                        self.backup();
                        break Some(S::QuotedStringParamVal);
                    }
                    Some(r) if r.is_ascii() => {}
                    Some(_) => break self.error("invalid character for parameter value"),
                }
            },
            // Go's eof is -1, which passes `r <= unicode.MaxASCII` first: back to the quoted
            // string, which then reports it unclosed.
            S::EscapedChar => match self.next() {
                None => Some(S::InQuotedStringParamVal),
                Some(r) if r.is_ascii() => Some(S::InQuotedStringParamVal),
                Some(_) => self.error("invalid escaped character"),
            },
            S::InParamVal => loop {
                match self.next() {
                    Some(';' | ',') => {
                        self.backup();
                        break Some(S::ParamVal);
                    }
                    None => break self.error("missing comma before data"),
                    Some(r) if is_token(r) => {}
                    Some(_) => break self.error("invalid character for parameter value"),
                }
            },
            S::QuotedStringParamVal => {
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::ParamVal(t));
                }
                self.next();
                self.start = self.pos;
                Some(S::AfterParamVal)
            }
            S::ParamVal => {
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::ParamVal(t));
                }
                Some(S::AfterParamVal)
            }
            S::DataComma => {
                self.next();
                self.emit(Item::DataComma);
                Some(if self.seen_base64 {
                    S::Base64Data
                } else {
                    S::Data
                })
            }
            S::Data | S::Base64Data => {
                let ok = if matches!(state, S::Data) {
                    is_url_char
                } else {
                    is_base64_char
                };
                while let Some(r) = self.next() {
                    if !ok(r) {
                        return self.error("invalid data character");
                    }
                }
                if self.pos > self.start {
                    let t = self.text();
                    self.emit(Item::Data(t));
                }
                self.emit(Item::Eof);
                None
            }
        }
    }
}

fn lex(input: &str) -> Vec<Item> {
    let mut l = Lexer {
        input,
        start: 0,
        pos: 0,
        width: 0,
        seen_base64: false,
        items: Vec::new(),
    };
    if !input.starts_with("data:") {
        l.items.push(Item::Error("missing data prefix".into()));
        return l.items;
    }
    l.pos = "data:".len();
    l.start = l.pos;
    let mut state = Some(State::AfterDataPrefix);
    while let Some(s) = state {
        state = l.step(s);
    }
    l.items
}

/// rfc2396.go `Unescape`. Its message for a bad escape names the `%` (0x25), not the byte
/// after it, as the Go code does.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.chars();
    while let Some(r) = bytes.next() {
        if !r.is_ascii() {
            return Err("rfc2396: non-ASCII char detected".into());
        }
        if r != '%' {
            out.push(r as u8);
            continue;
        }
        let mut hex = 0u8;
        for _ in 0..2 {
            let Some(h) = bytes.next() else {
                return Err("rfc2396: unexpected end of unescape sequence".into());
            };
            let Some(d) = h.to_digit(16).filter(|_| h.is_ascii()) else {
                return Err("rfc2396: invalid char 0x25 in unescape sequence".into());
            };
            hex = hex * 16 + d as u8;
        }
        out.push(hex);
    }
    Ok(out)
}

/// Go's `strconv.Unquote` of `"` + s + `"`: only whether it succeeds, and the result.
fn go_unquote(s: &str) -> Result<String, String> {
    let syntax = || "invalid syntax".to_string();
    if s.contains('\n') {
        return Err(syntax());
    }
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '"' {
            return Err(syntax());
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next().ok_or_else(syntax)?;
        let mut hex = |n: usize| -> Result<u32, String> {
            let mut v = 0u32;
            for _ in 0..n {
                let d = it.next().and_then(|h| h.to_digit(16)).ok_or_else(syntax)?;
                v = v * 16 + d;
            }
            Ok(v)
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            // \xNN is a byte: as text here (only validity matters to the validator).
            'x' => out.push(char::from(u8::try_from(hex(2)?).map_err(|_| syntax())?)),
            'u' => out.push(char::from_u32(hex(4)?).ok_or_else(syntax)?),
            'U' => out.push(char::from_u32(hex(8)?).ok_or_else(syntax)?),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = it.next().and_then(|o| o.to_digit(8)).ok_or_else(syntax)?;
                    v = v * 8 + d;
                }
                if v > 255 {
                    return Err(syntax());
                }
                out.push(char::from_u32(v).ok_or_else(syntax)?);
            }
            _ => return Err(syntax()),
        }
    }
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Go's `base64.StdEncoding.DecodeString`, with its `illegal base64 data at input byte N`
/// errors (padding required; non-zero trailing bits allowed, as without `Strict`).
fn go_base64(s: &str) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let src = s.as_bytes();
    let value = |c: u8| B64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        let mut buf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // A quantum cut short: Go reports where it started.
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = value(c) {
                buf[j] = v;
                j += 1;
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(corrupt(si - 1));
            }
            if j == 2 {
                if si == src.len() {
                    return Err(corrupt(src.len()));
                }
                if src[si] != b'=' {
                    return Err(corrupt(si - 1));
                }
                si += 1;
            }
            if si < src.len() {
                return Err(corrupt(si));
            }
            dlen = j;
            break;
        }
        let v = (buf[0] << 18) | (buf[1] << 12) | (buf[2] << 6) | buf[3];
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if dlen < 4 {
            return Ok(out);
        }
    }
}

/// `dataurl.DecodeString`: the data URL `s`, or the package's error message.
pub fn decode(s: &str) -> Result<DataUrl, String> {
    let mut du = DataUrl {
        media_type: "text/plain".into(),
        params: BTreeMap::from([("charset".to_string(), "US-ASCII".to_string())]),
        base64: false,
        data: Vec::new(),
    };
    let (mut ty, mut sub) = ("text".to_string(), "plain".to_string());
    let mut attr = String::new();
    let mut unquote = false;
    for item in lex(s) {
        match item {
            Item::Error(e) => return Err(e),
            Item::MediaType(t) => {
                ty = t;
                du.params.remove("charset");
            }
            Item::MediaSubType(t) => sub = t,
            Item::ParamAttr(a) => attr = a,
            Item::LeftStringQuote => unquote = true,
            Item::ParamVal(v) => {
                let v = if std::mem::take(&mut unquote) {
                    go_unquote(&v)?
                } else {
                    String::from_utf8_lossy(&unescape(&v)?).into_owned()
                };
                du.params.insert(attr.clone(), v);
            }
            Item::Base64Enc => du.base64 = true,
            Item::DataComma => {}
            Item::Data(d) => {
                du.data = if du.base64 {
                    go_base64(&d)?
                } else {
                    unescape(&d)?
                };
            }
            Item::Eof => {
                du.media_type = format!("{ty}/{sub}");
                return Ok(du);
            }
        }
    }
    // The lexer always ends with an error or EOF item.
    Err("missing comma before data".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn err(s: &str) -> String {
        decode(s).unwrap_err()
    }

    #[test]
    fn accepted() {
        let d = decode("data:,hello%20world").unwrap();
        assert_eq!(d.data, b"hello world");
        assert_eq!(d.media_type, "text/plain");
        assert_eq!(d.params["charset"], "US-ASCII");
        let d = decode("data:text/plain;charset=utf-8;base64,aGk=").unwrap();
        assert_eq!((d.data.as_slice(), d.base64), (&b"hi"[..], true));
        assert_eq!(d.params["charset"], "utf-8");
        let d = decode("data:;base64,aGk=").unwrap();
        assert_eq!(d.data, b"hi");
        let d = decode("data:application/x-foo;name=\"a\\\"b\",x").unwrap();
        assert_eq!(d.params["name"], "a\"b");
        assert_eq!(decode("data:x-my/type,").unwrap().data, b"");
        assert_eq!(decode("data:;charset=utf-8,a").unwrap().data, b"a");
        assert_eq!(decode("data:,").unwrap().data, b"");
        // Go's StdEncoding keeps the bits it has (non-strict).
        assert_eq!(decode("data:;base64,aGl=").unwrap().data, b"hi");
    }

    #[test]
    fn refused_with_the_packages_messages() {
        assert_eq!(err("DATA:,x"), "missing data prefix");
        assert_eq!(err("data:"), "missing comma before data");
        assert_eq!(err("data:,hello world"), "invalid data character");
        assert_eq!(err("data:,caf\u{e9}"), "invalid data character");
        assert_eq!(err("data:foo,x"), "invalid character for media type");
        assert_eq!(err("data:foo"), "missing media type slash");
        assert_eq!(err("data:foo/bar,x"), "invalid media type");
        // An empty subtype is fine; the default one stays (no item is emitted for it).
        assert_eq!(decode("data:text/,x").unwrap().media_type, "text/plain");
        assert_eq!(err("data:text/plain"), "incomplete media type");
        assert_eq!(err("data:text/plain;foo,x"), "expected base64, got foo");
        assert_eq!(err("data:;,x"), "unterminated parameter sequence");
        assert_eq!(err("data:;a=\"x,y"), "unclosed quoted string");
        assert_eq!(err("data:;a=\"\\q\",y"), "invalid syntax");
        assert_eq!(err("data:( ,x"), "invalid character after data prefix");
        assert_eq!(
            err("data:,%zz"),
            "rfc2396: invalid char 0x25 in unescape sequence"
        );
        assert_eq!(
            err("data:,%4"),
            "rfc2396: unexpected end of unescape sequence"
        );
        assert_eq!(
            err("data:;base64,aGk"),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            err("data:;base64,aG=k"),
            "illegal base64 data at input byte 2"
        );
        assert_eq!(
            err("data:;base64,aGk=aGk="),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(decode("data:;base64,aG==").unwrap().data, b"h");
        assert_eq!(err("data:;base64,a-k="), "invalid data character");
        assert_eq!(
            err("data:;base64,a==="),
            "illegal base64 data at input byte 1"
        );
    }
}
