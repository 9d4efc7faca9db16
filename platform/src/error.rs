//! Errors as people read them: an error with its whole cause chain.

use std::error::Error;
use std::fmt;

/// Any error, sendable: the source a classified error keeps.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Displays an error and its causes, outermost first: `a: b: c`. A cause
/// whose text the chain already shows (an error that prints its source in
/// its own message) is not repeated.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&shown)
    }
}

/// `error` with its causes, for logs: `tracing::warn!(error = %chain(&e), …)`.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> ErrorChain<'a> {
    ErrorChain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_chain_shows_every_cause_once() {
        let error = Outer(Middle(std::io::Error::other("disk gone")));
        assert_eq!(chain(&error).to_string(), "outer: middle: disk gone");
    }
}
