//! The identity every event carries (event, entry, member), checked once for
//! every consumer: other teams produce to these topics too, so ids are
//! validated, never trusted.

use uuid::Uuid;

/// Longest event or member id accepted.
pub const MAX_ID_CHARS: usize = 128;

/// The checked identity of one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryIdentity {
    pub event_id: String,
    pub entry_id: Uuid,
    pub user_id: String,
}

/// Checks the ids of a record:
/// - `entry_id` is a UUID in canonical form (lower-case, hyphenated), since
///   Redis dedupes on the text and PostgreSQL on the value: two spellings of
///   one UUID must not become two entries;
/// - `event_id` and `user_id` are non-empty, at most [`MAX_ID_CHARS`], with no
///   white space and none of `{ } |` (they go into Redis keys and marks).
pub fn check_identity(event_id: &str, entry_id: &str, user_id: &str) -> Result<EntryIdentity, String> {
    check_id("event_id", event_id)?;
    check_id("user_id", user_id)?;
    let parsed = Uuid::parse_str(entry_id).map_err(|_| format!("entry_id {entry_id:?} is not a UUID"))?;
    if parsed.hyphenated().to_string() != entry_id {
        return Err(format!("entry_id {entry_id:?} is not in canonical form"));
    }
    Ok(EntryIdentity { event_id: event_id.to_string(), entry_id: parsed, user_id: user_id.to_string() })
}

/// Checks one event or member id (the rules of [`check_identity`]).
pub fn check_id(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(format!("{field} is longer than {MAX_ID_CHARS} characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}' | '|')) {
        return Err(format!("{field} {value:?} has white space or one of {{ }} |"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "0190f5a0-7c1e-7a2b-9c3d-4e5f60718293";

    #[test]
    fn a_well_formed_identity_passes() {
        let id = check_identity("ev-1", ENTRY, "m0000001").unwrap();
        assert_eq!(id.entry_id.to_string(), ENTRY);
    }

    #[test]
    fn blank_padded_or_braced_ids_are_refused() {
        for (event, user) in [("", "m"), ("ev", ""), ("ev", " "), ("ev", "m 1"), ("e{v}", "m"), ("ev", "m|1")] {
            assert!(check_identity(event, ENTRY, user).is_err(), "{event:?} {user:?}");
        }
        assert!(check_identity(&"e".repeat(MAX_ID_CHARS + 1), ENTRY, "m").is_err());
    }

    #[test]
    fn entry_ids_must_be_canonical_uuids() {
        assert!(check_identity("ev", "not-a-uuid", "m").is_err());
        assert!(check_identity("ev", &ENTRY.to_uppercase(), "m").is_err());
        assert!(check_identity("ev", &ENTRY.replace('-', ""), "m").is_err());
    }
}
