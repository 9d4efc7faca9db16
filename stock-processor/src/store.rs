//! The stock of an event in Redis, changed only through two Lua scripts
//! (`platform/lua/decide.lua`, `platform/lua/release.lua`, via `platform::scripts`) so every decision is atomic.
//!
//! One `decide` call covers all entries of one event in a batch: Redis runs
//! about 50k unpipelined calls per second on two cores, so a call per entry
//! would cap the stage; a call per batch does not.
//!
//! Both scripts read Redis' clock (`TIME`), never the caller's: ingest stamps
//! `accepted_at` with that same clock, so the window is judged on one clock
//! whichever host runs this stage and however far behind it is.

use std::time::Duration;

use platform::event_keys::{EventKeys, GRACE_AFTER_CLOSE, STATE_CHANNEL};
use platform::redis::Connection as ConnectionManager;
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
    /// The place in line the producer gave it (0: none; the script gives one).
    pub ticket: i64,
    /// Ingest's announcement that this admitted entry never reached the log
    /// (`ingest::holes`): decided CLOSED, its place passed on.
    pub hole: bool,
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
    /// The ticket each entry was decided on (0 when none), in the order asked.
    pub tickets: Vec<i64>,
    /// Waitlisted entries the batch promoted: a ticket within the frontier
    /// that can never take its unit passed it on (announced like a release's).
    pub promotions: Vec<Promotion>,
}

/// A returned unit handed to the next in line: the waitlisted entry's stored
/// decision is now `WON|unit_no`; the stage announces it with a new
/// `StockDecision` WON for that (same) entry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub entry_id: String,
    pub user_id: String,
    pub unit_no: i32,
    /// When ingest accepted the promoted entry (its place in line).
    pub accepted_at_ms: i64,
    /// Redis' clock when the unit was handed over.
    pub decided_at_ms: i64,
    /// The promoted entry's place in line (0 in promotions stored before
    /// tickets existed).
    pub ticket: i64,
}

impl Promotion {
    /// Parses the `entry|member|unit|accepted_at|decided_at[|ticket]` parts.
    fn parse(parts: &[String]) -> Option<Self> {
        let (ticket, parts) = match parts {
            [rest @ .., ticket] if rest.len() == 5 => (ticket.parse().ok()?, rest),
            rest => (0, rest),
        };
        let [entry_id, user_id, unit_no, accepted_at_ms, decided_at_ms] = parts else { return None };
        Some(Self {
            entry_id: entry_id.clone(),
            user_id: user_id.clone(),
            unit_no: unit_no.parse().ok()?,
            accepted_at_ms: accepted_at_ms.parse().ok()?,
            decided_at_ms: decided_at_ms.parse().ok()?,
            ticket,
        })
    }

    /// Parses the `|`-joined form the scripts return inside a list.
    fn parse_joined(joined: &str) -> Option<Self> {
        let parts: Vec<String> = joined.split('|').map(str::to_string).collect();
        Self::parse(&parts)
    }
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The unit is back in stock (nobody was in line).
    Returned { reopened: bool },
    /// The unit went straight to the next in line (more than one only when
    /// duplicate tickets left free units within the frontier).
    Promoted(Vec<Promotion>),
    /// This entry's unit was already returned: nothing changed. The
    /// promotions that return made, if any, are repeated so an aborted batch
    /// can announce them again; nobody is promoted twice.
    Duplicate(Vec<Promotion>),
    /// The entry did not win this unit for this member: nothing changed.
    Mismatch,
    /// No such event in Redis: nothing changed.
    UnknownEvent,
}

impl Released {
    /// The promotions to announce (new ones, or those a duplicate repeats).
    pub fn promotions(&self) -> &[Promotion] {
        match self {
            Released::Promoted(promotions) | Released::Duplicate(promotions) => promotions,
            _ => &[],
        }
    }
}

/// The applied marks a script call checks and raises (see [`crate::marks`]).
/// `expected`: the event's marks as committed to Kafka, field → next offset;
/// if Redis' `applied` mark of any field is below, the call answers
/// [`StoreError::Stale`] and writes nothing. `new`: this call's records,
/// field → 1 + highest offset; `applied` is raised to them (never lowered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub expected: Vec<(String, i64)>,
    pub new: Vec<(String, i64)>,
}

impl Marks {
    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        for marks in [&self.expected, &self.new] {
            invocation.arg(marks.len());
            for (field, offset) in marks {
                invocation.arg(field).arg(*offset);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis call failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis is behind what the stage committed to Kafka (it lost writes):
    /// nothing was written; rebuild the event from the log, then call again.
    #[error("redis is behind the log: applied mark {field} is {applied}, {expected} was committed")]
    Stale { field: String, applied: i64, expected: i64 },
    /// A rebuild holds the event (it is reading the log and will swap its
    /// state in): nothing was written; call again once it let go.
    #[error("a rebuild holds the event: nothing decided")]
    Held,
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
        Self { conn, decide: platform::scripts::decide(), release: platform::scripts::release() }
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

    /// Decides `entries` of `event_id`, in order, in one atomic script call,
    /// without marks (no stale check): [`StockStore::decide_marked`].
    pub async fn decide(&self, event_id: &str, entries: &[EntryRef<'_>]) -> Result<Decided, StoreError> {
        self.decide_marked(event_id, entries, &Marks::default()).await
    }

    /// Decides `entries` of `event_id`, in order, in one atomic script call.
    /// An entry is CLOSED when its `accepted_at` (at most Redis' now) falls
    /// outside [open_at, close_at), when an operator closed the event, or when
    /// Redis' now is past close_at + [`LATE_DECISION_GRACE`]. A member's later
    /// entry gets the standing of its first one; a SOLD_OUT first entry joins
    /// the waitlist. [`StoreError::Stale`] when `applied` is below `marks.expected`.
    pub async fn decide_marked(
        &self,
        event_id: &str,
        entries: &[EntryRef<'_>],
        marks: &Marks,
    ) -> Result<Decided, StoreError> {
        let keys = EventKeys::new(event_id);
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stock)
            .key(&keys.eligible)
            .key(&keys.winners)
            .key(&keys.decisions)
            .key(&keys.next_unit)
            .key(&keys.applied)
            .key(&keys.waitlist)
            .key(&keys.members)
            .key(&keys.hold)
            .key(&keys.ticket)
            .key(&keys.tickets)
            .key(&keys.frontier)
            .key(&keys.dead)
            .key(&keys.pending)
            .key(&keys.promoted)
            .key(&keys.holes)
            .arg(event_id)
            .arg(STATE_CHANNEL)
            .arg(LATE_DECISION_GRACE.as_millis() as u64)
            .arg(GRACE_AFTER_CLOSE.as_millis() as u64);
        marks.push_args(&mut invocation);
        for entry in entries {
            invocation
                .arg(entry.entry_id)
                .arg(entry.user_id)
                .arg(entry.accepted_at_ms)
                .arg(entry.ticket)
                .arg(u8::from(entry.hole));
        }
        let mut conn = self.conn.clone();
        let answers: Vec<String> = invocation.invoke_async(&mut conn).await?;
        parse_decided(&answers, entries.len())
    }

    /// Returns `unit_no`, won by `entry_id` of `user_id`, without marks:
    /// [`StockStore::release_marked`].
    pub async fn release(
        &self,
        event_id: &str,
        entry_id: &str,
        user_id: &str,
        unit_no: i32,
    ) -> Result<Released, StoreError> {
        self.release_marked(event_id, entry_id, user_id, unit_no, &Marks::default()).await
    }

    /// Returns `unit_no`, won by `entry_id` of `user_id`: it goes to the
    /// earliest waitlisted entry whose member holds no unit while the event
    /// is before close_at, else back to stock. A repeated release of the same
    /// entry changes nothing (and repeats its promotion).
    /// [`StoreError::Stale`] when `applied` is below `marks.expected`.
    pub async fn release_marked(
        &self,
        event_id: &str,
        entry_id: &str,
        user_id: &str,
        unit_no: i32,
        marks: &Marks,
    ) -> Result<Released, StoreError> {
        let keys = EventKeys::new(event_id);
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stock)
            .key(&keys.winners)
            .key(&keys.decisions)
            .key(&keys.released)
            .key(&keys.applied)
            .key(&keys.waitlist)
            .key(&keys.promoted)
            .key(&keys.hold)
            .key(&keys.next_unit)
            .key(&keys.ticket)
            .key(&keys.frontier)
            .key(&keys.dead)
            .arg(entry_id)
            .arg(user_id)
            .arg(unit_no)
            .arg(event_id)
            .arg(STATE_CHANNEL);
        marks.push_args(&mut invocation);
        let mut conn = self.conn.clone();
        let answer: Vec<String> = invocation.invoke_async(&mut conn).await?;
        parse_released(&answer)
    }
}

fn parse_released(answer: &[String]) -> Result<Released, StoreError> {
    let unexpected = || StoreError::Unexpected(answer.join(" "));
    let (status, rest) = answer.split_first().ok_or_else(unexpected)?;
    let promotions =
        || rest.iter().map(|p| Promotion::parse_joined(p).ok_or_else(unexpected)).collect::<Result<Vec<_>, _>>();
    match (status.as_str(), rest.len()) {
        ("RELEASED", 0) => Ok(Released::Returned { reopened: false }),
        ("REOPENED", 0) => Ok(Released::Returned { reopened: true }),
        ("PROMOTED", 1..) => Ok(Released::Promoted(promotions()?)),
        ("DUPLICATE", _) => Ok(Released::Duplicate(promotions()?)),
        ("MISMATCH", 0) => Ok(Released::Mismatch),
        ("UNKNOWN_EVENT", 0) => Ok(Released::UnknownEvent),
        ("STALE", _) => Err(parse_stale(rest).ok_or_else(unexpected)?),
        ("HELD", 0) => Err(StoreError::Held),
        _ => Err(unexpected()),
    }
}

fn parse_stale(rest: &[String]) -> Option<StoreError> {
    let [field, applied, expected] = rest else { return None };
    Some(StoreError::Stale { field: field.clone(), applied: applied.parse().ok()?, expected: expected.parse().ok()? })
}

fn parse_decided(answers: &[String], asked: usize) -> Result<Decided, StoreError> {
    match answers.first().map(String::as_str) {
        Some("STALE") => {
            return Err(parse_stale(&answers[1..]).ok_or_else(|| StoreError::Unexpected(answers.join(" ")))?)
        }
        Some("HELD") if answers.len() == 1 => return Err(StoreError::Held),
        _ => {}
    }
    let [remaining, now, promoted, rest @ ..] = answers else {
        return Err(StoreError::Unexpected(format!("{} header fields", answers.len())));
    };
    let promoted: usize = promoted.parse().map_err(|_| StoreError::Unexpected(format!("promotions {promoted:?}")))?;
    if rest.len() != 2 * asked + promoted {
        return Err(StoreError::Unexpected(format!("{} answers for {asked} entries", rest.len())));
    }
    let (decisions, rest) = rest.split_at(asked);
    let (tickets, promotions) = rest.split_at(asked);
    let tickets = tickets
        .iter()
        .map(|t| t.parse().map_err(|_| StoreError::Unexpected(format!("ticket {t:?}"))))
        .collect::<Result<_, _>>()?;
    let promotions = promotions
        .iter()
        .map(|p| Promotion::parse_joined(p).ok_or_else(|| StoreError::Unexpected(format!("promotion {p:?}"))))
        .collect::<Result<_, _>>()?;
    let remaining: i64 =
        remaining.parse().map_err(|_| StoreError::Unexpected(format!("remaining stock {remaining:?}")))?;
    let decided_at_ms: i64 = now.parse().map_err(|_| StoreError::Unexpected(format!("redis time {now:?}")))?;
    let decisions = decisions
        .iter()
        .map(|d| Decision::parse(d).ok_or_else(|| StoreError::Unexpected(format!("decision {d:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(Decided { remaining: (remaining >= 0).then_some(remaining), decided_at_ms, decisions, tickets, promotions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_win_carries_its_unit() {
        assert_eq!(Decision::parse("WON|7"), Some(Decision { outcome: Outcome::Won, unit_no: Some(7) }));
        assert_eq!(Decision::parse("ALREADY_WON|3"), Some(Decision { outcome: Outcome::AlreadyWon, unit_no: Some(3) }));
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
        let answers = strings(&["3", "1700000000123", "0", "WON|1", "7"]);
        assert!(parse_decided(&answers, 2).is_err());
        let decided = parse_decided(&answers, 1).unwrap();
        assert_eq!(decided.remaining, Some(3));
        assert_eq!(decided.decided_at_ms, 1_700_000_000_123);
        assert_eq!(decided.tickets, vec![7]);
        let unknown = parse_decided(&strings(&["-1", "1", "0", "INELIGIBLE|", "0"]), 1).unwrap();
        assert_eq!(unknown.remaining, None);
        assert!(parse_decided(&strings(&["3"]), 0).is_err(), "no clock");
        assert!(parse_decided(&strings(&["3", "soon", "0"]), 0).is_err(), "unreadable clock");
    }

    #[test]
    fn a_batch_announces_the_promotions_its_dead_tickets_made() {
        let strings = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let answers = strings(&["0", "5", "1", "INELIGIBLE|", "3", "e-9|m-9|4|2|5|12"]);
        let decided = parse_decided(&answers, 1).unwrap();
        assert_eq!(decided.promotions.len(), 1);
        assert_eq!((decided.promotions[0].unit_no, decided.promotions[0].ticket), (4, 12));
        assert!(parse_decided(&strings(&["0", "5", "2", "INELIGIBLE|", "3", "e-9|m-9|4|2|5|12"]), 1).is_err());
    }

    #[test]
    fn a_stale_answer_names_the_mark_behind() {
        let strings = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let stale = parse_decided(&strings(&["STALE", "s:2", "10", "14"]), 3).unwrap_err();
        assert!(
            matches!(&stale, StoreError::Stale { field, applied: 10, expected: 14 } if field == "s:2"),
            "{stale:?}"
        );
        assert!(matches!(parse_released(&strings(&["STALE", "r:0", "0", "1"])), Err(StoreError::Stale { .. })));
        assert!(matches!(parse_released(&strings(&["STALE", "r:0"])), Err(StoreError::Unexpected(_))));
    }

    #[test]
    fn a_held_answer_wrote_nothing_and_says_so() {
        let strings = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(matches!(parse_decided(&strings(&["HELD"]), 2), Err(StoreError::Held)));
        assert!(matches!(parse_released(&strings(&["HELD"])), Err(StoreError::Held)));
    }

    #[test]
    fn a_promotion_carries_the_entry_its_member_and_the_unit() {
        let strings = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let parts = ["PROMOTED", "e-1|m-1|3|1700000000000|1700000000500"];
        let promotion = Promotion {
            entry_id: "e-1".into(),
            user_id: "m-1".into(),
            unit_no: 3,
            accepted_at_ms: 1_700_000_000_000,
            decided_at_ms: 1_700_000_000_500,
            ticket: 0,
        };
        assert_eq!(parse_released(&strings(&parts)).unwrap(), Released::Promoted(vec![promotion.clone()]));
        let mut again = strings(&parts);
        again[0] = "DUPLICATE".into();
        assert_eq!(parse_released(&again).unwrap(), Released::Duplicate(vec![promotion]));
        assert_eq!(parse_released(&strings(&["DUPLICATE"])).unwrap(), Released::Duplicate(vec![]));
        assert_eq!(parse_released(&strings(&["REOPENED"])).unwrap(), Released::Returned { reopened: true });
        assert!(parse_released(&strings(&["PROMOTED", "e-1"])).is_err());
        assert!(parse_released(&strings(&["PROMOTED"])).is_err());
        assert!(parse_released(&strings(&["MAYBE"])).is_err());
    }
}
