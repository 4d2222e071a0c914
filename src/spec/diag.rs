//! Diagnostics: one problem in one file, with the position and field a person needs to fix it.

use std::fmt;

use serde::Serialize;

/// A position in a file, both 1-based, as editors and compilers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

/// One problem with the fleet repository.
///
/// `file` is relative to the repository root with `/` separators. `span` is `None` only when
/// the problem concerns a file as a whole (too large, unreadable, missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// The field the problem is in, as a path (`spec.pools[1].count`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn file_level(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            span: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `clusters/edge.yaml:12:5: unknown field ...`, the way compilers print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(Span { line, column }) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.message)
            }
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}
