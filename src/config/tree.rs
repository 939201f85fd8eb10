//! A location index of the YAML document: which field path sits at which line:column.
//!
//! serde-saphyr reports *where* a deserialization error happened (line and column) but not
//! *which field* it was, and the typed validation step knows the field path but not where the
//! value was written. This module bridges both directions: it deserializes the document once
//! more into a generic tree whose every node is a `serde_saphyr::Spanned` (so aliases and merge
//! keys resolve the same way as for the typed structs) and records, for each node, its path
//! (`carriers[2].weight`) and its location.
//!
//! It never interprets values; it never fails on valid YAML (invalid YAML is reported by the
//! caller with the parser's own location).

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line:column position in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn of(loc: &serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        }
    }
}

/// Generic YAML node; only the shape matters here.
enum Node {
    Scalar(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar(String::new()))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar(String::new()))
            }
            fn visit_bytes<E>(self, _v: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar(String::new()))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// What kind of thing sits at a recorded position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A mapping key; its path is the path of the value it introduces.
    Key,
    Scalar,
    Seq,
    Map,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub pos: Pos,
    pub path: String,
    pub kind: EntryKind,
    /// Nesting depth (root = 0), to prefer the innermost node at one position.
    pub depth: usize,
}

/// Path <-> position index of one document.
#[derive(Default, Debug)]
pub(crate) struct PathIndex {
    /// All keys and nodes in document order.
    entries: Vec<Entry>,
    values: HashMap<String, Pos>,
    /// The document has no content (empty file, only comments, or `~`).
    root_empty: bool,
}

/// Append a mapping key to a path: `a` + `b` = `a.b`; root + `b` = `b`.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Append a sequence index to a path: `a` + 2 = `a[2]`.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Drop the last segment of a path (`a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``).
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

impl PathIndex {
    /// Builds the index. `Err` carries the parser's error for invalid YAML.
    pub(crate) fn build(text: &str) -> Result<PathIndex, serde_saphyr::Error> {
        let blank = text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        });
        if blank {
            return Ok(PathIndex {
                root_empty: true,
                ..PathIndex::default()
            });
        }
        // Duplicate keys are forwarded here (so the index has both and the typed pass can
        // report the duplicate with its path); the typed pass refuses them.
        let options = serde_saphyr::options! {
            with_snippet: false,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options)?;
        let mut index = PathIndex {
            root_empty: matches!(&root.value, Node::Scalar(s) if s.is_empty()),
            ..PathIndex::default()
        };
        index.walk(&root, String::new(), 0);
        Ok(index)
    }

    /// Whether the document has no content at all.
    pub(crate) fn is_empty_document(&self) -> bool {
        self.root_empty
    }

    fn walk(&mut self, node: &Spanned<Node>, path: String, depth: usize) {
        let pos = Pos::of(&node.referenced);
        let kind = match &node.value {
            Node::Scalar(_) => EntryKind::Scalar,
            Node::Seq(_) => EntryKind::Seq,
            Node::Map(_) => EntryKind::Map,
        };
        self.values.entry(path.clone()).or_insert(pos);
        self.entries.push(Entry {
            pos,
            path: path.clone(),
            kind,
            depth,
        });
        match &node.value {
            Node::Scalar(_) => {}
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, join_index(&path, i), depth + 1);
                }
            }
            Node::Map(entries) => {
                for (key, value) in entries {
                    let key_text = match &key.value {
                        Node::Scalar(s) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    let child = join_key(&path, &key_text);
                    self.entries.push(Entry {
                        pos: Pos::of(&key.referenced),
                        path: child.clone(),
                        kind: EntryKind::Key,
                        depth: depth + 1,
                    });
                    self.walk(value, child, depth + 1);
                }
            }
        }
    }

    /// Position of the value at `path`, or of its nearest ancestor that exists (for a field
    /// that was left out and took its default), or 1:1.
    pub(crate) fn locate(&self, path: &str) -> Pos {
        let mut p = Some(path);
        while let Some(candidate) = p {
            if let Some(pos) = self.values.get(candidate) {
                return *pos;
            }
            p = parent(candidate);
        }
        Pos { line: 1, column: 1 }
    }

    /// Whether a value was written at exactly this path.
    pub(crate) fn has(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    /// The field path for an error the deserializer reported at `pos`. `prefer` picks among
    /// several things at the same position (a mapping and its first key share one).
    pub(crate) fn path_at(&self, pos: Pos, prefer: EntryKind) -> String {
        let at: Vec<&Entry> = self.entries.iter().filter(|e| e.pos == pos).collect();
        if prefer == EntryKind::Map {
            // serde-saphyr reports a missing field at the last key it read from the mapping
            // (or at the mapping itself when it is empty): the mapping is that key's parent.
            if let Some(key) = at
                .iter()
                .filter(|e| e.kind == EntryKind::Key)
                .max_by_key(|e| e.depth)
            {
                return parent(&key.path).unwrap_or_default().to_owned();
            }
        }
        if let Some(e) = at
            .iter()
            .filter(|e| e.kind == prefer)
            .max_by_key(|e| e.depth)
        {
            return e.path.clone();
        }
        // Innermost value node at that position, then any key.
        if let Some(e) = at
            .iter()
            .filter(|e| e.kind != EntryKind::Key)
            .max_by_key(|e| e.depth)
        {
            return e.path.clone();
        }
        if let Some(e) = at.first() {
            return e.path.clone();
        }
        // Nothing starts exactly there: the last thing that starts before it.
        self.entries
            .iter()
            .filter(|e| e.pos <= pos)
            .max_by_key(|e| (e.pos, e.depth))
            .map(|e| e.path.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_positions() {
        let text = "a: 5\nb:\n  - id: x\n    w: 3\n  - { id: y, w: 70000 }\n";
        let idx = PathIndex::build(text).expect("valid yaml");
        assert_eq!(
            idx.locate("b[1].w"),
            Pos {
                line: 5,
                column: 17
            }
        );
        assert_eq!(idx.locate("b[0].w"), Pos { line: 4, column: 8 });
        // Missing field falls back to its parent mapping.
        assert_eq!(idx.locate("b[0].nope"), Pos { line: 3, column: 5 });
        assert_eq!(
            idx.path_at(Pos { line: 4, column: 5 }, EntryKind::Key),
            "b[0].w"
        );
        assert_eq!(
            idx.path_at(Pos { line: 3, column: 5 }, EntryKind::Map),
            "b[0]"
        );
        // The last key of b[0] also names b[0] as the mapping.
        assert_eq!(
            idx.path_at(Pos { line: 4, column: 5 }, EntryKind::Map),
            "b[0]"
        );
        assert_eq!(idx.path_at(Pos { line: 1, column: 1 }, EntryKind::Map), "");
        assert_eq!(
            idx.path_at(
                Pos {
                    line: 5,
                    column: 17
                },
                EntryKind::Scalar
            ),
            "b[1].w"
        );
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
