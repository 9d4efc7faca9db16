//! Redis forgets, the log remembers: one event's stock state rebuilt from
//! `survey-submitted`, `stock-decided` and `stock-released` (read_committed)
//! and swapped in atomically (docs/DESIGN.md, "Defence in depth").
//!
//! What is rebuilt, per event (key layout in `platform::event_keys`):
//! - `decisions`: the first decision of every entry, or its waitlist
//!   promotion (a WON of an entry decided SOLD_OUT), whichever order the two
//!   reached the log in: two stock instances' transactions interleave.
//! - `winners`, `members`: each member's unit and first decided entry.
//! - `released`, `free_units`, `next_unit`, `stock`: a unit is held while it
//!   was won more often than it was returned by an applied release; `stock`
//!   is `for_sale` minus the units held.
//! - `waitlist`: first entries decided SOLD_OUT whose member holds no unit.
//! - `entered`, `entries`: the first-entry marks of every entry in the log,
//!   merged with the live ones (an in-flight admission keeps its mark).
//! - `applied`: the marks the stock stage committed with its offsets (see
//!   [`crate::marks`]), or the live ones where those are higher.
//! - `promoted` is emptied: it lets a release replayed after an aborted
//!   transaction repeat its promotion, and only releases below the committed
//!   offsets count as applied here, which are never replayed.
//!
//! Consistency: the committed marks of the event are read before and after
//! the topics; if a batch touching the event committed in between, the read
//! starts again. The swap is a compare-and-swap on the live `applied` hash,
//! so a decision written to Redis during the read fails the swap (and the
//! rebuild reads again) instead of being forgotten. When the stock stage
//! rebuilds because its script answered STALE, every instance deciding the
//! event is held by the same check, so the first attempt swaps.
//!
//! Releases count as applied only below the stock group's committed offset
//! of their partition, so a release still to be applied (and its waitlist
//! promotion) is done by the stage afterwards, exactly once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use platform::event_keys::{EventKeys, EventMeta, STATE_CHANNEL};
use platform::kafka::LogReader;
use platform::settings::KafkaSettings;
use rdkafka::message::Message;
use platform::redis::Connection as ConnectionManager;
use redis::Script;
use schemas::{Codec, Outcome, StockDecision, StockRelease, SurveySubmitted, Topics};

use crate::marks::{CommittedMarks, MarkKind, MarkReader};

/// Attempts before giving up while the event keeps moving under the read.
const MAX_ATTEMPTS: usize = 10;
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Temporary keys outlive a crashed rebuild by this much, no more.
const TEMP_TTL_MS: u64 = 10 * 60 * 1000;
/// Hash fields written per HSET command.
const CHUNK: usize = 2_000;

/// Why a rebuild did not finish; nothing was swapped in.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("schema registry unavailable: {0}")]
    Registry(#[source] schemas::CodecError),
    #[error("event {0} has no meta in Redis: recreate it from PostgreSQL first (`firstcome rebuild redis` does)")]
    UnknownEvent(String),
    #[error("event {event_id} kept moving during {attempts} rebuild attempts")]
    KeptMoving { event_id: String, attempts: usize },
    #[error("unexpected swap answer: {0}")]
    Unexpected(String),
}

/// What a rebuild found and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    pub event_id: String,
    /// Read attempts (more than one when the event moved during a read).
    pub attempts: usize,
    /// Records of the event read per topic.
    pub entries_in_log: usize,
    pub decisions_in_log: usize,
    pub releases_applied: usize,
    /// What Redis held before the swap and after it.
    pub decisions_before: usize,
    pub decisions_after: usize,
    pub winners_before: usize,
    pub winners_after: usize,
    pub stock_before: Option<i64>,
    pub stock_after: i64,
    pub units_held: usize,
    pub free_units: usize,
    pub waitlist: usize,
    pub status_after: String,
}

/// One event's state as the log tells it.
#[derive(Debug, Default)]
struct LogState {
    /// (entry id, member) of every entry of the event, in log order.
    entries: Vec<(String, String)>,
    /// (member, entry id) of each member's first entry in the log.
    first_entries: Vec<(String, String)>,
    /// entry id → (member, outcome, unit, accepted_at): the first decision, or the promotion.
    decisions: HashMap<String, (String, Outcome, Option<i32>, i64)>,
    /// member → first decided entry id.
    members: HashMap<String, String>,
    /// Applied releases: entry id → unit.
    released: BTreeMap<String, i32>,
}

impl LogState {
    /// Takes a decision read from `stock-decided`: an entry's first decision
    /// stands, but for the waitlist promotion ([`Outcome::supersedes`]), in
    /// whichever order the two reached the log.
    fn decided(&mut self, decision: StockDecision) {
        self.members.entry(decision.user_id.clone()).or_insert_with(|| decision.entry_id.clone());
        let taken = (decision.user_id, decision.outcome, decision.unit_no, decision.accepted_at);
        match self.decisions.entry(decision.entry_id) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(taken);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                if decision.outcome.supersedes(slot.get().1) {
                    slot.insert(taken);
                }
            }
        }
    }
}

/// The keys computed from [`LogState`], ready to be written.
#[derive(Debug, Default)]
struct Rebuilt {
    decisions: Vec<(String, String)>,
    winners: Vec<(String, String)>,
    members: Vec<(String, String)>,
    released: Vec<String>,
    free_units: Vec<i32>,
    next_unit: i32,
    units_held: usize,
    waitlist: Vec<(i64, String)>,
    entered: Vec<(String, String)>,
    entries: Vec<(String, String)>,
}

/// Rebuilds events of one deployment (its topics and its stock group).
pub struct Rebuilder {
    kafka: KafkaSettings,
    topics: Topics,
    codec: Codec,
    redis: ConnectionManager,
    marks: MarkReader,
    swap: Script,
}

impl std::fmt::Debug for Rebuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuilder").finish_non_exhaustive()
    }
}

impl Rebuilder {
    /// `group` is the stock group whose committed marks say what was applied.
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        codec: Codec,
        redis: ConnectionManager,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            kafka: kafka.clone(),
            topics: kafka.topics(),
            codec,
            redis,
            marks: MarkReader::new(kafka, group)?,
            swap: platform::scripts::rebuild_swap(),
        })
    }

    /// Rebuilds `event_id` from the log and swaps it in; reads again while
    /// the event moves under the read.
    pub async fn rebuild_event(&self, event_id: &str) -> Result<RebuildReport, RebuildError> {
        let keys = EventKeys::new(event_id);
        let mut conn = self.redis.clone();
        let meta = EventMeta::load(&mut conn, event_id).await?.ok_or_else(|| RebuildError::UnknownEvent(event_id.into()))?;
        for attempt in 1..=MAX_ATTEMPTS {
            let before = self.marks.fetch().await?;
            let expected_before = before.expected_for(event_id);
            let state = self.read_log(event_id, &before).await?;
            let live_applied: HashMap<String, i64> = redis::cmd("HGETALL").arg(&keys.applied).query_async(&mut conn).await?;
            let after = self.marks.fetch().await?;
            if after.expected_for(event_id) != expected_before {
                tracing::info!(event_id, attempt, "a batch of the event committed during the read; reading again");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            let rebuilt = compute(&state);
            let mut applied: HashMap<String, i64> = expected_before.into_iter().collect();
            for (name, live) in &live_applied {
                let mark = applied.entry(name.clone()).or_insert(*live);
                *mark = (*mark).max(*live);
            }
            let stock_after = meta.for_sale - rebuilt.units_held as i64;
            let counts_before = self.counts(&keys).await?;
            self.write_temp(&keys, &rebuilt, &applied).await?;
            match self.swap_in(&keys, event_id, &live_applied, stock_after, rebuilt.next_unit).await? {
                Swap::Swapped { status } => {
                    let report = RebuildReport {
                        event_id: event_id.to_string(),
                        attempts: attempt,
                        entries_in_log: state.entries.len(),
                        decisions_in_log: state.decisions.len(),
                        releases_applied: state.released.len(),
                        decisions_before: counts_before.0,
                        decisions_after: rebuilt.decisions.len(),
                        winners_before: counts_before.1,
                        winners_after: rebuilt.winners.len(),
                        stock_before: counts_before.2,
                        stock_after,
                        units_held: rebuilt.units_held,
                        free_units: rebuilt.free_units.len(),
                        waitlist: rebuilt.waitlist.len(),
                        status_after: status,
                    };
                    tracing::warn!(?report, "event stock state rebuilt from the log");
                    metrics::counter!("firstcome_stock_rebuilds_total").increment(1);
                    return Ok(report);
                }
                Swap::Moved(field) => {
                    tracing::info!(event_id, attempt, %field, "the event was decided during the read; reading again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(RebuildError::KeptMoving { event_id: event_id.to_string(), attempts: MAX_ATTEMPTS })
    }

    /// Reads the three topics to their high watermarks and keeps `event_id`'s
    /// records. Undecodable or foreign records are skipped: the stage
    /// dead-lettered them and they changed nothing.
    async fn read_log(&self, event_id: &str, committed: &CommittedMarks) -> Result<LogState, RebuildError> {
        let topics = [
            self.topics.survey_submitted.as_str(),
            self.topics.stock_decided.as_str(),
            self.topics.stock_released.as_str(),
        ];
        // Under the stage's group name: its reader's (never joined) group id is
        // one the stock principal's ACLs cover (`<prefix>stock*`).
        let client_id = self.kafka.group(&format!("stock-rebuild-{}", uuid::Uuid::new_v4().simple()));
        let mut reader = LogReader::open(&self.kafka, &client_id, &topics).await?;
        let mut state = LogState::default();
        let mut first_entry: HashMap<String, String> = HashMap::new();
        // Releases are applied per partition in offset order; gathered first,
        // then checked against the decisions (which may come later in the read).
        let mut releases: Vec<StockRelease> = Vec::new();
        while let Some(message) = reader.next().await? {
            let payload = message.payload();
            let topic = message.topic();
            if topic == self.topics.survey_submitted {
                let Some(entry) = self.decode::<SurveySubmitted>(payload).await? else { continue };
                if entry.event_id == event_id && schemas::check_identity(&entry.event_id, &entry.entry_id, &entry.user_id).is_ok() {
                    if !first_entry.contains_key(&entry.user_id) {
                        first_entry.insert(entry.user_id.clone(), entry.entry_id.clone());
                    }
                    state.entries.push((entry.entry_id, entry.user_id));
                }
            } else if topic == self.topics.stock_decided {
                let Some(decision) = self.decode::<StockDecision>(payload).await? else { continue };
                if decision.event_id == event_id {
                    state.decided(decision);
                }
            } else if topic == self.topics.stock_released {
                // Applied by the stage only below its committed offset.
                let applied = committed
                    .committed_offset(MarkKind::Release, message.partition())
                    .is_some_and(|next| message.offset() < next);
                if !applied {
                    continue;
                }
                let Some(release) = self.decode::<StockRelease>(payload).await? else { continue };
                if release.event_id == event_id {
                    releases.push(release);
                }
            }
        }
        // The release script's own rule: only the entry that won the unit
        // returns it, once.
        for release in releases {
            let matches = state.decisions.get(&release.entry_id).is_some_and(|(member, outcome, unit, _)| {
                *member == release.user_id && *outcome == Outcome::Won && *unit == Some(release.unit_no)
            });
            if matches {
                state.released.entry(release.entry_id).or_insert(release.unit_no);
            }
        }
        state.first_entries = first_entry.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
        Ok(state)
    }

    async fn decode<E: schemas::Event>(&self, payload: Option<&[u8]>) -> Result<Option<E>, RebuildError> {
        match self.codec.decode::<E>(payload).await {
            Ok(event) => Ok(Some(event)),
            Err(error) if error.is_retriable() => Err(RebuildError::Registry(error)),
            Err(_) => Ok(None),
        }
    }

    /// (decisions, winners, stock) held now.
    async fn counts(&self, keys: &EventKeys) -> Result<(usize, usize, Option<i64>), RebuildError> {
        let mut conn = self.redis.clone();
        let (decisions, winners, stock): (usize, usize, Option<i64>) = redis::pipe()
            .cmd("HLEN").arg(&keys.decisions)
            .cmd("HLEN").arg(&keys.winners)
            .cmd("GET").arg(&keys.stock)
            .query_async(&mut conn)
            .await?;
        Ok((decisions, winners, stock))
    }

    /// Writes the rebuilt keys under temporary names in the event's slot.
    async fn write_temp(&self, keys: &EventKeys, rebuilt: &Rebuilt, applied: &HashMap<String, i64>) -> Result<(), RebuildError> {
        let temp = TempKeys::new(keys);
        let mut conn = self.redis.clone();
        let _: () = redis::cmd("DEL").arg(&temp.all()[..]).query_async(&mut conn).await?;
        write_hash(&mut conn, &temp.decisions, &rebuilt.decisions).await?;
        write_hash(&mut conn, &temp.winners, &rebuilt.winners).await?;
        write_hash(&mut conn, &temp.members, &rebuilt.members).await?;
        write_hash(&mut conn, &temp.entered, &rebuilt.entered).await?;
        write_hash(&mut conn, &temp.entries, &rebuilt.entries).await?;
        let applied: Vec<(String, String)> = applied.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        write_hash(&mut conn, &temp.applied, &applied).await?;
        for chunk in rebuilt.released.chunks(CHUNK) {
            let _: () = redis::cmd("SADD").arg(&temp.released).arg(chunk).query_async(&mut conn).await?;
        }
        for chunk in rebuilt.free_units.chunks(CHUNK) {
            let _: () = redis::cmd("RPUSH").arg(&temp.free_units).arg(chunk).query_async(&mut conn).await?;
        }
        for chunk in rebuilt.waitlist.chunks(CHUNK) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&temp.waitlist);
            for (score, entry) in chunk {
                zadd.arg(*score).arg(entry);
            }
            let _: () = zadd.query_async(&mut conn).await?;
        }
        let mut expire = redis::pipe();
        for key in temp.all() {
            expire.cmd("PEXPIRE").arg(key).arg(TEMP_TTL_MS).ignore();
        }
        let _: () = expire.query_async(&mut conn).await?;
        Ok(())
    }

    async fn swap_in(
        &self,
        keys: &EventKeys,
        event_id: &str,
        live_applied: &HashMap<String, i64>,
        stock: i64,
        next_unit: i32,
    ) -> Result<Swap, RebuildError> {
        let temp = TempKeys::new(keys);
        let mut invocation = self.swap.prepare_invoke();
        for key in [
            &keys.meta, &keys.stock, &keys.next_unit, &keys.applied,
            &keys.decisions, &keys.winners, &keys.members, &keys.released, &keys.free_units, &keys.waitlist,
            &keys.entered, &keys.entries,
            &temp.applied,
            &temp.decisions, &temp.winners, &temp.members, &temp.released, &temp.free_units, &temp.waitlist,
            &temp.entered, &temp.entries,
            &keys.promoted,
        ] {
            invocation.key(key);
        }
        invocation.arg(stock).arg(next_unit).arg(event_id).arg(STATE_CHANNEL);
        // The live marks the read saw, sorted: the compare of the swap.
        let expected: BTreeMap<&String, &i64> = live_applied.iter().collect();
        for (name, mark) in expected {
            invocation.arg(name).arg(*mark);
        }
        let mut conn = self.redis.clone();
        let answer: Vec<String> = invocation.invoke_async(&mut conn).await?;
        match answer.as_slice() {
            [code, status] if code == "SWAPPED" => Ok(Swap::Swapped { status: status.clone() }),
            [code, field] if code == "MOVED" => Ok(Swap::Moved(field.clone())),
            [code] if code == "UNKNOWN_EVENT" => Err(RebuildError::UnknownEvent(event_id.to_string())),
            other => Err(RebuildError::Unexpected(format!("{other:?}"))),
        }
    }
}

enum Swap {
    Swapped { status: String },
    Moved(String),
}

/// The temporary twins of the rebuilt keys (same `{event}` slot).
struct TempKeys {
    applied: String,
    decisions: String,
    winners: String,
    members: String,
    released: String,
    free_units: String,
    waitlist: String,
    entered: String,
    entries: String,
}

impl TempKeys {
    fn new(keys: &EventKeys) -> Self {
        let t = |live: &str| format!("{live}:rebuild");
        Self {
            applied: t(&keys.applied),
            decisions: t(&keys.decisions),
            winners: t(&keys.winners),
            members: t(&keys.members),
            released: t(&keys.released),
            free_units: t(&keys.free_units),
            waitlist: t(&keys.waitlist),
            entered: t(&keys.entered),
            entries: t(&keys.entries),
        }
    }

    fn all(&self) -> [&str; 9] {
        [
            &self.applied, &self.decisions, &self.winners, &self.members, &self.released,
            &self.free_units, &self.waitlist, &self.entered, &self.entries,
        ]
    }
}

async fn write_hash(conn: &mut ConnectionManager, key: &str, fields: &[(String, String)]) -> Result<(), RebuildError> {
    for chunk in fields.chunks(CHUNK) {
        let _: () = redis::cmd("HSET").arg(key).arg(chunk).query_async(conn).await?;
    }
    Ok(())
}

/// The keys the log implies, with the stock scripts' own rules.
fn compute(state: &LogState) -> Rebuilt {
    let mut rebuilt = Rebuilt::default();
    let mut won: BTreeMap<i32, usize> = BTreeMap::new();
    let mut winners: BTreeMap<&str, i32> = BTreeMap::new();
    for (entry_id, (member, outcome, unit, _)) in &state.decisions {
        let answer = format!("{}|{}", outcome.as_str(), unit.map(|u| u.to_string()).unwrap_or_default());
        rebuilt.decisions.push((entry_id.clone(), answer));
        if let (Outcome::Won, Some(unit)) = (outcome, unit) {
            *won.entry(*unit).or_default() += 1;
            winners.entry(member.as_str()).or_insert(*unit);
        }
    }
    rebuilt.decisions.sort();
    let mut returned: BTreeMap<i32, usize> = BTreeMap::new();
    for (entry_id, unit) in &state.released {
        *returned.entry(*unit).or_default() += 1;
        rebuilt.released.push(entry_id.clone());
    }
    for (unit, times) in &won {
        let back = returned.get(unit).copied().unwrap_or(0);
        if *times > back {
            rebuilt.units_held += 1;
        } else {
            rebuilt.free_units.push(*unit);
        }
    }
    rebuilt.next_unit = won.keys().next_back().copied().unwrap_or(0);
    rebuilt.winners = winners.iter().map(|(m, u)| (m.to_string(), u.to_string())).collect();
    rebuilt.members = state.members.iter().map(|(m, e)| (m.clone(), e.clone())).collect();
    rebuilt.members.sort();
    for (entry_id, (member, outcome, _, accepted_at)) in &state.decisions {
        let first = state.members.get(member) == Some(entry_id);
        if *outcome == Outcome::SoldOut && first && !winners.contains_key(member.as_str()) {
            // The member rides along, as decide.lua writes it.
            rebuilt.waitlist.push((*accepted_at, format!("{entry_id}|{member}")));
        }
    }
    rebuilt.waitlist.sort();
    rebuilt.entered = state.first_entries.iter().map(|(member, entry_id)| (member.clone(), format!("A|{entry_id}"))).collect();
    rebuilt.entries = state.entries.clone();
    rebuilt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(member: &str, outcome: Outcome, unit: Option<i32>, at: i64) -> (String, Outcome, Option<i32>, i64) {
        (member.to_string(), outcome, unit, at)
    }

    fn stock_decision(entry: &str, member: &str, outcome: Outcome, unit: Option<i32>) -> StockDecision {
        StockDecision {
            event_id: "ev".into(),
            entry_id: entry.into(),
            user_id: member.into(),
            outcome,
            unit_no: unit,
            decided_at: 10,
            accepted_at: 10,
        }
    }

    /// Two stock instances: one decided the entry SOLD_OUT (and put it in
    /// line) but its records reached the log late, after the other had already
    /// promoted the entry with a returned unit and committed that WON. The log
    /// then reads WON before SOLD_OUT; the promotion still stands (the chaos
    /// suite's seed 8 found the entry back in line and promoted twice).
    #[test]
    fn a_promotion_read_before_the_sold_out_it_follows_still_holds_the_unit() {
        for order in [[Outcome::SoldOut, Outcome::Won], [Outcome::Won, Outcome::SoldOut]] {
            let mut state = LogState::default();
            state.decided(stock_decision("w", "m0", Outcome::Won, Some(1)));
            for outcome in order {
                let unit = (outcome == Outcome::Won).then_some(9);
                state.decided(stock_decision("x", "m1", outcome, unit));
            }
            let rebuilt = compute(&state);
            assert!(rebuilt.waitlist.is_empty(), "{order:?}: the promoted entry is not in line again: {:?}", rebuilt.waitlist);
            assert!(rebuilt.decisions.contains(&("x".to_string(), "WON|9".to_string())), "{order:?}: {:?}", rebuilt.decisions);
            assert!(rebuilt.winners.contains(&("m1".to_string(), "9".to_string())), "{order:?}: {:?}", rebuilt.winners);
            assert_eq!(rebuilt.units_held, 2, "{order:?}");
        }
    }

    #[test]
    fn a_unit_won_returned_and_won_again_is_held_once() {
        let mut state = LogState::default();
        state.decisions.insert("e1".into(), decision("m1", Outcome::Won, Some(1), 1));
        state.decisions.insert("e2".into(), decision("m2", Outcome::Won, Some(2), 2));
        state.decisions.insert("e3".into(), decision("m3", Outcome::Won, Some(1), 3));
        state.released.insert("e1".into(), 1);
        let rebuilt = compute(&state);
        assert_eq!(rebuilt.units_held, 2);
        assert!(rebuilt.free_units.is_empty());
        assert_eq!(rebuilt.next_unit, 2);
    }

    #[test]
    fn a_returned_unit_nobody_won_again_is_free() {
        let mut state = LogState::default();
        state.decisions.insert("e1".into(), decision("m1", Outcome::Won, Some(1), 1));
        state.decisions.insert("e2".into(), decision("m2", Outcome::Won, Some(2), 2));
        state.released.insert("e2".into(), 2);
        let rebuilt = compute(&state);
        assert_eq!(rebuilt.units_held, 1);
        assert_eq!(rebuilt.free_units, vec![2]);
        assert_eq!(rebuilt.released, vec!["e2".to_string()]);
        // The member whose gift failed keeps their place among the winners:
        // they are never awarded again.
        assert_eq!(rebuilt.winners.len(), 2);
    }

    #[test]
    fn only_first_entries_of_members_without_a_unit_wait_in_line() {
        let mut state = LogState::default();
        state.decisions.insert("a".into(), decision("m1", Outcome::SoldOut, None, 30));
        state.decisions.insert("b".into(), decision("m2", Outcome::SoldOut, None, 10));
        state.decisions.insert("c".into(), decision("m2", Outcome::SoldOut, None, 40));
        state.decisions.insert("d".into(), decision("m3", Outcome::Won, Some(1), 5));
        state.decisions.insert("e".into(), decision("m3", Outcome::SoldOut, None, 50));
        state.members.insert("m1".into(), "a".into());
        state.members.insert("m2".into(), "b".into());
        state.members.insert("m3".into(), "d".into());
        let rebuilt = compute(&state);
        assert_eq!(rebuilt.waitlist, vec![(10, "b|m2".to_string()), (30, "a|m1".to_string())]);
    }

    #[test]
    fn stored_answers_keep_the_scripts_form() {
        let mut state = LogState::default();
        state.decisions.insert("e1".into(), decision("m1", Outcome::Won, Some(7), 1));
        state.decisions.insert("e2".into(), decision("m2", Outcome::SoldOut, None, 2));
        let rebuilt = compute(&state);
        assert_eq!(rebuilt.decisions, vec![("e1".into(), "WON|7".into()), ("e2".into(), "SOLD_OUT|".into())]);
    }
}
