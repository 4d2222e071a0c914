//! How an error reads to a user: the whole chain of causes on one line. A bottom-layer
//! helper every module may use; it imports nothing of rackform.

/// An error and its causes, `outer: inner: innermost`, as a user needs them (a cause whose
/// text its outer error already ends with is said once).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
