//! Reading one YAML document with limits.
//!
//! Two passes over the text. The first is a streaming scan (yaml-rust2's pull parser) that
//! refuses more than one document and nesting deeper than [`MAX_DEPTH`], and records where
//! every key and value starts, so that checks done after parsing can still point at a line.
//! The second is the typed parse with serde_yaml, which then meets only bounded input.
//! Neither pass expands aliases into memory before the limits apply.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};

use super::diag::Span;

/// Deeper nesting than this is refused: no fleet file needs more than a handful of levels.
pub const MAX_DEPTH: usize = 32;

/// A document with more nodes than this, counting each alias as the nodes it expands to, is
/// refused: a large fleet file has a few thousand, an alias bomb billions.
pub const MAX_NODES: u64 = 50_000;

/// A problem found while reading YAML, before it is tied to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Span>,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    fn at(span: Span, message: impl Into<String>) -> Self {
        Problem {
            span: Some(span),
            field: None,
            message: message.into(),
        }
    }
}

/// Why [`scan`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// The text is not YAML; the typed parse will say so too, perhaps in better words.
    Syntax(Problem),
    /// The text is YAML but over a limit (depth, aliases, documents); refuse it as is.
    Limit(Problem),
}

/// Where each field of a document starts, by field path (`spec.pools[1].count`).
#[derive(Debug, Default)]
pub struct SpanIndex {
    values: HashMap<String, Span>,
    keys: HashMap<String, Span>,
}

impl SpanIndex {
    /// Where the value at `path` starts; for a field the file does not have, where the key
    /// of its nearest present ancestor is (`spec:` for a missing `spec.network`).
    pub fn value(&self, path: &str) -> Option<Span> {
        if let Some(span) = self.values.get(path) {
            return Some(*span);
        }
        let mut path = path;
        while !path.is_empty() {
            path = parent(path);
            if let Some(span) = self.keys.get(path).or_else(|| self.values.get(path)) {
                return Some(*span);
            }
        }
        None
    }

    /// Where the key naming `path` starts (falls back to [`SpanIndex::value`]).
    pub fn key(&self, path: &str) -> Option<Span> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

/// The path one level up: `a.b[2].c` → `a.b[2]` → `a.b` → `a` → ``.
pub fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(at) => &path[..at],
        None => "",
    }
}

/// `parent.key`, or `key` at the root.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

enum Frame {
    /// `keys` counts the keys seen so far.
    Map {
        path: String,
        key: Option<String>,
        keys: usize,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Counts the nodes a document would have with every alias expanded, without expanding.
#[derive(Default)]
struct Expansion {
    /// Expanded size of each anchored node, by anchor id (yaml-rust2 numbers them from 1).
    anchored: HashMap<usize, u64>,
    /// Open collections: (anchor id, expanded size so far).
    open: Vec<(usize, u64)>,
    /// Nodes written in the text.
    literal: u64,
    /// Nodes that aliases add beyond the text.
    aliased: u64,
}

impl Expansion {
    fn add(&mut self, size: u64) -> Result<(), String> {
        if let Some((_, open)) = self.open.last_mut() {
            *open = open.saturating_add(size);
        }
        if self.literal.saturating_add(self.aliased) <= MAX_NODES {
            Ok(())
        } else if self.aliased > self.literal {
            Err(format!(
                "YAML aliases would expand this document past {MAX_NODES} nodes (an alias bomb?); refusing the file"
            ))
        } else {
            Err(format!(
                "the document has more than {MAX_NODES} YAML nodes; refusing the file"
            ))
        }
    }

    /// An alias adds the expanded size of its anchor.
    fn alias(&mut self, anchor: usize) -> Result<(), String> {
        let size = self.anchored.get(&anchor).copied().unwrap_or(1);
        self.aliased = self.aliased.saturating_add(size);
        self.add(size)
    }

    fn leaf(&mut self, anchor: usize) -> Result<(), String> {
        if anchor != 0 {
            self.anchored.insert(anchor, 1);
        }
        self.literal += 1;
        self.add(1)
    }

    fn open(&mut self, anchor: usize) -> Result<(), String> {
        self.literal += 1;
        self.add(1)?;
        self.open.push((anchor, 1));
        Ok(())
    }

    fn close(&mut self) {
        if let Some((anchor, size)) = self.open.pop() {
            if anchor != 0 {
                self.anchored.insert(anchor, size);
            }
            // The collection's own node was counted on open; its children as they came.
            if let Some((_, parent)) = self.open.last_mut() {
                *parent = parent.saturating_add(size - 1);
            }
        }
    }
}

/// Scans `text`, enforcing one document and [`MAX_DEPTH`], and indexes field positions.
///
/// A syntax error is returned as found by the scanner; the typed parse would report it too,
/// so callers may prefer that one's wording.
pub fn scan(text: &str) -> Result<SpanIndex, ScanError> {
    let mut parser = Parser::new_from_str(text);
    let mut index = SpanIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0;
    let mut expansion = Expansion::default();
    let limit = |span, message: String| ScanError::Limit(Problem::at(span, message));
    loop {
        let (event, mark) = parser.next_token().map_err(|error| {
            let mark = error.marker();
            let span = span_of(mark.line(), mark.col());
            // The scanner has a nesting limit of its own, for flow collections.
            if error.info().contains("recursion limit") {
                ScanError::Limit(Problem::at(
                    span,
                    format!("nesting is deeper than {MAX_DEPTH} levels; refusing the file"),
                ))
            } else {
                ScanError::Syntax(Problem::at(span, error.info().to_owned()))
            }
        })?;
        let span = span_of(mark.line(), mark.col());
        match event {
            Event::StreamEnd => return Ok(index),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(limit(
                        span,
                        "a fleet file holds exactly one YAML document, found a second one here"
                            .into(),
                    ));
                }
            }
            Event::Scalar(text, _, anchor, _) => {
                place(&mut stack, &mut index, span, Some(&text));
                expansion
                    .leaf(anchor)
                    .map_err(|message| limit(span, message))?;
            }
            Event::Alias(anchor) => {
                place(&mut stack, &mut index, span, None);
                expansion
                    .alias(anchor)
                    .map_err(|message| limit(span, message))?;
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                expansion
                    .open(anchor)
                    .map_err(|message| limit(span, message))?;
                let path = place(&mut stack, &mut index, span, None).unwrap_or_else(|| "?".into());
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        keys: 0,
                    },
                    _ => Frame::Seq { path, next: 0 },
                });
                if stack.len() > MAX_DEPTH {
                    return Err(limit(
                        span,
                        format!("nesting is deeper than {MAX_DEPTH} levels; refusing the file"),
                    ));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                expansion.close();
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
        }
    }
}

/// Records a node starting at `span` and returns its value path, or `None` when the node is
/// a mapping key (whose text, if scalar, becomes the next value's last path segment).
fn place(
    stack: &mut [Frame],
    index: &mut SpanIndex,
    span: Span,
    key_text: Option<&str>,
) -> Option<String> {
    let path = match stack.last_mut() {
        None => String::new(),
        Some(Frame::Map { path, key, keys }) => match key.take() {
            None => {
                // A block mapping's start mark lies past its first key: say the mapping
                // starts where that key does.
                if *keys == 0 {
                    index.values.insert(path.clone(), span);
                }
                *keys += 1;
                let name = key_text.unwrap_or("?").to_owned();
                index.keys.entry(child(path, &name)).or_insert(span);
                *key = Some(name);
                return None;
            }
            Some(name) => child(path, &name),
        },
        Some(Frame::Seq { path, next }) => {
            *next += 1;
            item(path, *next - 1)
        }
    };
    index.values.entry(path.clone()).or_insert(span);
    Some(path)
}

/// yaml-rust2 counts lines from 1 and columns from 0.
fn span_of(line: usize, col: usize) -> Span {
    Span {
        line,
        column: col + 1,
    }
}

/// The typed parse: serde_yaml with the field path of any error.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Problem> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        let span = error.location().map(|at| Span {
            line: at.line(),
            column: at.column(),
        });
        Problem {
            span,
            field: (path != "." && path != "?").then_some(path),
            message: message_of(&error),
        }
    })
}

/// serde_yaml's message without the ` at line L column C` it appends (we print positions our
/// own way), and with its terse limit errors said plainly.
fn message_of(error: &serde_yaml::Error) -> String {
    let mut message = error.to_string();
    if let Some(at) = error.location() {
        let suffix = format!(" at line {} column {}", at.line(), at.column());
        if let Some(start) = message.rfind(&suffix) {
            message.replace_range(start..start + suffix.len(), "");
        }
    }
    match message.as_str() {
        "repetition limit exceeded" => {
            "YAML aliases expand to too many nodes (an alias bomb?); refusing the file".into()
        }
        "recursion limit exceeded" => "nesting is too deep; refusing the file".into(),
        "EOF while parsing a value" => "the file holds no YAML document".into(),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_points_at_keys_and_values() {
        let text = "a: 1\nb:\n  - x: 2\n    y: [3, 4]\n";
        let index = scan(text).unwrap();
        assert_eq!(index.value("a"), Some(Span { line: 1, column: 4 }));
        assert_eq!(index.key("b"), Some(Span { line: 2, column: 1 }));
        assert_eq!(index.value("b[0].x"), Some(Span { line: 3, column: 8 }));
        assert_eq!(index.key("b[0].y"), Some(Span { line: 4, column: 5 }));
        assert_eq!(
            index.value("b[0].y[1]"),
            Some(Span {
                line: 4,
                column: 12
            })
        );
        // Absent paths fall back to their nearest present ancestor's key.
        assert_eq!(index.value("b[0].y[7].z"), index.key("b[0].y"));
        assert_eq!(index.value("b[0].w"), Some(Span { line: 3, column: 5 }));
        assert_eq!(index.value("b[0].x.w"), index.key("b[0].x"));
    }

    #[test]
    fn second_document_is_refused() {
        let Err(ScanError::Limit(problem)) = scan("a: 1\n---\na: 2\n") else {
            panic!()
        };
        assert_eq!(problem.span.map(|s| s.line), Some(2));
    }

    #[test]
    fn deep_nesting_is_refused_by_the_scan() {
        let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let result = scan(&text);
        let Err(ScanError::Limit(problem)) = result else {
            panic!("{result:?}")
        };
        assert!(problem.message.contains("deeper than 32"), "{problem:?}");
    }

    #[test]
    fn alias_bombs_are_refused_by_the_scan() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (name, prev) in ["b", "c", "d", "e", "f"]
            .iter()
            .zip(["a", "b", "c", "d", "e"])
        {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        let Err(ScanError::Limit(problem)) = scan(&text) else {
            panic!()
        };
        assert!(problem.message.contains("alias bomb"), "{problem:?}");
        // A few honest aliases are fine.
        assert!(scan("a: &a [1, 2]\nb: *a\nc: *a\n").is_ok());
    }

    #[test]
    fn documents_with_too_many_nodes_are_refused() {
        let text = format!("[{}]", "a,".repeat(60_000));
        let Err(ScanError::Limit(problem)) = scan(&text) else {
            panic!()
        };
        assert!(
            problem.message.contains("more than 50000 YAML nodes"),
            "{problem:?}"
        );
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2].c"), "a.b[2]");
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a"), "");
    }
}
