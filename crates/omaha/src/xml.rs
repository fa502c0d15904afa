//! A bounded XML element tree: the only place that touches quick-xml.
//!
//! Omaha documents are small and attribute-only, so we read the whole body into a tree of
//! elements (text is ignored) while enforcing [`Limits`], then map the tree onto typed structs.
//! Limits are checked while reading, so an oversized or deeply nested body is rejected before
//! it costs memory.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::Error;

/// Bounds applied while parsing a body; the server uses the defaults for node traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// Deepest accepted element nesting (the root element is depth 1).
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
    /// Most attributes accepted on one element.
    pub max_attributes: usize,
}

impl Default for Limits {
    /// Generous for update_engine (its requests are ~1 KiB, depth 3) and Nebraska's largest
    /// multi-app test request (~95 KiB), small enough to bound a hostile body.
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_depth: 16,
            max_elements: 4096,
            max_attributes: 64,
        }
    }
}

/// One element: its local name, attributes in document order, and child elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Slash-separated path from the root with sibling indexes, for error messages.
    pub path: String,
}

impl Element {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required attribute.
    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.attr(name).ok_or_else(|| Error::MissingAttribute {
            path: self.path.clone(),
            attribute: name.to_owned(),
        })
    }

    /// An attribute parsed with `parse`; a present but unparseable value is an error.
    pub fn parsed<T>(
        &self,
        name: &str,
        expected: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).ok_or_else(|| Error::InvalidAttribute {
                path: self.path.clone(),
                attribute: name.to_owned(),
                value: truncate(v),
                expected,
            }),
        }
    }

    /// Children with the given local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child with the given local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Keeps error messages bounded when an attribute value is huge.
pub(crate) fn truncate(v: &str) -> String {
    const MAX: usize = 64;
    if v.len() <= MAX {
        return v.to_owned();
    }
    let mut end = MAX;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

/// Parses `body` into its root element, enforcing `limits`.
pub(crate) fn parse_tree(body: &[u8], limits: &Limits) -> Result<Element, Error> {
    if body.len() > limits.max_body_bytes {
        return Err(Error::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| Error::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);

    // Open elements; the root is completed when the stack empties.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;

    loop {
        let event = reader.read_event().map_err(|e| Error::Xml {
            offset: reader.error_position(),
            path: stack_path(&stack),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                return Err(Error::TrailingContent {
                    offset: reader.buffer_position(),
                    found: local_name(&start),
                });
            }
            Event::Start(start) => {
                let el = open(&start, &stack, limits, &mut count)?;
                stack.push(el);
            }
            Event::Empty(start) => {
                let el = open(&start, &stack, limits, &mut count)?;
                close(el, &mut stack, &mut root);
            }
            Event::End(_) => {
                // quick-xml checks that end names match, so this is our own open element.
                if let Some(el) = stack.pop() {
                    close(el, &mut stack, &mut root);
                }
            }
            Event::Text(t) if root.is_some() || stack.is_empty() => {
                // trim_text drops whitespace-only text, so anything here is stray content.
                if !t.is_empty() {
                    return Err(Error::TrailingContent {
                        offset: reader.buffer_position(),
                        found: "text".to_owned(),
                    });
                }
            }
            // Text and CDATA inside elements carry nothing in Omaha; comments, PIs, the XML
            // declaration and a DOCTYPE (never expanded by quick-xml) are ignored.
            Event::Text(_)
            | Event::CData(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(Error::Truncated {
            path: stack_path(&stack),
        });
    }
    root.ok_or(Error::Empty)
}

fn stack_path(stack: &[Element]) -> String {
    stack.last().map(|e| e.path.clone()).unwrap_or_default()
}

fn local_name(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref()).into_owned()
}

fn open(
    start: &BytesStart<'_>,
    stack: &[Element],
    limits: &Limits,
    count: &mut usize,
) -> Result<Element, Error> {
    let name = local_name(start);
    let path = match stack.last() {
        None => name.clone(),
        Some(parent) => {
            let index = parent.children.iter().filter(|c| c.name == name).count();
            format!("{}/{}[{}]", parent.path, name, index)
        }
    };
    if stack.len() + 1 > limits.max_depth {
        return Err(Error::TooDeep {
            path,
            limit: limits.max_depth,
        });
    }
    *count += 1;
    if *count > limits.max_elements {
        return Err(Error::TooManyElements {
            path,
            limit: limits.max_elements,
        });
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| Error::Xml {
            offset: 0,
            path: path.clone(),
            message: e.to_string(),
        })?;
        if attrs.len() >= limits.max_attributes {
            return Err(Error::TooManyAttributes {
                path,
                limit: limits.max_attributes,
            });
        }
        let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
        let value = attr.unescape_value().map_err(|_| Error::InvalidAttribute {
            path: path.clone(),
            attribute: key.clone(),
            value: truncate(&String::from_utf8_lossy(&attr.value)),
            expected: "a value with only known XML entities",
        })?;
        // Guard against e.g. `&#0;`, which XML 1.0 forbids and could not be written back.
        if value.chars().any(is_forbidden_char) {
            return Err(Error::InvalidAttribute {
                path,
                attribute: key,
                value: truncate(&value),
                expected: "characters allowed by XML 1.0",
            });
        }
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        path,
    })
}

fn is_forbidden_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

fn close(el: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Deterministic XML writer: attributes in the order given, `<a></a>` for empty elements
/// (what Nebraska's Go encoder emits, and what every Omaha client accepts).
pub(crate) struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    /// Starts a document with the XML declaration.
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            depth: 0,
        }
    }

    /// Opens an element; `None` attribute values are skipped.
    pub fn open(&mut self, name: &str, attrs: &[(&str, Option<&str>)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            if let Some(v) = v {
                self.out.push(' ');
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
        }
        self.out.push('>');
        self.out.push('\n');
        self.depth += 1;
    }

    /// Closes the element opened last with this name.
    pub fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// An element without children.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, Option<&str>)]) {
        self.open(name, attrs);
        // Put the end tag on the same line: `<ping active="1"></ping>`.
        self.out.pop();
        self.depth = self.depth.saturating_sub(1);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes an attribute value; whitespace controls become character references so that a
/// parser's attribute-value normalisation cannot change them.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tree_ignores_text_comments_and_unknown_namespaces() {
        let xml =
            br#"<?xml version="1.0"?><!-- hi --><a x="1"> text <b/><b y="&amp;"/><c></c></a>"#;
        let root = parse_tree(xml, &Limits::default()).unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.attr("x"), Some("1"));
        assert_eq!(root.children.len(), 3);
        assert_eq!(root.children[1].path, "a/b[1]");
        assert_eq!(root.children[1].attr("y"), Some("&"));
    }

    #[test]
    fn escape_round_trips_through_parser() {
        let nasty = "a&b<c>d\"e'f\tg\nh\ri é";
        let mut w = Writer::new();
        w.leaf("x", &[("v", Some(nasty))]);
        let doc = w.finish();
        let root = parse_tree(doc.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(root.attr("v"), Some(nasty));
    }

    #[test]
    fn errors_name_the_problem() {
        let l = Limits::default();
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"<a><b>", "truncated"),
            (b"<a></b>", "XML"),
            (b"<a/><b/>", "after the root"),
            (b"<a/>junk", "after the root"),
            (b"\xff<a/>", "UTF-8"),
            (b"<a x=\"&bogus;\"/>", "attribute x"),
            (b"<a x=\"&#1;\"/>", "attribute x"),
            (b"<a x=\"1\" x=\"2\"/>", "XML"),
        ];
        for (input, needle) in cases {
            let err = parse_tree(input, &l).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{:?}: {err:?} lacks {needle:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let small = Limits {
            max_body_bytes: 100,
            max_depth: 3,
            max_elements: 4,
            max_attributes: 2,
        };
        let big = vec![b' '; 101];
        assert!(matches!(
            parse_tree(&big, &small),
            Err(Error::BodyTooLarge {
                size: 101,
                limit: 100
            })
        ));
        match parse_tree(b"<a><b><c><d/></c></b></a>", &small) {
            Err(Error::TooDeep { path, limit: 3 }) => assert_eq!(path, "a/b[0]/c[0]/d[0]"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_tree(b"<a><b/><b/><b/><b/></a>", &small),
            Err(Error::TooManyElements { limit: 4, .. })
        ));
        assert!(matches!(
            parse_tree(b"<a x='1' y='2' z='3'/>", &small),
            Err(Error::TooManyAttributes { limit: 2, .. })
        ));
        assert!(parse_tree(b"<a><b><c/></b></a>", &small).is_ok());
    }
}
