//! Entry ids as the stores spell them, and the samples of ids a detail line shows.

use std::collections::{BTreeSet, HashSet};

/// An entry id as PostgreSQL prints a uuid (ids that are not uuids stay as
/// they are: they can match nothing in PostgreSQL, and are reported as such).
pub(crate) fn canonical(id: &str) -> String {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).unwrap_or_else(|_| id.to_string())
}

/// Up to five ids, for a detail line.
pub(crate) fn sample(label: &str, ids: &BTreeSet<&str>) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = ids.iter().take(5).copied().collect();
    let more = if ids.len() > shown.len() { format!(", … {} more", ids.len() - shown.len()) } else { String::new() };
    format!("{label}: {}{more}", shown.join(", "))
}

/// [`sample`] of owned ids.
pub(crate) fn sample_owned(label: &str, ids: &BTreeSet<String>) -> String {
    sample(label, &ids.iter().map(String::as_str).collect())
}

/// Reports, into `drift`, the entries one side holds and the other does not.
pub(crate) fn compare(drift: &mut Vec<String>, left: &str, a: &HashSet<String>, right: &str, b: &HashSet<String>) {
    let only_a: BTreeSet<&str> = a.difference(b).map(String::as_str).collect();
    let only_b: BTreeSet<&str> = b.difference(a).map(String::as_str).collect();
    if !only_a.is_empty() {
        drift.push(format!("{} {left}, not {right}{}", only_a.len(), sample("", &only_a)));
    }
    if !only_b.is_empty() {
        drift.push(format!("{} {right}, not {left}{}", only_b.len(), sample("", &only_b)));
    }
}
