//! The faults the simulator injects, as a real provider sandbox would.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What goes wrong, and how often. Rates are probabilities in `0..=1`,
/// rolled once per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Base latency added to every provider call.
    pub latency_ms: u64,
    /// Extra random latency, uniform in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// `POST /v1/gifts` answers 503 **before** issuing anything.
    pub transient_failure_rate: f64,
    /// `POST /v1/gifts` issues the gift, then holds the response for
    /// `hang_ms`: the client times out without knowing it was issued.
    pub timeout_after_issue_rate: f64,
    /// How long a held response is held.
    pub hang_ms: u64,
    /// `GET /v1/gifts/{key}` answers 503 (the lookup itself fails).
    pub lookup_failure_rate: f64,
    /// Phones the provider refuses for good: 422 `phone_refused`.
    pub refused_phones: Vec<String>,
    /// Phones ending with one of these are refused too.
    pub refused_phone_suffixes: Vec<String>,
    /// Provider calls accepted per second; beyond it 429 with `Retry-After`.
    pub rate_limit_per_sec: Option<u32>,
    /// A 200/201 to `POST /v1/gifts` or a 200 to a lookup carries another
    /// key's gift (a provider bug, a mixed-up cache); the caller's own gift
    /// is issued all the same.
    pub wrong_key_rate: f64,
    /// A 200/201 to `POST /v1/gifts` or a 200 to a lookup has a body that is
    /// not JSON; the caller's gift is issued all the same.
    pub malformed_rate: f64,
    /// `POST /v1/gifts` issues the gift, then breaks the connection before
    /// the answer completes (the caller cannot tell what happened).
    pub reset_after_issue_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            jitter_ms: 0,
            transient_failure_rate: 0.0,
            timeout_after_issue_rate: 0.0,
            hang_ms: 10_000,
            lookup_failure_rate: 0.0,
            refused_phones: Vec::new(),
            refused_phone_suffixes: Vec::new(),
            rate_limit_per_sec: None,
            wrong_key_rate: 0.0,
            malformed_rate: 0.0,
            reset_after_issue_rate: 0.0,
        }
    }
}

impl Faults {
    /// Rates must be probabilities and a rate limit must let something through.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("transient_failure_rate", self.transient_failure_rate),
            ("timeout_after_issue_rate", self.timeout_after_issue_rate),
            ("lookup_failure_rate", self.lookup_failure_rate),
            ("wrong_key_rate", self.wrong_key_rate),
            ("malformed_rate", self.malformed_rate),
            ("reset_after_issue_rate", self.reset_after_issue_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0..=1, got {rate}"));
            }
        }
        if self.rate_limit_per_sec == Some(0) {
            return Err("rate_limit_per_sec must be > 0 (omit it for no limit)".into());
        }
        if self.refused_phone_suffixes.iter().any(String::is_empty) {
            return Err("an empty refused_phone_suffixes entry would refuse every phone".into());
        }
        Ok(())
    }

    /// A copy fit for logs: refused phone numbers masked
    /// (`platform::redact::phone`), suffixes kept (they name no one).
    pub fn for_logs(&self) -> Faults {
        Faults {
            refused_phones: self.refused_phones.iter().map(|p| platform::redact::phone(p)).collect(),
            ..self.clone()
        }
    }

    /// Whether the provider refuses to send to `phone`.
    pub fn refuses(&self, phone: &str) -> bool {
        self.refused_phones.iter().any(|p| p == phone)
            || self.refused_phone_suffixes.iter().any(|s| phone.ends_with(s.as_str()))
    }

    pub fn hang(&self) -> Duration {
        Duration::from_millis(self.hang_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_is_refused_by_exact_match_or_suffix() {
        let faults = Faults {
            refused_phones: vec!["010-1111-2222".into()],
            refused_phone_suffixes: vec!["9999".into()],
            ..Faults::default()
        };
        assert!(faults.refuses("010-1111-2222"));
        assert!(faults.refuses("010-0000-9999"));
        assert!(!faults.refuses("010-1111-2223"));
    }

    #[test]
    fn rates_outside_zero_to_one_are_rejected() {
        let faults = Faults { transient_failure_rate: 1.5, ..Faults::default() };
        assert!(faults.validate().is_err());
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn the_hostile_answer_rates_are_checked_too() {
        for faults in [
            Faults { wrong_key_rate: -0.1, ..Faults::default() },
            Faults { malformed_rate: 2.0, ..Faults::default() },
            Faults { reset_after_issue_rate: 1.01, ..Faults::default() },
        ] {
            assert!(faults.validate().is_err(), "{faults:?}");
        }
    }

    #[test]
    fn an_empty_suffix_is_rejected() {
        let faults = Faults { refused_phone_suffixes: vec![String::new()], ..Faults::default() };
        assert!(faults.validate().is_err());
    }

    #[test]
    fn unknown_fault_names_are_rejected() {
        let parsed: Result<Faults, _> = serde_json::from_str(r#"{"transient_rate": 0.5}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn missing_fault_fields_take_their_defaults() {
        let parsed: Faults = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(parsed, Faults { latency_ms: 5, ..Faults::default() });
    }
}
