//! What a command prints, in the format asked (`--format text|json`), and
//! whether what it checked held. Output goes to stdout, logs and errors to
//! stderr, so `firstcome … --format json | jq` reads one document.

use serde::Serialize;

/// `--format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines and tables for people.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// A command's result: its text and JSON renderings, and its verdict.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub json: serde_json::Value,
    /// `Some(why)` when what the command checked does not hold (exit 1).
    pub failed: Option<String>,
}

impl Output {
    /// `text` for people, `value` as the JSON document.
    pub fn new(text: impl Into<String>, value: &impl Serialize) -> Self {
        let json =
            serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "unserialisable": e.to_string() }));
        Self { text: text.into(), json, failed: None }
    }

    /// The check this command ran does not hold: `why` goes to stderr, and
    /// the exit status says it (1).
    pub fn failed_if(mut self, failed: bool, why: impl Into<String>) -> Self {
        if failed {
            self.failed = Some(why.into());
        }
        self
    }

    /// What goes to stdout.
    pub fn render(&self, format: Format) -> String {
        let mut out = match format {
            Format::Text => self.text.clone(),
            Format::Json => serde_json::to_string_pretty(&self.json).unwrap_or_default(),
        };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_is_one_document_and_text_ends_with_a_newline() {
        let out = Output::new("1 migration(s) applied", &serde_json::json!({ "applied": 1 }));
        assert_eq!(out.render(Format::Text), "1 migration(s) applied\n");
        let parsed: serde_json::Value = serde_json::from_str(&out.render(Format::Json)).expect("one JSON document");
        assert_eq!(parsed["applied"], 1);
    }

    #[test]
    fn a_failed_check_keeps_its_output() {
        let out = Output::new("BROKEN", &serde_json::json!({})).failed_if(true, "invariants do not hold");
        assert_eq!(out.failed.as_deref(), Some("invariants do not hold"));
        assert_eq!(out.render(Format::Text), "BROKEN\n");
    }
}
