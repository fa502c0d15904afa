//! A small JSON parser that records the line and column of every value and key.
//! serde_json only reports positions for syntax errors; validation needs them for every path.

use crate::report::Pos;
use crate::tree::{Member, Node, Number, Value};

/// A JSON syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {} col {}: {message}", pos.line, pos.col)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What was wrong.
    pub message: String,
}

/// Nesting limit, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
    _src: &'a str,
}

/// Parse a JSON document into a positioned tree.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    let mut p = Parser {
        chars: src.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
        _src: src,
    };
    // A UTF-8 BOM is tolerated, as Go's decoder does not but editors add it.
    if p.peek() == Some('\u{feff}') {
        p.i += 1;
    }
    p.ws();
    let node = p.value(0)?;
    p.ws();
    if p.peek().is_some() {
        return Err(p.err("unexpected data after the top-level value"));
    }
    Ok(node)
}

impl Parser<'_> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn err(&self, msg: &str) -> SyntaxError {
        SyntaxError {
            pos: self.pos(),
            message: msg.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SyntaxError> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(&format!("expected '{c}'")))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let pos = self.pos();
        let value = match self.peek() {
            None => return Err(self.err("unexpected end of input")),
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::String(self.string()?),
            Some('t') => self.word("true", Value::Bool(true))?,
            Some('f') => self.word("false", Value::Bool(false))?,
            Some('n') => self.word("null", Value::Null)?,
            Some(c) if c == '-' || c.is_ascii_digit() => self.number()?,
            Some(c) => {
                return Err(self.err(&format!(
                    "invalid character '{c}' looking for beginning of value"
                )));
            }
        };
        Ok(Node::new(value, pos))
    }

    fn word(&mut self, w: &str, v: Value) -> Result<Value, SyntaxError> {
        for expected in w.chars() {
            if self.peek() != Some(expected) {
                return Err(self.err(&format!("invalid literal, expected '{w}'")));
            }
            self.bump();
        }
        Ok(v)
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.i;
        let mut is_float = false;
        if self.peek() == Some('-') {
            self.bump();
        }
        match self.peek() {
            Some('0') => {
                self.bump();
            }
            Some(c) if c.is_ascii_digit() => {
                while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                    self.bump();
                }
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some('.') {
            is_float = true;
            self.bump();
            if !matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                return Err(self.err("invalid number: digit expected after '.'"));
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            is_float = true;
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                return Err(self.err("invalid number: digit expected in exponent"));
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.bump();
            }
        }
        let text: String = self.chars[start..self.i].iter().collect();
        if !is_float && let Ok(i) = text.parse::<i64>() {
            return Ok(Value::Number(Number::Int(i)));
        }
        text.parse::<f64>()
            .map(|f| Value::Number(Number::Float(f)))
            .map_err(|_| self.err("invalid number"))
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => {
                        let hi = self.hex4()?;
                        if (0xD800..0xDC00).contains(&hi) {
                            // Surrogate pair: a lone half becomes U+FFFD like Go does.
                            if self.peek() == Some('\\') && self.chars.get(self.i + 1) == Some(&'u')
                            {
                                self.bump();
                                self.bump();
                                let lo = self.hex4()?;
                                let c = 0x10000
                                    + ((hi - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                                out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                            } else {
                                out.push('\u{fffd}');
                            }
                        } else {
                            out.push(char::from_u32(hi).unwrap_or('\u{fffd}'));
                        }
                    }
                    _ => return Err(self.err("invalid escape in string")),
                },
                Some(c) if (c as u32) < 0x20 => {
                    return Err(self.err("invalid control character in string"));
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            self.bump();
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.expect('[')?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.bump() {
                Some(',') => continue,
                Some(']') => return Ok(Value::Array(items)),
                _ => return Err(self.err("expected ',' or ']' in array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.expect('{')?;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            let key_pos = self.pos();
            if self.peek() != Some('"') {
                return Err(self.err("expected a string key in object"));
            }
            let key = self.string()?;
            self.ws();
            self.expect(':')?;
            self.ws();
            let node = self.value(depth + 1)?;
            members.push(Member { key, key_pos, node });
            self.ws();
            match self.bump() {
                Some(',') => continue,
                Some('}') => return Ok(Value::Object(members)),
                _ => return Err(self.err("expected ',' or '}' in object")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn positions_of_values_and_keys() {
        let src = "{\n  \"a\": [1, \"x\"],\n  \"b\": {\"c\": true}\n}";
        let n = parse(src).unwrap();
        let Value::Object(m) = &n.value else {
            panic!("not an object")
        };
        assert_eq!(m[0].key_pos, Pos { line: 2, col: 3 });
        assert_eq!(m[0].node.pos, Pos { line: 2, col: 8 });
        let Value::Array(items) = &m[0].node.value else {
            panic!("not an array")
        };
        assert_eq!(items[1].pos, Pos { line: 2, col: 12 });
        assert_eq!(
            n.get("b").unwrap().get("c").unwrap().pos,
            Pos { line: 3, col: 14 }
        );
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let cases = [
            ("{\"a\": }", 1, 7),
            ("{\"a\": 1,\n \"b\" 2}", 2, 6),
            ("[1, 2", 1, 6),
            ("\"abc", 1, 5),
            ("{} x", 1, 4),
            ("01", 1, 2),
        ];
        for (src, line, col) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!((e.pos.line, e.pos.col), (line, col), "{src}: {e}");
        }
    }

    #[test]
    fn numbers_strings_and_escapes() {
        let n = parse(r#"[0, -5, 1.5, 2e3, "a\u00e9\ud83d\ude00\n"]"#).unwrap();
        let Value::Array(items) = n.value else {
            panic!("not an array")
        };
        assert_eq!(items[0].value, Value::Number(Number::Int(0)));
        assert_eq!(items[1].value, Value::Number(Number::Int(-5)));
        assert_eq!(items[2].value, Value::Number(Number::Float(1.5)));
        assert_eq!(items[3].value, Value::Number(Number::Float(2000.0)));
        assert_eq!(items[4].value, Value::String("aé😀\n".into()));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "[".repeat(10_000);
        assert!(parse(&src).is_err());
    }
}
