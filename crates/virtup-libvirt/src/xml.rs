//! XML plumbing shared by the domain, volume and capability modules: an escaping writer and a small tree reader.
//!
//! Everything that becomes XML goes through quick-xml's escaping and through [`check_text`], so no
//! name, path or tag value can change the structure of a document. Reading builds a tiny
//! namespace-aware tree because libvirt's documents are small and are queried many ways.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::writer::Writer;
use quick_xml::XmlVersion;

use crate::error::{LibvirtError, Result};

/// Refuses characters that XML 1.0 cannot carry and control characters that have no business
/// in names, paths or tags (a newline in a domain name is a mistake, never an intent).
pub(crate) fn check_text(what: &'static str, value: &str) -> Result<()> {
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}')
    {
        return Err(LibvirtError::invalid(
            what,
            &value.escape_debug().to_string(),
            format!("contains the control character {:?}", c),
        ));
    }
    Ok(())
}

/// Builds an indented document; attribute values and text are always escaped by quick-xml.
pub(crate) struct XmlWriter {
    w: Writer<Vec<u8>>,
}

// Writing into a Vec<u8> cannot fail, so the io::Result of each event carries no information.
const VEC_WRITE: &str = "writing XML into a Vec<u8> is infallible";

impl XmlWriter {
    pub(crate) fn new() -> Self {
        XmlWriter {
            w: Writer::new_with_indent(Vec::new(), b' ', 2),
        }
    }

    fn start<'a>(name: &'a str, attrs: &[(&'a str, &'a str)]) -> BytesStart<'a> {
        let mut start = BytesStart::new(name);
        for &(k, v) in attrs {
            start.push_attribute((k, v));
        }
        start
    }

    pub(crate) fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.w
            .write_event(Event::Start(Self::start(name, attrs)))
            .expect(VEC_WRITE);
    }

    pub(crate) fn close(&mut self, name: &str) {
        self.w
            .write_event(Event::End(BytesEnd::new(name)))
            .expect(VEC_WRITE);
    }

    pub(crate) fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.w
            .write_event(Event::Empty(Self::start(name, attrs)))
            .expect(VEC_WRITE);
    }

    pub(crate) fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        self.w
            .write_event(Event::Text(BytesText::new(text)))
            .expect(VEC_WRITE);
        self.close(name);
    }

    pub(crate) fn finish(self) -> String {
        String::from_utf8(self.w.into_inner()).expect("quick-xml writes the UTF-8 it was given")
    }
}

/// One element of a parsed document; names are local names, `ns` is the resolved namespace URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub ns: Option<String>,
    pub name: String,
    /// Unprefixed attributes by name; prefixed ones keep their `prefix:name` spelling.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Character data directly inside this element (meaningful for leaves only).
    pub text: String,
}

impl Element {
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Children without a namespace (libvirt's own elements) with this local name.
    pub(crate) fn children_named<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a Element> + use<'a, 'n> {
        self.children
            .iter()
            .filter(move |c| c.ns.is_none() && c.name == name)
    }

    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children_named(name).next()
    }

    pub(crate) fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Follows a path of un-namespaced child names, first match at each step.
    pub(crate) fn path(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |el, name| el.child(name))
    }
}

fn element_from(ns: ResolveResult<'_>, start: &BytesStart<'_>) -> Result<Element, String> {
    let ns = match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(prefix) => {
            return Err(format!("unknown namespace prefix `{prefix}`"))
        }
    };
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?;
        attrs.push((attr.key.0.to_owned(), value.into_owned()));
    }
    Ok(Element {
        ns,
        name: start.local_name().as_ref().to_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses a whole document into its root element.
pub(crate) fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;

    fn attach(
        stack: &mut [Element],
        root: &mut Option<Element>,
        el: Element,
    ) -> Result<(), String> {
        match stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None if root.is_none() => *root = Some(el),
            None => return Err("more than one root element".to_owned()),
        }
        Ok(())
    }

    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("{e} after byte {position}"))?;
        match event {
            Event::Start(start) => {
                let el = element_from(ns, &start)?;
                stack.push(el);
            }
            Event::Empty(start) => {
                let el = element_from(ns, &start)?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(text) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .map_err(|e| e.to_string())?
                        .map(String::from)
                } else {
                    resolve_predefined_entity(&reference).map(str::to_owned)
                };
                let resolved =
                    resolved.ok_or_else(|| format!("unknown entity `&{};`", &*reference))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("document ended inside an element".to_owned());
    }
    root.ok_or_else(|| "no root element".to_owned())
}

/// Converts a libvirt size with a unit attribute into bytes (libvirt's own unit table).
pub(crate) fn scaled_bytes(value: &str, unit: Option<&str>) -> Option<u64> {
    let n: u64 = value.trim().parse().ok()?;
    let factor: u64 = match unit.unwrap_or("bytes") {
        "b" | "byte" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        "PB" => 1_000_000_000_000_000,
        "P" | "PiB" => 1 << 50,
        "EB" => 1_000_000_000_000_000_000,
        "E" | "EiB" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_escapes_attributes_and_text() {
        let mut w = XmlWriter::new();
        w.open("root", &[("a", "x\"><evil/>&'")]);
        w.leaf("name", &[], "a\"><evil/>&amp;");
        w.close("root");
        let xml = w.finish();
        assert!(!xml.contains("<evil/>"), "{xml}");
        let root = parse(&xml).unwrap();
        assert_eq!(root.attr("a"), Some("x\"><evil/>&'"));
        assert_eq!(root.child_text("name"), Some("a\"><evil/>&amp;"));
        assert_eq!(root.children.len(), 1);
    }

    #[test]
    fn reader_resolves_namespaces_entities_and_char_refs() {
        let root = parse(
            r#"<?xml version="1.0"?><!-- c --><d xmlns:v="urn:x"><v:t k='1'>a&amp;b&#65;&#x42;<![CDATA[<c>]]></v:t><e/></d>"#,
        )
        .unwrap();
        assert_eq!(root.name, "d");
        let t = &root.children[0];
        assert_eq!((t.ns.as_deref(), t.name.as_str()), (Some("urn:x"), "t"));
        assert_eq!(t.text, "a&bAB<c>");
        assert_eq!(t.attr("k"), Some("1"));
        assert!(
            root.child("t").is_none(),
            "namespaced children are not libvirt's"
        );
        assert!(root.child("e").is_some());
    }

    #[test]
    fn reader_rejects_broken_documents() {
        for bad in ["", "<a>", "<a></b>", "<a/><b/>", "<a>&bogus;</a>", "<p:a/>"] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(check_text("name", "web1").is_ok());
        assert!(check_text("name", "wéb-1 ok").is_ok());
        for bad in ["a\nb", "a\0b", "\u{1b}[31m", "a\u{FFFF}"] {
            let err = check_text("name", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid name `"), "{err}");
        }
    }

    #[test]
    fn units_scale_like_libvirt() {
        assert_eq!(scaled_bytes("65536", Some("KiB")), Some(64 << 20));
        assert_eq!(scaled_bytes("2", Some("G")), Some(2 << 30));
        assert_eq!(scaled_bytes("5", None), Some(5));
        assert_eq!(scaled_bytes("5", Some("furlongs")), None);
        assert_eq!(scaled_bytes("x", Some("KiB")), None);
        assert_eq!(scaled_bytes("18446744073709551615", Some("KiB")), None);
    }
}
