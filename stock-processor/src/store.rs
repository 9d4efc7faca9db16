//! The stock of an event in Redis, changed only through two Lua scripts
//! (`lua/decide.lua`, `lua/release.lua`) so every decision is atomic.
//!
//! One `decide` call covers all entries of one event in a batch: Redis runs
//! about 50k unpipelined calls per second on two cores, so a call per entry
//! would cap the stage; a call per batch does not.
//!
//! Both scripts read Redis' clock (`TIME`), never the caller's: ingest stamps
//! `accepted_at` with that same clock, so the window is judged on one clock
//! whichever host runs this stage and however far behind it is.

use std::time::Duration;

use platform::event_keys::{EventKeys, STATE_CHANNEL};
use redis::aio::ConnectionManager;
use redis::Script;
use schemas::Outcome;

/// How long after `close_at` entries accepted before it are still decided
/// normally. A stage that lags (a backlog, an outage) past close_at still
/// answers what ingest accepted in time; after the grace every undecided entry
/// is CLOSED, so answers settle long before the event's keys expire.
pub const LATE_DECISION_GRACE: Duration = Duration::from_secs(10 * 60);

/// An entry to decide: who entered, under which entry id, and when ingest
/// accepted it (Redis' clock, ms): the window is judged on this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub entry_id: &'a str,
    pub user_id: &'a str,
    pub accepted_at_ms: i64,
}

/// The stock stage's answer to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    pub outcome: Outcome,
    /// The unit taken (WON) or held (ALREADY_WON).
    pub unit_no: Option<i32>,
}

impl Decision {
    /// Parses the `OUTCOME|unit` form kept in `fc:{ev}:decisions`.
    pub fn parse(stored: &str) -> Option<Self> {
        let (outcome, unit) = stored.split_once('|')?;
        let outcome = Outcome::parse(outcome)?;
        let unit_no = match unit {
            "" => None,
            unit => Some(unit.parse().ok()?),
        };
        // A win without a unit (or a loss with one) is not an answer we give.
        let needs_unit = matches!(outcome, Outcome::Won | Outcome::AlreadyWon);
        (needs_unit == unit_no.is_some()).then_some(Self { outcome, unit_no })
    }
}

/// The answers for one event's entries, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Units left after the call; `None` when the event is unknown.
    pub remaining: Option<i64>,
    /// Redis' clock (ms) the call judged at: the decisions' `decided_at`.
    pub decided_at_ms: i64,
    pub decisions: Vec<Decision>,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The unit is back in stock.
    Returned { reopened: bool },
    /// This entry's unit was already returned: nothing changed.
    Duplicate,
    /// The entry did not win this unit for this member: nothing changed.
    Mismatch,
    /// No such event in Redis: nothing changed.
    UnknownEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis call failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something this code does not know: a version skew.
    #[error("unexpected script answer: {0}")]
    Unexpected(String),
}

/// The event stock scripts over one multiplexed connection. Cheap to clone.
#[derive(Clone)]
pub struct StockStore {
    conn: ConnectionManager,
    decide: Script,
    release: Script,
}

impl std::fmt::Debug for StockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockStore").finish_non_exhaustive()
    }
}

impl StockStore {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            decide: Script::new(include_str!("lua/decide.lua")),
            release: Script::new(include_str!("lua/release.lua")),
        }
    }

    /// Loads both scripts (a broken script fails at start, not on the first
    /// record). Calls stay NOSCRIPT-safe: `invoke_async` reloads after a
    /// Redis restart or `SCRIPT FLUSH`.
    pub async fn load(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.decide.prepare_invoke().load_async(&mut conn).await?;
        self.release.prepare_invoke().load_async(&mut conn).await?;
        Ok(())
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Decides `entries` of `event_id`, in order, in one atomic script call.
    /// An entry is CLOSED when its `accepted_at` (at most Redis' now) falls
    /// outside [open_at, close_at), when an operator closed the event, or when
    /// Redis' now is past close_at + [`LATE_DECISION_GRACE`].
    pub async fn decide(&self, event_id: &str, entries: &[EntryRef<'_>]) -> Result<Decided, StoreError> {
        let keys = EventKeys::new(event_id);
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stock)
            .key(&keys.eligible)
            .key(&keys.winners)
            .key(&keys.decisions)
            .key(&keys.free_units)
            .key(&keys.next_unit)
            .arg(event_id)
            .arg(STATE_CHANNEL)
            .arg(LATE_DECISION_GRACE.as_millis() as u64);
        for entry in entries {
            invocation.arg(entry.entry_id).arg(entry.user_id).arg(entry.accepted_at_ms);
        }
        let mut conn = self.conn.clone();
        let answers: Vec<String> = invocation.invoke_async(&mut conn).await?;
        parse_decided(&answers, entries.len())
    }

    /// Returns `unit_no`, won by `entry_id` of `user_id`, to the stock. A repeated
    /// release of the same entry changes nothing.
    pub async fn release(
        &self,
        event_id: &str,
        entry_id: &str,
        user_id: &str,
        unit_no: i32,
    ) -> Result<Released, StoreError> {
        let keys = EventKeys::new(event_id);
        let mut conn = self.conn.clone();
        let answer: String = self
            .release
            .key(&keys.meta)
            .key(&keys.stock)
            .key(&keys.winners)
            .key(&keys.decisions)
            .key(&keys.free_units)
            .key(&keys.released)
            .arg(entry_id)
            .arg(user_id)
            .arg(unit_no)
            .arg(event_id)
            .arg(STATE_CHANNEL)
            .invoke_async(&mut conn)
            .await?;
        match answer.as_str() {
            "RELEASED" => Ok(Released::Returned { reopened: false }),
            "REOPENED" => Ok(Released::Returned { reopened: true }),
            "DUPLICATE" => Ok(Released::Duplicate),
            "MISMATCH" => Ok(Released::Mismatch),
            "UNKNOWN_EVENT" => Ok(Released::UnknownEvent),
            other => Err(StoreError::Unexpected(other.to_string())),
        }
    }
}

fn parse_decided(answers: &[String], asked: usize) -> Result<Decided, StoreError> {
    let [remaining, now, decisions @ ..] = answers else {
        return Err(StoreError::Unexpected(format!("{} header fields", answers.len())));
    };
    if decisions.len() != asked {
        return Err(StoreError::Unexpected(format!("{} answers for {asked} entries", decisions.len())));
    }
    let remaining: i64 = remaining
        .parse()
        .map_err(|_| StoreError::Unexpected(format!("remaining stock {remaining:?}")))?;
    let decided_at_ms: i64 = now.parse().map_err(|_| StoreError::Unexpected(format!("redis time {now:?}")))?;
    let decisions = decisions
        .iter()
        .map(|d| Decision::parse(d).ok_or_else(|| StoreError::Unexpected(format!("decision {d:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(Decided { remaining: (remaining >= 0).then_some(remaining), decided_at_ms, decisions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_win_carries_its_unit() {
        assert_eq!(Decision::parse("WON|7"), Some(Decision { outcome: Outcome::Won, unit_no: Some(7) }));
        assert_eq!(
            Decision::parse("ALREADY_WON|3"),
            Some(Decision { outcome: Outcome::AlreadyWon, unit_no: Some(3) })
        );
    }

    #[test]
    fn a_loss_has_no_unit() {
        assert_eq!(Decision::parse("SOLD_OUT|"), Some(Decision { outcome: Outcome::SoldOut, unit_no: None }));
        assert_eq!(Decision::parse("CLOSED|"), Some(Decision { outcome: Outcome::Closed, unit_no: None }));
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in ["WON|", "SOLD_OUT|4", "MAYBE|", "WON", "WON|x", ""] {
            assert_eq!(Decision::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_answer_count_must_match_the_entries_asked() {
        let strings = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let answers = strings(&["3", "1700000000123", "WON|1"]);
        assert!(parse_decided(&answers, 2).is_err());
        let decided = parse_decided(&answers, 1).unwrap();
        assert_eq!(decided.remaining, Some(3));
        assert_eq!(decided.decided_at_ms, 1_700_000_000_123);
        let unknown = parse_decided(&strings(&["-1", "1", "INELIGIBLE|"]), 1).unwrap();
        assert_eq!(unknown.remaining, None);
        assert!(parse_decided(&strings(&["3"]), 0).is_err(), "no clock");
        assert!(parse_decided(&strings(&["3", "soon"]), 0).is_err(), "unreadable clock");
    }
}
