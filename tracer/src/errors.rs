//! Error messages: an error's own text followed by its sources, each once.
//! Typed errors keep their cause as `#[source]` and never repeat it in their
//! own message, so printing the chain says everything exactly once.

/// `error: source: source ...`, for one-line messages.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
