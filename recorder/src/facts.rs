//! What the recorder learns from records: each one decoded and checked into
//! an [`Observed`] fact, then a batch's facts merged into one [`EntryChanges`]
//! per entry, so each entry is touched once per statement.
//!
//! Decoding trusts no producer (docs/DESIGN.md, "Other producers"): a value that is
//! not the topic's record, or whose ids are unusable, is poison
//! ([`HandlerError::Poison`]) and goes to the dead-letter topic; a registry
//! that does not answer is not the record's fault
//! ([`HandlerError::Transient`]), so the whole batch is retried instead.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use platform::kafka::{HandlerError, Record};
use schemas::{Codec, DispatchStatus, GiftDispatch, Outcome, StockDecision, SurveySubmitted, Topics};
use uuid::Uuid;

/// Which entry a fact is about. Every event carries all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryKey {
    pub entry_id: Uuid,
    pub event_id: String,
    pub user_id: String,
}

/// The member's submission (`survey-submitted`).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// `[{question, answer}, …]` in the order given.
    pub answers: serde_json::Value,
    pub client_channel: String,
    pub submitted_at: DateTime<Utc>,
    pub accepted_at: DateTime<Utc>,
    /// The place in line ingest gave it (`None`: another producer's, without one).
    pub ticket: Option<i64>,
}

/// The stock group's answer (`stock-decided`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub unit_no: Option<i32>,
    pub decided_at: DateTime<Utc>,
    /// The place in line the stage decided on (`None` in older records).
    pub ticket: Option<i64>,
}

impl Decision {
    /// Whether this decision replaces `current`, already known for the same
    /// entry id: the first decision stands but for the waitlist promotion
    /// ([`Outcome::supersedes`]). `store::FILL_ENTRIES` applies the same rule
    /// to the stored row.
    pub fn supersedes(&self, current: &Decision) -> bool {
        self.outcome.supersedes(current.outcome)
    }
}

/// How sending the gift ended (`gift-dispatched`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub status: DispatchStatus,
    pub provider_ref: Option<String>,
    pub reason: Option<String>,
    pub dispatched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Submission(Submission),
    Decision(Decision),
    Dispatch(Dispatch),
}

impl Fact {
    /// The label used in metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Fact::Submission(_) => "submission",
            Fact::Decision(_) => "decision",
            Fact::Dispatch(_) => "dispatch",
        }
    }
}

/// One record, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub key: EntryKey,
    pub fact: Fact,
}

/// Decodes `record` by the topic it came from.
pub async fn decode(codec: &Codec, topics: &Topics, record: &Record) -> Result<Observed, HandlerError> {
    let topic = record.topic();
    if topic == topics.survey_submitted {
        let event: SurveySubmitted = codec.decode(record.payload()).await?;
        submission(event)
    } else if topic == topics.stock_decided {
        let event: StockDecision = codec.decode(record.payload()).await?;
        decision(event)
    } else if topic == topics.gift_dispatched {
        let event: GiftDispatch = codec.decode(record.payload()).await?;
        dispatch(event)
    } else {
        // Only reachable if the subscription and `topics` disagree.
        Err(HandlerError::poison(format!("unexpected topic {topic}")))
    }
}

/// Checks a submission and converts its fields to column values.
pub fn submission(event: SurveySubmitted) -> Result<Observed, HandlerError> {
    let key = key_of(&event.entry_id, &event.event_id, &event.user_id)?;
    // PostgreSQL's jsonb refuses NUL; other producers may send it. The entry
    // must still be recorded, so NUL becomes U+FFFD rather than a dead letter.
    let answers: Vec<schemas::SurveyAnswer> = event
        .answers
        .iter()
        .map(|a| schemas::SurveyAnswer {
            question: a.question.replace('\0', "\u{FFFD}"),
            answer: a.answer.replace('\0', "\u{FFFD}"),
        })
        .collect();
    let answers =
        serde_json::to_value(&answers).map_err(|e| HandlerError::poison(format!("answers do not serialise: {e}")))?;
    Ok(Observed {
        key,
        fact: Fact::Submission(Submission {
            answers,
            client_channel: event.client.channel,
            submitted_at: timestamp("submitted_at", event.submitted_at)?,
            accepted_at: timestamp("accepted_at", event.accepted_at)?,
            ticket: (event.ticket > 0).then_some(event.ticket),
        }),
    })
}

/// Checks a decision and converts its fields to column values.
pub fn decision(event: StockDecision) -> Result<Observed, HandlerError> {
    let key = key_of(&event.entry_id, &event.event_id, &event.user_id)?;
    Ok(Observed {
        key,
        fact: Fact::Decision(Decision {
            outcome: event.outcome,
            unit_no: event.unit_no,
            decided_at: timestamp("decided_at", event.decided_at)?,
            ticket: (event.ticket > 0).then_some(event.ticket),
        }),
    })
}

/// Checks a dispatch and converts its fields to column values.
pub fn dispatch(event: GiftDispatch) -> Result<Observed, HandlerError> {
    let key = key_of(&event.entry_id, &event.event_id, &event.user_id)?;
    Ok(Observed {
        key,
        fact: Fact::Dispatch(Dispatch {
            status: event.status,
            provider_ref: event.provider_ref,
            reason: event.reason,
            dispatched_at: timestamp("dispatched_at", event.dispatched_at)?,
        }),
    })
}

/// The entry's ids, by the check every consumer shares
/// ([`schemas::check_identity`]): an entry id that is not a canonical UUID,
/// or an event or member id that is blank, too long or carries white space or
/// `{ } |`, is poison here exactly as it is for the stock group — otherwise
/// the recorder would keep an entry "pending" that the stock group refused.
fn key_of(entry_id: &str, event_id: &str, user_id: &str) -> Result<EntryKey, HandlerError> {
    let identity = schemas::check_identity(event_id, entry_id, user_id).map_err(HandlerError::poison)?;
    Ok(EntryKey { entry_id: identity.entry_id, event_id: identity.event_id, user_id: identity.user_id })
}

fn timestamp(field: &str, millis: i64) -> Result<DateTime<Utc>, HandlerError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| HandlerError::poison(format!("{field} {millis} is out of range")))
}

/// Everything a batch says about one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryChanges {
    /// From the first record of the entry in the batch.
    pub key: EntryKey,
    pub submission: Option<Submission>,
    pub decision: Option<Decision>,
    pub dispatch: Option<Dispatch>,
}

/// A stock movement a batch asks for: a WON decision issues a unit, a FAILED
/// dispatch returns it (its unit number is looked up from the entry if this
/// batch does not carry the decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub entry_id: Uuid,
    pub kind: MovementKind,
    pub event_id: String,
    pub unit_no: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MovementKind {
    Issued,
    Returned,
}

impl MovementKind {
    /// The `stock_movements.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Issued => "issued",
            MovementKind::Returned => "returned",
        }
    }
}

impl EntryChanges {
    fn new(key: EntryKey) -> Self {
        Self { key, submission: None, decision: None, dispatch: None }
    }

    /// Adds a fact; the first of each kind wins, like the columns in the
    /// database (a redelivery repeats the same values anyway), except a
    /// decision that [supersedes](Decision::supersedes) the one held.
    fn absorb(&mut self, fact: Fact) {
        match fact {
            Fact::Submission(s) => {
                self.submission.get_or_insert(s);
            }
            Fact::Decision(d) => match &self.decision {
                Some(current) if !d.supersedes(current) => {}
                _ => self.decision = Some(d),
            },
            Fact::Dispatch(d) => {
                self.dispatch.get_or_insert(d);
            }
        }
    }

    /// The stock movements these changes imply.
    pub fn movements(&self) -> impl Iterator<Item = Movement> + '_ {
        let issued = self
            .decision
            .as_ref()
            .filter(|d| d.outcome == Outcome::Won)
            .map(|d| self.movement(MovementKind::Issued, d.unit_no));
        let returned = self
            .dispatch
            .as_ref()
            .filter(|d| d.status == DispatchStatus::Failed)
            .map(|_| self.movement(MovementKind::Returned, self.decision.as_ref().and_then(|d| d.unit_no)));
        issued.into_iter().chain(returned)
    }

    fn movement(&self, kind: MovementKind, unit_no: Option<i32>) -> Movement {
        Movement { entry_id: self.key.entry_id, kind, event_id: self.key.event_id.clone(), unit_no }
    }
}

/// Merges a batch's facts into one change set per entry, in the order each
/// entry first appears. Two entry ids of one member are two change sets
/// (one row each); records of one entry on one topic share a key, hence a
/// partition, so "the first wins" means the first produced.
pub fn merge(observed: impl IntoIterator<Item = Observed>) -> Vec<EntryChanges> {
    let mut changes: Vec<EntryChanges> = Vec::new();
    let mut position: HashMap<Uuid, usize> = HashMap::new();
    for Observed { key, fact } in observed {
        let index = *position.entry(key.entry_id).or_insert_with(|| {
            changes.push(EntryChanges::new(key));
            changes.len() - 1
        });
        changes[index].absorb(fact);
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{ClientInfo, SurveyAnswer};

    fn entry(entry_id: &str) -> SurveySubmitted {
        SurveySubmitted {
            event_id: "ev".into(),
            entry_id: entry_id.into(),
            user_id: "u1".into(),
            answers: vec![SurveyAnswer { question: "q1".into(), answer: "5".into() }],
            submitted_at: 1_700_000_000_000,
            accepted_at: 1_700_000_000_001,
            client: ClientInfo { channel: "web".into(), user_agent: None },
            ticket: 0,
        }
    }

    fn decided(entry_id: Uuid, outcome: Outcome, unit_no: Option<i32>, at: i64) -> Observed {
        decision(StockDecision {
            event_id: "ev".into(),
            entry_id: entry_id.to_string(),
            user_id: "u1".into(),
            outcome,
            unit_no,
            decided_at: at,
            accepted_at: 0,
            ticket: 0,
        })
        .unwrap()
    }

    fn failed(entry_id: Uuid) -> Observed {
        dispatch(GiftDispatch {
            event_id: "ev".into(),
            entry_id: entry_id.to_string(),
            user_id: "u1".into(),
            status: DispatchStatus::Failed,
            provider_ref: None,
            attempts: 3,
            reason: Some("refused".into()),
            dispatched_at: 5,
        })
        .unwrap()
    }

    #[test]
    fn an_entry_id_that_is_not_a_uuid_is_poison() {
        assert!(matches!(submission(entry("not-a-uuid")), Err(HandlerError::Poison(_))));
    }

    #[test]
    fn an_empty_event_id_is_poison() {
        let mut event = entry(&Uuid::new_v4().to_string());
        event.event_id.clear();
        assert!(matches!(submission(event), Err(HandlerError::Poison(_))));
    }

    #[test]
    fn a_blank_or_padded_user_id_is_poison_as_for_the_stock_group() {
        for user_id in [" ", "u 1", " u1", "u|1", "{u1}"] {
            let mut event = entry(&Uuid::new_v4().to_string());
            event.user_id = user_id.into();
            assert!(matches!(submission(event), Err(HandlerError::Poison(_))), "{user_id:?} accepted");
        }
    }

    #[test]
    fn a_non_canonical_entry_id_is_poison() {
        let id = Uuid::new_v4().to_string();
        for spelling in [id.to_uppercase(), id.replace('-', ""), format!("{{{id}}}")] {
            assert!(matches!(submission(entry(&spelling)), Err(HandlerError::Poison(_))), "{spelling:?} accepted");
        }
    }

    #[test]
    fn a_timestamp_out_of_range_is_poison() {
        let mut event = entry(&Uuid::new_v4().to_string());
        event.accepted_at = i64::MAX;
        assert!(matches!(submission(event), Err(HandlerError::Poison(_))));
    }

    #[test]
    fn nul_in_answers_is_replaced_not_refused() {
        let mut event = entry(&Uuid::new_v4().to_string());
        event.answers = vec![SurveyAnswer { question: "q\0".into(), answer: "a\0b".into() }];
        let Fact::Submission(s) = submission(event).unwrap().fact else { panic!("not a submission") };
        assert_eq!(s.answers, serde_json::json!([{ "question": "q\u{FFFD}", "answer": "a\u{FFFD}b" }]));
    }

    #[test]
    fn a_submission_keeps_its_answers_in_order_as_json() {
        let id = Uuid::new_v4();
        let observed = submission(entry(&id.to_string())).unwrap();
        assert_eq!(observed.key, EntryKey { entry_id: id, event_id: "ev".into(), user_id: "u1".into() });
        let Fact::Submission(s) = observed.fact else { panic!("not a submission") };
        assert_eq!(s.answers, serde_json::json!([{ "question": "q1", "answer": "5" }]));
        assert_eq!(s.accepted_at.timestamp_millis(), 1_700_000_000_001);
    }

    #[test]
    fn registry_outages_are_retried_and_bad_bytes_dead_lettered() {
        use schemas::CodecError;
        assert!(matches!(HandlerError::from(CodecError::Unavailable("down".into())), HandlerError::Transient(_)));
        assert!(matches!(HandlerError::from(CodecError::Poison("bad".into())), HandlerError::Poison(_)));
    }

    #[test]
    fn duplicates_in_a_batch_collapse_to_one_change_per_entry_first_wins() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let merged = merge([
            decided(a, Outcome::Won, Some(1), 10),
            decided(b, Outcome::SoldOut, None, 11),
            decided(a, Outcome::Won, Some(1), 99),
            submission(entry(&a.to_string())).unwrap(),
        ]);
        assert_eq!(merged.len(), 2);
        let first = merged.iter().find(|c| c.key.entry_id == a).unwrap();
        assert_eq!(first.decision.as_ref().unwrap().decided_at.timestamp_millis(), 10);
        assert!(first.submission.is_some());
        let ids: Vec<Uuid> = merged.iter().map(|c| c.key.entry_id).collect();
        assert_eq!(ids, vec![a, b], "changes come in first-seen order");
    }

    #[test]
    fn a_won_decision_issues_and_a_failed_dispatch_returns_the_same_unit() {
        let a = Uuid::new_v4();
        let merged = merge([decided(a, Outcome::Won, Some(4), 1), failed(a)]);
        let moves: Vec<Movement> = merged[0].movements().collect();
        assert_eq!(moves.len(), 2);
        assert_eq!((moves[0].kind, moves[0].unit_no), (MovementKind::Issued, Some(4)));
        assert_eq!((moves[1].kind, moves[1].unit_no), (MovementKind::Returned, Some(4)));
    }

    #[test]
    fn a_won_after_sold_out_promotes_the_entry_in_either_order() {
        let a = Uuid::new_v4();
        for batch in [
            [decided(a, Outcome::SoldOut, None, 1), decided(a, Outcome::Won, Some(7), 2)],
            [decided(a, Outcome::Won, Some(7), 2), decided(a, Outcome::SoldOut, None, 1)],
        ] {
            let merged = merge(batch);
            let decision = merged[0].decision.as_ref().unwrap();
            assert_eq!((decision.outcome, decision.unit_no), (Outcome::Won, Some(7)));
            let moves: Vec<Movement> = merged[0].movements().collect();
            assert_eq!(moves.len(), 1);
            assert_eq!((moves[0].kind, moves[0].unit_no), (MovementKind::Issued, Some(7)));
        }
    }

    #[test]
    fn only_a_won_supersedes_and_only_a_sold_out() {
        let at = DateTime::from_timestamp_millis(0).unwrap();
        let d = |outcome| Decision { outcome, unit_no: None, decided_at: at, ticket: None };
        assert!(d(Outcome::Won).supersedes(&d(Outcome::SoldOut)));
        for (new, current) in [
            (Outcome::SoldOut, Outcome::Won),
            (Outcome::Won, Outcome::AlreadyWon),
            (Outcome::Won, Outcome::Closed),
            (Outcome::Won, Outcome::Ineligible),
            (Outcome::AlreadyWon, Outcome::SoldOut),
            (Outcome::Won, Outcome::Won),
        ] {
            assert!(!d(new).supersedes(&d(current)), "{new:?} over {current:?}");
        }
    }

    #[test]
    fn a_lost_decision_moves_no_stock() {
        let merged = merge([decided(Uuid::new_v4(), Outcome::SoldOut, None, 1)]);
        assert_eq!(merged[0].movements().count(), 0);
    }
}
