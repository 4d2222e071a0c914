//! [`FileCheck`]: collects the problems of one file, each pointing at its field and line.

use super::diag::Diagnostic;
use super::yaml::SpanIndex;

/// Collects diagnostics for one file, pointing each at a field through the file's span index.
pub struct FileCheck<'a> {
    pub file: &'a str,
    pub index: &'a SpanIndex,
    pub diagnostics: &'a mut Vec<Diagnostic>,
    pub failed: bool,
}

impl FileCheck<'_> {
    /// A problem with the value at `path`.
    pub fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        let span = self.index.value(path);
        self.push(path, span, message);
    }

    /// A problem with the field at `path` as such (for example that it is missing or extra).
    pub fn key_error(&mut self, path: &str, message: impl std::fmt::Display) {
        let span = self.index.key(path);
        self.push(path, span, message);
    }

    pub(super) fn push(
        &mut self,
        path: &str,
        span: Option<super::diag::Span>,
        message: impl std::fmt::Display,
    ) {
        self.failed = true;
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            span,
            field: (!path.is_empty()).then(|| path.to_owned()),
            message,
        });
    }

    /// Applies `rule` to the value at `path`, recording its reason on failure.
    pub fn check<T>(
        &mut self,
        path: &str,
        value: &str,
        rule: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        rule(value).map_err(|why| self.error(path, why)).ok()
    }
}
