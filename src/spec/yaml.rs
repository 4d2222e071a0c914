//! Reading YAML with limits: one document of a fleet file, or the documents of a manifest.
//!
//! Two passes over the text. The first is a streaming scan (yaml-rust2's pull parser) that
//! refuses more documents than allowed (one for fleet files), nesting deeper than allowed
//! ([`MAX_DEPTH`] for fleet files) and more nodes than allowed with aliases counted as
//! expanded, and records where every key and value of each document starts, so that checks
//! done after parsing can still point at a line. The second is the parse with serde_yaml
//! (typed for fleet files, [`serde_json::Value`]s for manifests), which then meets only bounded
//! input. Neither pass expands aliases into memory before the limits apply.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};

use super::diag::Span;

/// Deeper nesting than this is refused: no fleet file needs more than a handful of levels.
pub const MAX_DEPTH: usize = 32;

/// A document with more nodes than this, counting each alias as the nodes it expands to, is
/// refused: a large fleet file has a few thousand, an alias bomb billions.
pub const MAX_NODES: u64 = 50_000;

/// How much YAML one file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most documents in the file.
    pub documents: usize,
    /// Deepest nesting of collections.
    pub depth: usize,
    /// Most nodes in the file, each alias counted as the nodes it expands to.
    pub nodes: u64,
}

/// `rackform.yaml` and cluster files: one document, [`MAX_DEPTH`], [`MAX_NODES`].
pub const FLEET_FILE: Limits = Limits {
    documents: 1,
    depth: MAX_DEPTH,
    nodes: MAX_NODES,
};

/// Addon manifests: any number of documents (the file's size bounds them), nesting as deep as
/// the schemas of large CustomResourceDefinitions go, and five times the nodes of a fleet
/// file, with aliases counted as expanded.
pub const MANIFEST_FILE: Limits = Limits {
    documents: usize::MAX,
    depth: 64,
    nodes: 250_000,
};

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
    /// The limit, and what it is said of (`the document`, `the file`).
    max: u64,
    whole: &'static str,
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
        let max = self.max;
        if self.literal.saturating_add(self.aliased) <= max {
            Ok(())
        } else if self.aliased > self.literal {
            Err(format!(
                "YAML aliases would expand {} past {max} nodes (an alias bomb?); refusing the file",
                if self.whole == "the document" {
                    "this document"
                } else {
                    self.whole
                }
            ))
        } else {
            Err(format!(
                "{} has more than {max} YAML nodes; refusing the file",
                self.whole
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
    Ok(scan_documents(text, &FLEET_FILE)?
        .pop()
        .map(|document| document.index)
        .unwrap_or_default())
}

/// One document of a YAML stream, as the scan saw it.
#[derive(Debug, Default)]
pub struct ScannedDocument {
    /// Where each of its fields starts, by path from the document's root (`""` for the
    /// root, which for a mapping is where its first key is).
    pub index: SpanIndex,
}

/// Scans every document of `text` within `limits`, indexing each one's field positions.
///
/// An empty text yields no document; `---` with nothing after it yields one whose root is an
/// empty scalar (serde_yaml reads it as null). Syntax errors as in [`scan`].
pub fn scan_documents(text: &str, limits: &Limits) -> Result<Vec<ScannedDocument>, ScanError> {
    let mut parser = Parser::new_from_str(text);
    let mut documents: Vec<ScannedDocument> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut expansion = Expansion {
        max: limits.nodes,
        whole: if limits.documents == 1 {
            "the document"
        } else {
            "the file"
        },
        ..Expansion::default()
    };
    let limit = |span, message: String| ScanError::Limit(Problem::at(span, message));
    let too_deep = |span| {
        let depth = limits.depth;
        limit(
            span,
            format!("nesting is deeper than {depth} levels; refusing the file"),
        )
    };
    loop {
        let (event, mark) = parser.next_token().map_err(|error| {
            let mark = error.marker();
            let span = span_of(mark.line(), mark.col());
            // The scanner has a nesting limit of its own, for flow collections.
            if error.info().contains("recursion limit") {
                too_deep(span)
            } else {
                ScanError::Syntax(Problem::at(span, error.info().to_owned()))
            }
        })?;
        let span = span_of(mark.line(), mark.col());
        if let Event::DocumentStart = event {
            if documents.len() >= limits.documents {
                let message = if limits.documents == 1 {
                    "a fleet file holds exactly one YAML document, found a second one here"
                        .to_owned()
                } else {
                    format!(
                        "the file holds more than {} YAML documents; refusing it",
                        limits.documents
                    )
                };
                return Err(limit(span, message));
            }
            documents.push(ScannedDocument::default());
            stack.clear();
            continue;
        }
        if let Event::StreamEnd = event {
            return Ok(documents);
        }
        // Nodes come only inside a document.
        let Some(index) = documents.last_mut().map(|document| &mut document.index) else {
            continue;
        };
        match event {
            Event::Scalar(text, _, anchor, _) => {
                place(&mut stack, index, span, Some(&text));
                expansion
                    .leaf(anchor)
                    .map_err(|message| limit(span, message))?;
            }
            Event::Alias(anchor) => {
                place(&mut stack, index, span, None);
                expansion
                    .alias(anchor)
                    .map_err(|message| limit(span, message))?;
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                expansion
                    .open(anchor)
                    .map_err(|message| limit(span, message))?;
                let path = place(&mut stack, index, span, None).unwrap_or_else(|| "?".into());
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        keys: 0,
                    },
                    _ => Frame::Seq { path, next: 0 },
                });
                if stack.len() > limits.depth {
                    return Err(too_deep(span));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                expansion.close();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
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
    serde_path_to_error::deserialize(deserializer).map_err(problem_of)
}

/// Every document of `text` as a JSON value (an empty document is `null`), for manifests,
/// which are JSON objects written as YAML. Call after [`scan_documents`] accepted the text
/// and found at least one document (serde_yaml reads a text without any as one null).
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, Problem> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| serde_path_to_error::deserialize(document).map_err(problem_of))
        .collect()
}

/// A typed parse's error, with the field path it was found at.
fn problem_of(error: serde_path_to_error::Error<serde_yaml::Error>) -> Problem {
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
