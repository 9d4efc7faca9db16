//! The Redis layout of one reward event, shared by everything that touches it
//! (`firstcome event create`, ingest's admission, the stock decision script,
//! reconcile). One `{event_id}` hash tag keeps an event's keys in one slot, so
//! the scripts stay atomic on a Redis cluster too.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `fc:{ev}:meta` | hash | open_at_ms, close_at_ms, for_sale, questions (JSON), status |
//! | `fc:{ev}:stock` | string | units left for sale; never below zero |
//! | `fc:{ev}:eligible` | set | members who bought the product |
//! | `fc:{ev}:entered` | hash | member → first-entry mark `P|entry|ms` (pending) or `A|entry` (accepted) |
//! | `fc:{ev}:entries` | hash | entry id → member (status lookups, consumers' checks) |
//! | `fc:{ev}:winners` | hash | member → unit number held |
//! | `fc:{ev}:decisions` | hash | entry id → `OUTCOME|unit` (a redelivered entry gets the same answer) |
//! | `fc:{ev}:next_unit` | string | last unit number handed out (every win gets a new one, so no two members ever hold the same number) |
//! | `fc:{ev}:released` | set | entry ids whose unit was returned (a release counts once) |
//! | `fc:{ev}:applied` | hash | `s:<partition>` / `r:<partition>` → next offset of `survey-submitted` / `stock-released` the stock stage applied for this event (see [`applied_field`]) |
//! | `fc:{ev}:waitlist` | sorted set | `<entry_id>|<member>|<accepted_at_ms>` of entries decided SOLD_OUT (a member's first entry only), scored by ticket: a unit passing down the line goes to the lowest (see [`waitlist_member`]) |
//! | `fc:{ev}:members` | hash | member → the entry id the stock stage decided first for the member (one entry per member) |
//! | `fc:{ev}:promoted` | hash | released entry id → `entry|member|unit|accepted_at_ms|decided_at_ms` of the waitlisted entry its unit went to (a redelivered release re-announces the same promotion, never a second one) |
//! | `fc:{ev}:ticket` | string | the last ticket issued: an accepted entry's place in line, taken by ingest's admit script with the first-entry mark (or by the stock stage for an entry another producer wrote without one) |
//! | `fc:{ev}:tickets` | hash | entry id → its ticket (a resumed entry keeps it; the stock stage decides on it) |
//! | `fc:{ev}:frontier` | string | the highest ticket a unit is kept for: `for_sale` at first, one further for every returned unit and every ticket within it that cannot take one (invalid, a hole); absent = `for_sale` |
//! | `fc:{ev}:dead` | set | tickets beyond the frontier that will never take a unit (decided invalid, holes): the frontier skips them |
//! | `fc:{ev}:pending` | sorted set | entry ids admitted and not yet acknowledged by the broker nor decided, scored by when they become holes (ms) |
//! | `fc:{ev}:holes` | hash | entry id → `member|accepted_at|ticket|announced_at` of admitted entries the broker never acknowledged by their deadline: ingest announces them (a hole record) until the stock stage decides them |
//! | `fc:{ev}:room`, `line`, `prequeue`, `passed` | | the waiting room's (`ingest/src/waiting_room.rs`) |
//! | `fc:{ev}:hold` | string | a rebuild's token while it holds the event: the decide and release scripts answer HELD and write nothing until the rebuilt state is swapped in (short expiry: a crashed rebuild lets go by itself) |
//!
//! Every key expires at `close_at` + [`GRACE_AFTER_CLOSE`], so late requests get
//! 410 rather than 404 and redelivered records are still decided consistently.
//! [`write_event`] sets the expiry on the keys it writes; the scripts that
//! create the others (admission, decision, release) copy `meta`'s expiry onto
//! them when they do.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Pub/sub channel announcing event state changes (sold out, reopened, closed).
pub const STATE_CHANNEL: &str = "fc:event-state";

/// Pub/sub channel on which every ingest instance announces the highest
/// ticket it handed out per event ([`TicketFloor`]): a Redis that forgot
/// tickets is then raised past every instance's, not only the caller's.
pub const TICKET_FLOOR_CHANNEL: &str = "fc:ticket-floors";

/// How long an event's keys outlive its close.
pub const GRACE_AFTER_CLOSE: Duration = Duration::from_secs(24 * 3600);

/// The keys of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKeys {
    pub meta: String,
    pub stock: String,
    pub eligible: String,
    pub entered: String,
    pub entries: String,
    pub winners: String,
    pub decisions: String,
    pub next_unit: String,
    pub released: String,
    pub applied: String,
    pub waitlist: String,
    pub members: String,
    pub promoted: String,
    pub ticket: String,
    pub tickets: String,
    pub frontier: String,
    pub dead: String,
    pub pending: String,
    pub holes: String,
    pub hold: String,
    /// While it lives, ingest admits nobody new: Redis forgot tickets and the
    /// instances are raising the counter to their floors (`lua/admit.lua`).
    pub settle: String,
    /// The waiting room's keys: listed so that deleting an event's keys
    /// (a re-created event, a test) clears them too.
    pub room: [String; 4],
}

impl EventKeys {
    pub fn new(event_id: &str) -> Self {
        let k = |name: &str| format!("fc:{{{event_id}}}:{name}");
        Self {
            meta: k("meta"),
            stock: k("stock"),
            eligible: k("eligible"),
            entered: k("entered"),
            entries: k("entries"),
            winners: k("winners"),
            decisions: k("decisions"),
            next_unit: k("next_unit"),
            released: k("released"),
            applied: k("applied"),
            waitlist: k("waitlist"),
            members: k("members"),
            promoted: k("promoted"),
            ticket: k("ticket"),
            tickets: k("tickets"),
            frontier: k("frontier"),
            dead: k("dead"),
            pending: k("pending"),
            holes: k("holes"),
            hold: k("hold"),
            settle: k("settle"),
            room: [k("room"), k("line"), k("prequeue"), k("passed")],
        }
    }

    /// Every key, for expiry and deletion.
    pub fn all(&self) -> [&str; 25] {
        [
            &self.meta,
            &self.stock,
            &self.eligible,
            &self.entered,
            &self.entries,
            &self.winners,
            &self.decisions,
            &self.next_unit,
            &self.released,
            &self.applied,
            &self.waitlist,
            &self.members,
            &self.promoted,
            &self.ticket,
            &self.tickets,
            &self.frontier,
            &self.dead,
            &self.pending,
            &self.holes,
            &self.hold,
            &self.settle,
            &self.room[0],
            &self.room[1],
            &self.room[2],
            &self.room[3],
        ]
    }
}

/// The `applied` hash field of a partition of `survey-submitted` (`s:<p>`,
/// `kind` = `'s'`) or `stock-released` (`r:<p>`, `kind` = `'r'`).
pub fn applied_field(kind: char, partition: i32) -> String {
    format!("{kind}:{partition}")
}

/// A `waitlist` element: the entry and its member, so a returned unit can be
/// handed over without another lookup. Unambiguous: entry ids are UUIDs and
/// member ids never contain `|` (the shared identity check).
pub fn waitlist_member(entry_id: &str, user_id: &str, accepted_at_ms: i64) -> String {
    format!("{entry_id}|{user_id}|{accepted_at_ms}")
}

/// The (entry id, member, accepted_at) of a `waitlist` element; the time is
/// `None` in elements written before tickets (`entry|member`).
pub fn parse_waitlist_member(element: &str) -> Option<(&str, &str, Option<i64>)> {
    let mut parts = element.splitn(3, '|');
    let (entry, member) = (parts.next()?, parts.next()?);
    Some((entry, member, parts.next().and_then(|at| at.parse().ok())))
}

/// Where an event stands, as ingest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Accepting entries between open_at and close_at.
    Open,
    /// No unit left; may reopen when a unit is returned.
    SoldOut,
    /// Closed by an operator or past close_at.
    Closed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Open => "open",
            EventStatus::SoldOut => "sold_out",
            EventStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(EventStatus::Open),
            "sold_out" => Some(EventStatus::SoldOut),
            "closed" => Some(EventStatus::Closed),
            _ => None,
        }
    }
}

/// The event's static facts and current status, as kept in `fc:{ev}:meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    pub event_id: String,
    pub open_at_ms: i64,
    pub close_at_ms: i64,
    pub for_sale: i64,
    /// How many entries may wait in line beyond the units: ingest admits
    /// until the tickets issued reach `for_sale + line_depth` (or the
    /// frontier, once more units came back than the line holds).
    pub line_depth: i64,
    /// Question ids every entry must answer.
    pub questions: Vec<String>,
    pub status: EventStatus,
}

impl EventMeta {
    /// The line's depth when the event does not set one: a tenth of the
    /// units, at least 100 — enough to give every returned unit of a
    /// typical event (failed gifts, entries found invalid) a waiting entry,
    /// small enough that a rush costs Kafka and the database what the stock
    /// does, not what the crowd does. The admit script applies the same rule
    /// to a meta written before the field existed (`platform/lua/prelude.lua`,
    /// `admission_limit`).
    pub fn default_line_depth(for_sale: i64) -> i64 {
        ((for_sale + 9) / 10).max(100)
    }

    /// The hash fields to write.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("event_id", self.event_id.clone()),
            ("open_at_ms", self.open_at_ms.to_string()),
            ("close_at_ms", self.close_at_ms.to_string()),
            ("for_sale", self.for_sale.to_string()),
            ("line_depth", self.line_depth.to_string()),
            ("questions", serde_json::to_string(&self.questions).unwrap_or_else(|_| "[]".into())),
            ("status", self.status.as_str().to_string()),
        ]
    }

    /// Reads the fields of `HGETALL`; `None` when the event is unknown or the
    /// hash is incomplete.
    pub fn from_fields(fields: &HashMap<String, String>) -> Option<Self> {
        let for_sale = fields.get("for_sale")?.parse().ok()?;
        let line_depth = match fields.get("line_depth") {
            Some(depth) => depth.parse().ok()?,
            // A meta written before the field existed.
            None => Self::default_line_depth(for_sale),
        };
        Some(Self {
            event_id: fields.get("event_id")?.clone(),
            open_at_ms: fields.get("open_at_ms")?.parse().ok()?,
            close_at_ms: fields.get("close_at_ms")?.parse().ok()?,
            for_sale,
            line_depth,
            questions: serde_json::from_str(fields.get("questions")?).ok()?,
            status: EventStatus::parse(fields.get("status")?)?,
        })
    }

    /// Loads an event's meta; `Ok(None)` when unknown.
    pub async fn load<C: redis::aio::ConnectionLike + Send>(
        conn: &mut C,
        event_id: &str,
    ) -> redis::RedisResult<Option<Self>> {
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(EventKeys::new(event_id).meta).query_async(conn).await?;
        Ok(Self::from_fields(&fields))
    }
}

/// Writes a new event's keys: meta, the stock counter (`for_sale`), the
/// eligible members; all expiring at `close_at` + [`GRACE_AFTER_CLOSE`].
/// Refuses (returns `false`, writes nothing) when the event exists — it has
/// `meta`, which is written last and lives as long as any other key — since
/// re-writing a live event would forget its winners. Keys without `meta` are
/// the leftovers of a create that failed half-way: they are replaced.
pub async fn write_event<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    meta: &EventMeta,
    eligible: &[String],
) -> redis::RedisResult<bool> {
    let keys = EventKeys::new(&meta.event_id);
    let exists: bool = redis::cmd("EXISTS").arg(&keys.meta).query_async(conn).await?;
    if exists {
        return Ok(false);
    }
    let _: () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(conn).await?;
    // Members first, meta last: ingest knows an event only once meta exists,
    // so it never sees a half-loaded eligibility set.
    for chunk in eligible.chunks(5_000) {
        let _: () = redis::cmd("SADD").arg(&keys.eligible).arg(chunk).query_async(conn).await?;
    }
    let expire_at_ms = meta.close_at_ms + GRACE_AFTER_CLOSE.as_millis() as i64;
    // One script, not MULTI/EXEC: the stock stage's Redis user, which
    // restores a lost event with this, runs scripts but no transactions.
    let script = crate::scripts::write_event();
    let mut invocation = script.prepare_invoke();
    invocation.key(&keys.meta).key(&keys.stock).key(&keys.eligible).arg(meta.for_sale).arg(expire_at_ms);
    for (field, value) in meta.to_fields() {
        invocation.arg(field).arg(value);
    }
    let _: i64 = invocation.invoke_async(conn).await?;
    Ok(true)
}

/// A state change published on [`STATE_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub event_id: String,
    pub status: EventStatus,
}

/// An ingest instance's highest ticket of an event, published on
/// [`TICKET_FLOOR_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFloor {
    pub event_id: String,
    pub ticket: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_of_an_event_share_one_hash_slot_tag() {
        let keys = EventKeys::new("ev-1");
        assert!(keys.all().iter().all(|k| k.starts_with("fc:{ev-1}:")));
    }

    #[test]
    fn a_waitlist_element_names_its_entry_and_member() {
        let element = waitlist_member("0b0e6f4c-1b7e-4f0e-9c55-3f1f3a1d2b9e", "m-7", 1_700);
        assert_eq!(parse_waitlist_member(&element), Some(("0b0e6f4c-1b7e-4f0e-9c55-3f1f3a1d2b9e", "m-7", Some(1_700))));
        assert_eq!(parse_waitlist_member("e|m"), Some(("e", "m", None)));
        assert_eq!(applied_field('s', 3), "s:3");
        assert_eq!(applied_field('r', 0), "r:0");
    }

    #[test]
    fn meta_survives_the_hash_fields() {
        let meta = EventMeta {
            event_id: "ev".into(),
            open_at_ms: 1,
            close_at_ms: 2,
            for_sale: 45,
            line_depth: 7,
            questions: vec!["q1".into()],
            status: EventStatus::SoldOut,
        };
        let mut fields: HashMap<String, String> =
            meta.to_fields().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(EventMeta::from_fields(&fields), Some(meta.clone()));
        // A meta written before the line's depth was a field: the default.
        fields.remove("line_depth");
        assert_eq!(EventMeta::from_fields(&fields).map(|m| m.line_depth), Some(100));
    }

    #[test]
    fn the_default_line_is_a_tenth_of_the_units_at_least_100() {
        assert_eq!(EventMeta::default_line_depth(0), 100);
        assert_eq!(EventMeta::default_line_depth(2_000), 200);
        assert_eq!(EventMeta::default_line_depth(10_001), 1_001);
    }

    #[test]
    fn a_state_change_is_plain_json() {
        let json = serde_json::to_string(&StateChange { event_id: "e".into(), status: EventStatus::SoldOut }).unwrap();
        assert_eq!(json, r#"{"event_id":"e","status":"sold_out"}"#);
    }
}
