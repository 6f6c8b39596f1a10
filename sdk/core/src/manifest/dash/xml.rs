//! The MPD as a small element tree, read with quick-xml: local names, unescaped attributes,
//! text, and the byte spans the rewrite splices at. Both the model and the rewrite read it.

use super::DashError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Deepest element nesting accepted (real MPDs stay under 10).
const MAX_DEPTH: usize = 32;

/// An element: local name, attributes (local names, unescaped values), children and text.
#[derive(Debug, Default)]
pub(super) struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
    /// Byte offset of the start tag in the document (the rewrite finds elements by it).
    pub start: usize,
    /// Byte span of the content between start and end tag; `None` for an empty element.
    pub inner: Option<(usize, usize)>,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn element(e: &BytesStart<'_>, start: usize) -> Result<El, DashError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| DashError::Xml(e.to_string()))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| DashError::Xml(e.to_string()))?;
        attrs.push((a.key.local_name().as_ref().to_owned(), value.into_owned()));
    }
    Ok(El {
        name: e.local_name().as_ref().to_owned(),
        attrs,
        start,
        ..El::default()
    })
}

/// Reads the whole document into a tree; `Err` for anything that is not well-formed XML.
pub(super) fn read_tree(text: &str) -> Result<El, DashError> {
    let mut reader = Reader::from_str(text);
    let xml = |e: quick_xml::Error| DashError::Xml(e.to_string());
    // Each open element with the raw (still escaped) text seen directly inside it.
    let mut stack: Vec<(El, String)> = Vec::new();
    let mut root: Option<El> = None;
    let mut attach = |stack: &mut Vec<(El, String)>, el: El| -> Result<(), DashError> {
        match stack.last_mut() {
            Some((parent, _)) => parent.children.push(el),
            None if root.is_none() => root = Some(el),
            None => return Err(DashError::Xml("more than one root element".into())),
        }
        Ok(())
    };
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event().map_err(xml)? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DashError::Xml(format!("nested deeper than {MAX_DEPTH}")));
                }
                let mut el = element(&e, before)?;
                let after = reader.buffer_position() as usize;
                el.inner = Some((after, after));
                stack.push((el, String::new()));
            }
            Event::Empty(e) => attach(&mut stack, element(&e, before)?)?,
            Event::End(_) => {
                let Some((mut el, raw)) = stack.pop() else {
                    return Err(DashError::Xml("unmatched end tag".into()));
                };
                el.inner = el.inner.map(|(from, _)| (from, before));
                el.text = quick_xml::escape::unescape(raw.trim())
                    .map_err(|e| DashError::Xml(e.to_string()))?
                    .into_owned();
                attach(&mut stack, el)?;
            }
            Event::Text(_) | Event::GeneralRef(_) => {
                let after = reader.buffer_position() as usize;
                if let (Some((_, raw)), Some(s)) = (stack.last_mut(), text.get(before..after)) {
                    raw.push_str(s);
                }
            }
            Event::CData(c) => {
                if let Some((_, raw)) = stack.last_mut() {
                    let content = c.into_inner();
                    raw.push_str(&quick_xml::escape::escape(content.as_ref()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(DashError::Xml("document ends inside an element".into()));
    }
    root.ok_or_else(|| DashError::Xml("no root element".into()))
}
