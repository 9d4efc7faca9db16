//! Invariant 3 from the log of record's side: every 202 entry is in
//! `survey-submitted`, has one decision in `stock-decided` (a promotion
//! folded by [`Outcome::supersedes`]), and the entries table holds it.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use platform::settings::{KafkaSettings, RegistrySettings};
use schemas::{Event, Outcome, StockDecision, SurveySubmitted};

use crate::error::AuditError;
use crate::ids::{canonical, sample};
use crate::report::Check;
use crate::stores::Stores;
use crate::won_ends::{one_decision, standing, Folded};
use crate::Accepted;

/// What the log of record says about an event's entries (the chaos suite's
/// reading of Kafka): invariant 3 from the log's side — every 202 entry is
/// in `survey-submitted` and has exactly one decision in `stock-decided`
/// (a SOLD_OUT followed by the WON of a waitlist promotion is one decision
/// superseded, as the recorder stores it), and the entries table holds that
/// decision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogTally {
    /// `survey-submitted` records of the event (a resumed entry may be there twice).
    pub submitted_records: usize,
    pub submitted_entries: usize,
    pub decision_records: usize,
    pub decided_entries: usize,
    /// Entries whose SOLD_OUT was superseded by a promotion's WON.
    pub promoted: usize,
    /// Entries with two different decisions that are not a promotion.
    pub conflicting: usize,
    /// 202 entries missing from `survey-submitted`.
    pub not_submitted: usize,
    /// 202 entries with no decision in the log.
    pub undecided: usize,
    /// 202 entries whose row's outcome differs from the log's last decision.
    pub table_disagrees: usize,
}

/// Reads `survey-submitted` and `stock-decided` (committed records, to
/// their high watermarks now) and checks the 202 entries against them and
/// against the entries table.
pub async fn check_log(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    stores: &Stores,
    event_id: &str,
    accepted: &[Accepted],
) -> Result<(LogTally, Check), AuditError> {
    let topics = kafka.topics();
    let mut tally = LogTally::default();
    let submitted: Vec<SurveySubmitted> =
        read_event(kafka, registry, &topics.survey_submitted, event_id, |e: &SurveySubmitted| &e.event_id).await?;
    tally.submitted_records = submitted.len();
    let submitted: HashSet<String> = submitted.iter().map(|e| canonical(&e.entry_id)).collect();
    tally.submitted_entries = submitted.len();

    let decided: Vec<StockDecision> =
        read_event(kafka, registry, &topics.stock_decided, event_id, |d: &StockDecision| &d.event_id).await?;
    tally.decision_records = decided.len();
    // entry → its distinct decisions, in log order.
    let mut decisions: HashMap<String, Vec<(Outcome, Option<i32>)>> = HashMap::new();
    for decision in &decided {
        let seen = decisions.entry(canonical(&decision.entry_id)).or_default();
        let this = (decision.outcome, decision.unit_no);
        if !seen.contains(&this) {
            seen.push(this);
        }
    }
    tally.decided_entries = decisions.len();
    let (last, conflicting) = fold(&decisions, &mut tally);

    let db = stores.db().await?;
    let outcomes: HashMap<String, Option<String>> = db
        .query("SELECT entry_id::text, outcome FROM event_entries WHERE event_id = $1", &[&event_id])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut not_submitted = BTreeSet::new();
    let mut undecided = BTreeSet::new();
    let mut disagrees = BTreeSet::new();
    let from_rush: BTreeSet<String> = accepted.iter().map(|a| canonical(&a.entry_id)).collect();
    for entry in &from_rush {
        if !submitted.contains(entry) {
            not_submitted.insert(entry.as_str());
        }
        match last.get(entry.as_str()) {
            None if !conflicting.contains(entry.as_str()) => {
                undecided.insert(entry.as_str());
            }
            Some(outcome) if outcomes.get(entry).cloned().flatten().as_deref() != Some(outcome.as_str()) => {
                disagrees.insert(entry.as_str());
            }
            _ => {}
        }
    }
    tally.not_submitted = not_submitted.len();
    tally.undecided = undecided.len();
    tally.table_disagrees = disagrees.len();
    let holds = not_submitted.is_empty() && undecided.is_empty() && disagrees.is_empty() && conflicting.is_empty();
    let detail = format!(
        "{} answered 202: in survey-submitted {}, decided once {}; {} records / {} entries in survey-submitted, {} decisions / {} entries in stock-decided ({} promoted){}{}{}{}",
        from_rush.len(),
        from_rush.len() - not_submitted.len(),
        from_rush.len() - undecided.len() - conflicting.iter().filter(|e| from_rush.contains(**e)).count(),
        tally.submitted_records,
        tally.submitted_entries,
        tally.decision_records,
        tally.decided_entries,
        tally.promoted,
        sample("; not in survey-submitted", &not_submitted),
        sample("; no decision", &undecided),
        sample("; conflicting decisions", &conflicting),
        sample("; entries table disagrees with the log", &disagrees),
    );
    Ok((tally, Check { name: "3 every 202 entry is in survey-submitted, decided once", holds, detail }))
}

/// Each entry's distinct decisions folded to its standing one; the entries
/// whose decisions conflict apart.
fn fold<'a>(
    decisions: &'a HashMap<String, Vec<(Outcome, Option<i32>)>>,
    tally: &mut LogTally,
) -> (HashMap<&'a str, Outcome>, BTreeSet<&'a str>) {
    let mut last = HashMap::new();
    let mut conflicting = BTreeSet::new();
    for (entry, seen) in decisions {
        match one_decision(seen) {
            Some(Folded::Once(outcome)) => {
                last.insert(entry.as_str(), outcome);
            }
            Some(Folded::Promoted) => {
                tally.promoted += 1;
                if let Some(outcome) = standing(seen.iter().map(|(outcome, _)| *outcome)) {
                    last.insert(entry.as_str(), outcome);
                }
            }
            None => {
                conflicting.insert(entry.as_str());
            }
        }
    }
    tally.conflicting = conflicting.len();
    (last, conflicting)
}

/// The committed events of `topic` up to its high watermarks now that belong
/// to `event_id`; records that do not decode (dead-letter material) are skipped.
async fn read_event<E: Event>(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    topic: &str,
    event_id: &str,
    event_of: impl Fn(&E) -> &String,
) -> Result<Vec<E>, AuditError> {
    let codec = registry.codec().map_err(|source| AuditError::Decode { topic: topic.to_string(), source })?;
    let client_id = format!("firstcome-audit-{}", uuid::Uuid::new_v4().simple());
    let mut reader =
        platform::kafka::LogReader::open(kafka, &client_id, &[topic]).await.map_err(|e| AuditError::kafka(kafka, e))?;
    let mut events = Vec::new();
    while let Some(record) = reader.next().await.map_err(|e| AuditError::kafka(kafka, e))? {
        let event: E = match codec.decode(rdkafka::Message::payload(&record)).await {
            Ok(event) => event,
            Err(schemas::CodecError::Poison(_)) => continue,
            Err(source) => return Err(AuditError::Decode { topic: topic.to_string(), source }),
        };
        if event_of(&event) == event_id {
            events.push(event);
        }
    }
    Ok(events)
}
