//! Typed values of the Avro schemas in `schemas/avro/`.
//!
//! Field names match the schemas exactly; serde maps them both ways. Every
//! event is keyed by `user_id`, so one member's records stay in order on one
//! partition.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::topics::Topics;

/// What every event type tells the codec and the producers.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The Avro schema text, registered under the topic's value subject.
    const SCHEMA: &'static str;
    /// The record's full name, for logs and dead-letter headers.
    const NAME: &'static str;
    /// The topic this event type is published on.
    fn topic(topics: &Topics) -> &str;
    /// The Kafka key: the member, so their records stay ordered.
    fn key(&self) -> &str;
    /// The entry this event is about, the id consumers dedupe on.
    fn entry_id(&self) -> &str;
    /// When it happened (ms since the epoch): the record's timestamp, which
    /// a stage reading in time order merges partitions by (for an entry the
    /// accept time, the FCFS order key).
    fn occurred_at_ms(&self) -> i64;
}

/// One answer of the survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyAnswer {
    pub question: String,
    pub answer: String,
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub channel: String,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// A member's entry. Produced by ingest after the first-entry mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveySubmitted {
    pub event_id: String,
    pub entry_id: String,
    pub user_id: String,
    pub answers: Vec<SurveyAnswer>,
    pub submitted_at: i64,
    pub accepted_at: i64,
    /// The entry's place in line (1, 2, …), the FCFS order key; 0 when the
    /// producer gave none (the stock stage then tickets it). Defaulted, so
    /// records written before tickets existed still decode.
    #[serde(default)]
    pub ticket: i64,
    pub client: ClientInfo,
}

/// The stock decision's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// A unit was taken for this entry.
    Won,
    /// No unit left when the entry was decided.
    SoldOut,
    /// The member already holds a unit from another entry.
    AlreadyWon,
    /// The member is not eligible (did not buy the product, or unknown event).
    Ineligible,
    /// The event was closed (past close_at, or closed by an operator).
    Closed,
}

impl Outcome {
    /// Whether a decision with this outcome replaces `current`, already known
    /// for the same entry id. Decisions are facts and the first one stands,
    /// with one exception: the waitlist promotion. An entry decided SOLD_OUT is
    /// later given a returned unit under the same entry id (a WON) and moves
    /// lost → won. Never the reverse: a SOLD_OUT read after the WON (two stock
    /// instances' records can reach the log in either order) changes nothing,
    /// so whoever folds the log (the recorder, the stock stage's rebuild) gets
    /// the same answer whatever the order.
    pub fn supersedes(self, current: Outcome) -> bool {
        current == Outcome::SoldOut && self == Outcome::Won
    }

    /// The Avro symbol, also used in the database and in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Won => "WON",
            Outcome::SoldOut => "SOLD_OUT",
            Outcome::AlreadyWon => "ALREADY_WON",
            Outcome::Ineligible => "INELIGIBLE",
            Outcome::Closed => "CLOSED",
        }
    }

    /// Parses an Avro symbol; `None` for anything else.
    pub fn parse(symbol: &str) -> Option<Self> {
        [Outcome::Won, Outcome::SoldOut, Outcome::AlreadyWon, Outcome::Ineligible, Outcome::Closed]
            .into_iter()
            .find(|o| o.as_str() == symbol)
    }
}

/// The stock group's answer to one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockDecision {
    pub event_id: String,
    pub entry_id: String,
    pub user_id: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub unit_no: Option<i32>,
    pub decided_at: i64,
    #[serde(default)]
    pub accepted_at: i64,
    /// The place in line the decision was made on; 0 in records written
    /// before tickets existed.
    #[serde(default)]
    pub ticket: i64,
}

/// How a gift dispatch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DispatchStatus {
    Sent,
    Failed,
    /// The payout guard refused the WON: nothing was sent and no unit goes
    /// back (the refusal says the unit was not this entry's). Announced so
    /// the member is told, never left "won".
    Refused,
}

impl DispatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchStatus::Sent => "SENT",
            DispatchStatus::Failed => "FAILED",
            DispatchStatus::Refused => "REFUSED",
        }
    }
}

/// The final outcome of sending one won gift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftDispatch {
    pub event_id: String,
    pub entry_id: String,
    pub user_id: String,
    pub status: DispatchStatus,
    #[serde(default)]
    pub provider_ref: Option<String>,
    pub attempts: i32,
    #[serde(default)]
    pub reason: Option<String>,
    pub dispatched_at: i64,
}

/// Compensation: a won unit goes back to stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRelease {
    pub event_id: String,
    pub entry_id: String,
    pub user_id: String,
    pub unit_no: i32,
    pub reason: String,
    pub released_at: i64,
}

macro_rules! event_impl {
    ($ty:ty, $file:literal, $name:literal, $topic:ident, $at:ident) => {
        impl Event for $ty {
            const SCHEMA: &'static str = include_str!(concat!("../avro/", $file));
            const NAME: &'static str = $name;
            fn topic(topics: &Topics) -> &str {
                &topics.$topic
            }
            fn key(&self) -> &str {
                &self.user_id
            }
            fn entry_id(&self) -> &str {
                &self.entry_id
            }
            fn occurred_at_ms(&self) -> i64 {
                self.$at
            }
        }
    };
}

event_impl!(
    SurveySubmitted,
    "survey_submitted.avsc",
    "dev.firstcome.events.SurveySubmitted",
    survey_submitted,
    accepted_at
);
event_impl!(StockDecision, "stock_decision.avsc", "dev.firstcome.events.StockDecision", stock_decided, decided_at);
event_impl!(GiftDispatch, "gift_dispatch.avsc", "dev.firstcome.events.GiftDispatch", gift_dispatched, dispatched_at);
event_impl!(StockRelease, "stock_release.avsc", "dev.firstcome.events.StockRelease", stock_released, released_at);

/// Every schema with the topic it belongs to: what `firstcome schemas register` registers.
pub fn all_schemas(topics: &Topics) -> Vec<(&str, &'static str, &'static str)> {
    vec![
        (topics.survey_submitted.as_str(), SurveySubmitted::NAME, SurveySubmitted::SCHEMA),
        (topics.stock_decided.as_str(), StockDecision::NAME, StockDecision::SCHEMA),
        (topics.gift_dispatched.as_str(), GiftDispatch::NAME, GiftDispatch::SCHEMA),
        (topics.stock_released.as_str(), StockRelease::NAME, StockRelease::SCHEMA),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{from_value, to_value, Schema};

    fn sample_entry() -> SurveySubmitted {
        SurveySubmitted {
            event_id: "ev".into(),
            entry_id: "e1".into(),
            user_id: "u1".into(),
            answers: vec![SurveyAnswer { question: "q1".into(), answer: "5".into() }],
            submitted_at: 1_700_000_000_000,
            accepted_at: 1_700_000_000_001,
            client: ClientInfo { channel: "web".into(), user_agent: None },
            ticket: 0,
        }
    }

    /// Serialises through Avro values against the real schema, both ways.
    fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E) {
        let schema = Schema::parse_str(E::SCHEMA).expect("schema parses");
        let value = to_value(event).expect("to value").resolve(&schema).expect("fits schema");
        let back: E = from_value(&value).expect("from value");
        assert_eq!(&back, event);
    }

    #[test]
    fn every_event_fits_its_schema_both_ways() {
        round_trip(&sample_entry());
        round_trip(&StockDecision {
            event_id: "ev".into(),
            entry_id: "e1".into(),
            user_id: "u1".into(),
            outcome: Outcome::SoldOut,
            unit_no: None,
            decided_at: 1,
            accepted_at: 2,
            ticket: 0,
        });
        round_trip(&StockDecision {
            event_id: "ev".into(),
            entry_id: "e1".into(),
            user_id: "u1".into(),
            outcome: Outcome::Won,
            unit_no: Some(7),
            decided_at: 1,
            accepted_at: 2,
            ticket: 0,
        });
        round_trip(&GiftDispatch {
            event_id: "ev".into(),
            entry_id: "e1".into(),
            user_id: "u1".into(),
            status: DispatchStatus::Failed,
            provider_ref: None,
            attempts: 3,
            reason: Some("phone refused".into()),
            dispatched_at: 9,
        });
        round_trip(&StockRelease {
            event_id: "ev".into(),
            entry_id: "e1".into(),
            user_id: "u1".into(),
            unit_no: 4,
            reason: "phone refused".into(),
            released_at: 9,
        });
    }

    #[test]
    fn outcome_symbols_parse_back() {
        for o in [Outcome::Won, Outcome::SoldOut, Outcome::AlreadyWon, Outcome::Ineligible, Outcome::Closed] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("MAYBE"), None);
    }

    #[test]
    fn events_are_keyed_by_member() {
        assert_eq!(sample_entry().key(), "u1");
    }
}
