//! JSON documents borrowed from the line they were read from: the form replay compares.
//!
//! Parsing a fixture line into `serde_json::Value` costs a heap allocation for every string
//! and a `BTreeMap` for every object, and most of those trees are dropped a microsecond
//! later without anything in them having differed. A [`Doc`] is one flat list of items in
//! document order (a "tape"): one allocation per document, strings borrowed from the line
//! unless they hold escapes, object members kept in the order written. A [`Node`] is a
//! cheap view of one value inside it. A `Value` is only built ([`Node::to_value`]) for what
//! a report keeps: differing values and examples.
//!
//! A document means exactly what the `Value` parsed from the same text means: numbers are
//! the same `serde_json::Number`s, and when an object repeats a key the last one counts, as
//! in a `serde_json::Map`. Members are not sorted here: the diff pairs them by key itself
//! (see `compare.rs`).
//!
//! Two readers write documents: serde_json, through [`Doc`]'s `Deserialize` (`de.rs`), the
//! reference, and a hand-written one for well-formed input (`scan.rs`), several times
//! faster; both produce the same items.

mod de;
pub(crate) mod scan;

use std::fmt;

use serde_json::{Map, Number, Value};

/// Room made for a document's items up front: a typical outcome has about 45, so this
/// saves the `Vec` from growing five times on the way.
const DOC_ITEMS: usize = 64;

/// One JSON value as a flat list of items; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<'a> {
    items: Vec<Item<'a>>,
    /// Strings that had escapes, decoded; items refer to them by index.
    decoded: Vec<String>,
}

/// One item of a [`Doc`]. A container is followed by its contents: an array by its
/// elements, an object by a key and then the value of each member.
///
/// Items are plain data, a `tag` and fields whose meaning depends on it, rather than an
/// enum with a payload per variant: the reader builds about a hundred per line, and a
/// freshly built enum was copied through the stack into the `Vec`, read back wider than it
/// had just been written, which stalls the CPU (that was a third of the parse); a plain
/// struct goes straight from registers into the `Vec`. [`Node::kind`] gives the typed view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Item<'a> {
    tag: Tag,
    /// [`Tag::Text`], [`Tag::TextKey`]: the string, borrowed from the input.
    text: &'a str,
    /// Numbers: the bits of the `u64`, `i64` or `f64`. Containers: how many elements or
    /// members. [`Tag::Decoded`], [`Tag::DecodedKey`]: the index in `Doc::decoded`.
    a: u64,
    /// Containers: the index of the first item after their contents.
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Null,
    False,
    True,
    /// serde_json's three kinds of number, kept apart as `serde_json::Number` keeps them.
    PosInt,
    NegInt,
    Float,
    Text,
    Decoded,
    Array,
    Object,
    TextKey,
    DecodedKey,
}

/// Writes a [`Doc`] item by item, in document order.
pub(crate) struct Builder<'a> {
    doc: Doc<'a>,
}

impl Default for Builder<'_> {
    fn default() -> Self {
        Builder { doc: Doc { items: Vec::new(), decoded: Vec::new() } }
    }
}

impl<'a> Builder<'a> {
    /// Makes room for `items` more items.
    pub(crate) fn reserve(&mut self, items: usize) {
        self.doc.items.reserve(items);
    }

    #[inline(always)]
    fn push(&mut self, tag: Tag, text: &'a str, a: u64) {
        self.doc.items.push(Item { tag, text, a, end: 0 });
    }

    #[inline]
    pub(crate) fn null(&mut self) {
        self.push(Tag::Null, "", 0);
    }

    #[inline]
    pub(crate) fn bool(&mut self, value: bool) {
        self.push(if value { Tag::True } else { Tag::False }, "", 0);
    }

    #[inline]
    pub(crate) fn number(&mut self, number: &Number) {
        match (number.as_u64(), number.as_i64(), number.as_f64()) {
            (Some(n), _, _) => self.push(Tag::PosInt, "", n),
            (None, Some(n), _) => self.push(Tag::NegInt, "", n as u64),
            (None, None, Some(x)) => self.push(Tag::Float, "", x.to_bits()),
            // Cannot happen: without serde_json's `arbitrary_precision` feature (not enabled),
            // every number is one of the three above.
            (None, None, None) => self.null(),
        }
    }

    /// A finite `f64` (serde_json's `Float`).
    #[inline]
    pub(crate) fn float(&mut self, x: f64) {
        self.push(Tag::Float, "", x.to_bits());
    }

    /// A non-negative integer (serde_json's `PosInt`).
    #[inline]
    pub(crate) fn unsigned(&mut self, n: u64) {
        self.push(Tag::PosInt, "", n);
    }

    /// A string value or, with `key`, an object key, borrowed from the input.
    #[inline]
    pub(crate) fn text(&mut self, text: &'a str, key: bool) {
        self.push(if key { Tag::TextKey } else { Tag::Text }, text, 0);
    }

    /// A string value or, with `key`, an object key, that had escapes.
    #[inline]
    pub(crate) fn decoded(&mut self, text: String, key: bool) {
        let index = self.doc.decoded.len() as u64;
        self.doc.decoded.push(text);
        self.push(if key { Tag::DecodedKey } else { Tag::Decoded }, "", index);
    }

    /// Starts an array or an object; returns the handle [`Builder::close`] takes.
    #[inline]
    pub(crate) fn open(&mut self, object: bool) -> usize {
        self.push(if object { Tag::Object } else { Tag::Array }, "", 0);
        self.doc.items.len() - 1
    }

    /// Ends the container `open` returned `at`, now that it holds `count` elements or members.
    #[inline]
    pub(crate) fn close(&mut self, at: usize, count: usize) {
        let end = self.doc.items.len();
        if let Some(item) = self.doc.items.get_mut(at) {
            item.a = count as u64;
            item.end = end;
        }
    }

    /// The finished document; it must hold exactly one value.
    pub(crate) fn finish(self) -> Doc<'a> {
        self.doc
    }
}

impl<'a> Doc<'a> {
    /// The document's value.
    pub fn root(&self) -> Node<'_> {
        Node { doc: self, at: 0 }
    }

    /// A document viewing an owned value; its strings are borrowed from it.
    pub fn from_value(value: &'a Value) -> Doc<'a> {
        fn write<'a>(builder: &mut Builder<'a>, value: &'a Value) {
            match value {
                Value::Null => builder.null(),
                Value::Bool(b) => builder.bool(*b),
                Value::Number(n) => builder.number(n),
                Value::String(s) => builder.text(s, false),
                Value::Array(elements) => {
                    let at = builder.open(false);
                    elements.iter().for_each(|element| write(builder, element));
                    builder.close(at, elements.len());
                }
                Value::Object(map) => {
                    let at = builder.open(true);
                    for (key, member) in map {
                        builder.text(key, true);
                        write(builder, member);
                    }
                    builder.close(at, map.len());
                }
            }
        }
        let mut builder = Builder::default();
        builder.reserve(DOC_ITEMS);
        write(&mut builder, value);
        builder.finish()
    }

    /// The equal owned value.
    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }
}

/// One value inside a [`Doc`]: a copyable view.
#[derive(Clone, Copy)]
pub struct Node<'d> {
    doc: &'d Doc<'d>,
    at: usize,
}

/// What a [`Node`] holds, to match on.
pub enum Kind<'d> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json reads it.
    Number(Number),
    /// A string.
    String(&'d str),
    /// An array's elements.
    Array(Elements<'d>),
    /// An object's members, in the order written (a key may repeat: the last one counts).
    Object(Members<'d>),
}

impl<'d> Node<'d> {
    #[inline]
    fn item(self) -> Item<'d> {
        self.doc.items[self.at]
    }

    /// The text of a string or key item.
    #[inline]
    fn text(self) -> &'d str {
        let item = self.item();
        match item.tag {
            Tag::Decoded | Tag::DecodedKey => &self.doc.decoded[item.a as usize],
            _ => item.text,
        }
    }

    /// What the node holds.
    #[inline]
    pub fn kind(self) -> Kind<'d> {
        let item = self.item();
        let first = self.at + 1;
        let count = item.a as usize;
        match item.tag {
            // A key is never a node of its own: `Members` steps over it.
            Tag::Null | Tag::TextKey | Tag::DecodedKey => Kind::Null,
            Tag::False => Kind::Bool(false),
            Tag::True => Kind::Bool(true),
            Tag::PosInt => Kind::Number(Number::from(item.a)),
            Tag::NegInt => Kind::Number(Number::from(item.a as i64)),
            // Always finite (JSON has no infinities), so never the fallback.
            Tag::Float => Kind::Number(Number::from_f64(f64::from_bits(item.a)).unwrap_or_else(|| 0.into())),
            Tag::Text | Tag::Decoded => Kind::String(self.text()),
            Tag::Array => Kind::Array(Elements { doc: self.doc, next: first, left: count }),
            Tag::Object => Kind::Object(Members { doc: self.doc, next: first, left: count }),
        }
    }

    /// True for an object.
    pub fn is_object(self) -> bool {
        self.item().tag == Tag::Object
    }

    /// Index of the item after this node and everything in it.
    #[inline]
    fn end(self) -> usize {
        let item = self.item();
        match item.tag {
            Tag::Array | Tag::Object => item.end,
            _ => self.at + 1,
        }
    }

    /// The member `key` of an object; of repeated keys, the last.
    pub fn get(self, key: &str) -> Option<Node<'d>> {
        let Kind::Object(members) = self.kind() else { return None };
        members.filter(|(k, _)| *k == key).last().map(|(_, value)| value)
    }

    /// Walks unescaped pointer tokens into the document, as [`crate::pointer::lookup`]
    /// does into a `Value`: a token names an object member or, as a number, an array element.
    pub fn lookup<S: AsRef<str>>(self, tokens: &[S]) -> Option<Node<'d>> {
        tokens.iter().try_fold(self, |current, token| match current.kind() {
            Kind::Object(_) => current.get(token.as_ref()),
            Kind::Array(mut elements) => token.as_ref().parse::<usize>().ok().and_then(|i| elements.nth(i)),
            _ => None,
        })
    }

    /// The equal owned value.
    pub fn to_value(self) -> Value {
        match self.kind() {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(b),
            Kind::Number(n) => Value::Number(n.clone()),
            Kind::String(s) => Value::String(s.to_string()),
            Kind::Array(elements) => Value::Array(elements.map(Node::to_value).collect()),
            // Inserting in the order written leaves the last of repeated keys, as serde_json does.
            Kind::Object(members) => {
                Value::Object(members.map(|(k, v)| (k.to_string(), v.to_value())).collect::<Map<_, _>>())
            }
        }
    }
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// The elements of an array node.
#[derive(Clone)]
pub struct Elements<'d> {
    doc: &'d Doc<'d>,
    next: usize,
    left: usize,
}

impl<'d> Iterator for Elements<'d> {
    type Item = Node<'d>;

    #[inline]
    fn next(&mut self) -> Option<Node<'d>> {
        if self.left == 0 {
            return None;
        }
        let node = Node { doc: self.doc, at: self.next };
        self.next = node.end();
        self.left -= 1;
        Some(node)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Elements<'_> {}

/// The members of an object node, as `(key, value)`, in the order written.
#[derive(Clone)]
pub struct Members<'d> {
    doc: &'d Doc<'d>,
    next: usize,
    left: usize,
}

impl<'d> Iterator for Members<'d> {
    type Item = (&'d str, Node<'d>);

    #[inline]
    fn next(&mut self) -> Option<(&'d str, Node<'d>)> {
        if self.left == 0 {
            return None;
        }
        let key = Node { doc: self.doc, at: self.next }.text();
        let value = Node { doc: self.doc, at: self.next + 1 };
        self.next = value.end();
        self.left -= 1;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Members<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Doc<'_> {
        serde_json::from_str(text).expect("doc")
    }

    #[test]
    fn means_what_the_value_means() {
        for text in [
            r#"{"b":1,"a":[true,null,-3,1.5e3,18446744073709551615],"c":{"z":"\u00e9\n","y":{}},"d":[]}"#,
            r#"{"k":1,"k":2,"a":0,"k":3}"#,
            r#"[1e300,2.5E-3,0.1,[[]],{}]"#,
            r#""plain""#,
            r#"-0"#,
            r#"[-0.0, 12345678901234567890123]"#,
        ] {
            let value: Value = serde_json::from_str(text).expect("value");
            assert_eq!(doc(text).to_value(), value, "{text}");
            assert_eq!(Doc::from_value(&value).to_value(), value, "{text}");
        }
    }

    #[test]
    fn the_last_of_repeated_keys_counts() {
        let doc = doc(r#"{"k":1,"b":true,"k":2,"a":null,"k":3}"#);
        let root = doc.root();
        assert_eq!(root.get("k").map(Node::to_value), Some(Value::from(3)));
        let Kind::Object(members) = root.kind() else { panic!("object") };
        let keys: Vec<&str> = members.map(|(k, _)| k).collect();
        assert_eq!(keys, ["k", "b", "k", "a", "k"], "members stay as written");
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let doc = doc(r#"{"plain":"text","esc\u0061ped":"a\tb"}"#);
        let tags: Vec<Tag> = doc.items.iter().map(|item| item.tag).collect();
        assert_eq!(tags, [Tag::Object, Tag::TextKey, Tag::Text, Tag::DecodedKey, Tag::Decoded]);
        assert_eq!(doc.decoded, ["escaped", "a\tb"]);
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let doc = doc(r#"{"a":[{"b":1},[2,3]],"c":4}"#);
        let found = |tokens: &[&str]| doc.root().lookup(tokens).map(Node::to_value);
        assert_eq!(found(&["a", "0", "b"]), Some(Value::from(1)));
        assert_eq!(found(&["a", "1", "1"]), Some(Value::from(3)));
        assert_eq!(found(&["c"]), Some(Value::from(4)), "skips over nested containers");
        assert_eq!(found(&["a", "2"]), None);
        assert_eq!(found(&[]), Some(doc.to_value()));
    }
}
