//! Whether a member's phone can be sent to, decided with the provider's own
//! rule (provider-sim/CONTRACT.md: a phone that is empty once trimmed is a
//! malformed request, 400). Checking it here, before any provider call,
//! turns such a phone into a definite FAILED with its unit returned, instead
//! of a 400 the provider would give for this one gift.
//!
//! The provider trims with Unicode `White_Space` (Rust's `str::trim`), while
//! PostgreSQL's `btrim` trims only ASCII spaces: a phone made of U+2003 EM
//! SPACEs passed the old SQL filter and was then refused by the provider.

/// The definite failure reason when the replica has no phone for the member.
pub const NO_PHONE: &str = "no_phone";
/// The definite failure reason when the phone is one the provider refuses as malformed.
pub const INVALID_PHONE: &str = "invalid_phone";

/// Why no gift can be sent to a member's phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneProblem {
    /// No replica row, or an empty phone (what the SQL filter used to drop).
    Missing,
    /// A phone the provider would refuse as malformed (only whitespace).
    Invalid,
}

impl PhoneProblem {
    /// The reason recorded on the FAILED dispatch.
    pub fn reason(self) -> &'static str {
        match self {
            PhoneProblem::Missing => NO_PHONE,
            PhoneProblem::Invalid => INVALID_PHONE,
        }
    }
}

/// The phone to send to, as stored (the provider compares it byte for byte
/// on a replay, so it is never rewritten), or why there is none.
pub fn check(stored: Option<&str>) -> Result<&str, PhoneProblem> {
    let Some(phone) = stored else {
        return Err(PhoneProblem::Missing);
    };
    // Unchanged meaning of "no phone": empty or ASCII spaces only (`btrim`).
    if phone.trim_matches(' ').is_empty() {
        return Err(PhoneProblem::Missing);
    }
    // The provider's rule: empty once trimmed of any Unicode whitespace.
    if phone.trim().is_empty() {
        return Err(PhoneProblem::Invalid);
    }
    Ok(phone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_without_a_row_has_no_phone() {
        assert_eq!(check(None), Err(PhoneProblem::Missing));
    }

    #[test]
    fn an_empty_or_space_only_phone_is_no_phone() {
        assert_eq!(check(Some("")), Err(PhoneProblem::Missing));
        assert_eq!(check(Some("   ")), Err(PhoneProblem::Missing));
    }

    #[test]
    fn a_phone_of_unicode_whitespace_only_is_invalid() {
        for phone in ["\u{2003}\u{2003}", "\t\n", " \u{00a0} ", "\u{3000}", "\u{2028}"] {
            assert_eq!(check(Some(phone)), Err(PhoneProblem::Invalid), "{phone:?}");
        }
    }

    #[test]
    fn the_rule_agrees_with_the_providers() {
        // The provider answers 400 exactly when `phone.trim().is_empty()`.
        for phone in ["", " ", "\u{2003}", "010-1234-5678", " 010 ", "\u{2003}1"] {
            assert_eq!(check(Some(phone)).is_err(), phone.trim().is_empty(), "{phone:?}");
        }
    }

    #[test]
    fn a_usable_phone_is_kept_as_stored() {
        assert_eq!(check(Some(" 010-1234-5678 ")), Ok(" 010-1234-5678 "));
    }
}
