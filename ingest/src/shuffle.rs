//! The verifiable pre-queue shuffle: the draw is a function of a seed and the
//! members alone, the seed is committed to before the opening and revealed
//! after it, so anyone can replay the draw (`firstcome verify shuffle`).
//!
//! - seed: 32 random bytes as 64 lower-case hex characters, drawn by the
//!   first ingest that sees the event's waiting room (before anyone joins
//!   the pre-queue) and kept in Redis;
//! - commitment: `hex(SHA-256(seed))` (of the 64 ASCII characters), on the
//!   event's public state from then on;
//! - a member's draw: `hex(SHA-256(seed || "|" || member id))`;
//! - the order: the pre-queue's members by draw, then by member id (a tie
//!   would need a SHA-256 collision; the rule makes the order total anyway).
//!
//! Before the opening only Redis and PostgreSQL (the operator) know the
//! seed, so a member cannot compute or buy a better place; once committed,
//! the operator cannot change the seed after seeing who queued, since the
//! published commitment would no longer match.
//!
//! The room lives in Redis keys that expire with the event; what must
//! outlive them is kept in PostgreSQL (migration 0014, [`record_commitment`],
//! [`archive`], [`stored`]): the commitment and seed from `firstcome event
//! create` on, the draw as the room ran it from `firstcome event close` on.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A new seed: 32 random bytes, hex.
pub fn new_seed() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `hex(SHA-256(seed))`, published before the opening.
pub fn commitment(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// `hex(SHA-256(seed || "|" || member))`: the member's draw.
pub fn draw(seed: &str, member: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(seed.as_bytes());
    hasher.update(b"|");
    hasher.update(member.as_bytes());
    hex::encode(hasher.finalize())
}

/// The pre-queue's order under `seed`: by draw, then member id.
pub fn order<'a>(seed: &str, members: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut drawn: Vec<(String, &str)> = members.into_iter().map(|m| (draw(seed, m), m)).collect();
    drawn.sort();
    drawn.dedup();
    drawn.into_iter().map(|(_, m)| m.to_string()).collect()
}

/// The earliest the room's gate can let the holder of pre-queue place
/// `place` (1 = first) through: the bucket starts full (`burst`) at the
/// opening and refills at `rate_per_sec`.
pub fn earliest_pass_ms(opened_at_ms: i64, place: i64, burst: i64, rate_per_sec: i64) -> i64 {
    let beyond = (place - burst).max(0);
    if rate_per_sec <= 0 {
        return opened_at_ms;
    }
    // Floor, not ceiling: the gate's token count is fractional, so a
    // holder may pass up to a millisecond before the whole token is due.
    opened_at_ms + beyond * 1_000 / rate_per_sec
}

/// What the room kept of a shuffle (`crate::waiting_room::shuffle_record`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShuffleRecord {
    pub event_id: String,
    pub mode: String,
    pub opened_at_ms: Option<i64>,
    pub seed: String,
    pub commitment: String,
    /// How many the room put at the head of the line at the opening.
    pub pre_queued: i64,
    pub rate_per_sec: i64,
    pub burst: i64,
    /// The pre-queue in the room's order: (draw, member).
    pub draws: Vec<(String, String)>,
    /// When each pre-queued member passed the gate (those who did).
    pub passed_at_ms: HashMap<String, i64>,
    /// The tickets of pre-queued members still in line.
    pub in_line: HashMap<String, i64>,
}

/// One check of a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShuffleCheck {
    pub name: &'static str,
    pub holds: bool,
    pub detail: String,
}

/// Replays the draw from the revealed seed and the pre-queue's members, and
/// checks the room against it: the seed is the committed one, every draw is
/// the seed's, the room's order is the replay's, the members still in line
/// hold their drawn places, and none passed the gate before it could reach
/// their place.
pub fn verify(record: &ShuffleRecord) -> Vec<ShuffleCheck> {
    let check = |name, holds, detail: String| ShuffleCheck { name, holds, detail };
    let mut checks = Vec::new();
    let Some(opened_at) = record.opened_at_ms else {
        checks.push(check("opened", false, "the room has not opened: the seed is not revealed yet".into()));
        return checks;
    };
    checks.push(check(
        "commitment",
        !record.seed.is_empty() && commitment(&record.seed) == record.commitment,
        format!("SHA-256(seed) = {}, committed {}", commitment(&record.seed), record.commitment),
    ));
    if record.mode != "shuffle" {
        checks.push(check("mode", true, format!("pre-queue order {}: nothing was drawn", record.mode)));
        return checks;
    }
    let bad_draws: Vec<&str> =
        record.draws.iter().filter(|(d, m)| *d != draw(&record.seed, m)).map(|(_, m)| m.as_str()).collect();
    checks.push(check(
        "draws",
        bad_draws.is_empty(),
        format!(
            "{} of {} draws are not SHA-256(seed|member){}",
            bad_draws.len(),
            record.draws.len(),
            sample(&bad_draws)
        ),
    ));
    let room_order: Vec<String> = record.draws.iter().map(|(_, m)| m.clone()).collect();
    let replay = order(&record.seed, room_order.iter().map(String::as_str));
    let first_apart = replay.iter().zip(&room_order).position(|(a, b)| a != b);
    checks.push(check(
        "order",
        replay == room_order,
        match first_apart {
            None => format!("the replay of {} members is the room's order", replay.len()),
            Some(i) => format!("place {}: the replay has {}, the room {}", i + 1, replay[i], room_order[i]),
        },
    ));
    checks.push(check(
        "pre_queued",
        record.pre_queued == room_order.len() as i64,
        format!("the room put {} at the head of the line; {} drawn", record.pre_queued, room_order.len()),
    ));
    let mut out_of_place = Vec::new();
    let mut too_early = Vec::new();
    for (i, member) in room_order.iter().enumerate() {
        let place = i as i64 + 1;
        if let Some(ticket) = record.in_line.get(member) {
            if *ticket != place {
                out_of_place.push(member.as_str());
            }
        }
        if let Some(at) = record.passed_at_ms.get(member) {
            if *at < earliest_pass_ms(opened_at, place, record.burst, record.rate_per_sec) {
                too_early.push(member.as_str());
            }
        }
    }
    checks.push(check(
        "line",
        out_of_place.is_empty(),
        format!("{} members still in line hold another place than drawn{}", out_of_place.len(), sample(&out_of_place)),
    ));
    checks.push(check(
        "gate",
        too_early.is_empty(),
        format!(
            "{} of {} who passed went through before the gate reached their place{}",
            too_early.len(),
            record.passed_at_ms.len(),
            sample(&too_early)
        ),
    ));
    checks
}

/// Why the shuffle's record could not be kept or read in PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// Members written per statement when a draw is archived.
const ARCHIVE_CHUNK: usize = 5_000;

/// Records `event_id`'s seed and commitment unless one is recorded already;
/// returns the recorded pair (seed, commitment), the first one kept.
pub async fn record_commitment<C: tokio_postgres::GenericClient>(
    db: &C,
    event_id: &str,
    seed: &str,
) -> Result<(String, String), StoreError> {
    db.execute(
        "INSERT INTO event_shuffles (event_id, commitment, seed) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
        &[&event_id, &commitment(seed), &seed],
    )
    .await?;
    let row = db.query_one("SELECT seed, commitment FROM event_shuffles WHERE event_id = $1", &[&event_id]).await?;
    Ok((row.get(0), row.get(1)))
}

/// The seed recorded for `event_id`, if any.
pub async fn recorded_seed<C: tokio_postgres::GenericClient>(
    db: &C,
    event_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(db.query_opt("SELECT seed FROM event_shuffles WHERE event_id = $1", &[&event_id]).await?.map(|r| r.get(0)))
}

/// Keeps the room's `record` in PostgreSQL, replacing an earlier archive of
/// it; run it in a transaction (`db`) so a reader never sees half a draw.
/// The commitment and seed recorded at the create stay: a room that ran
/// another seed is then caught by the replay, as it should be. Returns the
/// members archived.
pub async fn archive<C: tokio_postgres::GenericClient>(db: &C, record: &ShuffleRecord) -> Result<usize, StoreError> {
    if record.seed.is_empty() || record.commitment.is_empty() {
        // Nothing was committed: no room, or its keys are gone.
        return Ok(0);
    }
    let mode = Some(record.mode.as_str()).filter(|m| !m.is_empty());
    let opened = record.opened_at_ms.is_some();
    db.execute(
        "INSERT INTO event_shuffles
             (event_id, commitment, seed, mode, opened_at_ms, pre_queued, rate_per_sec, burst, archived_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (event_id) DO UPDATE SET mode = EXCLUDED.mode, opened_at_ms = EXCLUDED.opened_at_ms,
             pre_queued = EXCLUDED.pre_queued, rate_per_sec = EXCLUDED.rate_per_sec, burst = EXCLUDED.burst,
             archived_at = now()",
        &[
            &record.event_id,
            &record.commitment,
            &record.seed,
            &mode,
            &record.opened_at_ms,
            &opened.then_some(record.pre_queued),
            &opened.then_some(record.rate_per_sec),
            &opened.then_some(record.burst),
        ],
    )
    .await?;
    db.execute("DELETE FROM event_shuffle_draws WHERE event_id = $1", &[&record.event_id]).await?;
    for (chunk_no, chunk) in record.draws.chunks(ARCHIVE_CHUNK).enumerate() {
        let first = (chunk_no * ARCHIVE_CHUNK) as i64 + 1;
        let places: Vec<i64> = (first..first + chunk.len() as i64).collect();
        let members: Vec<&str> = chunk.iter().map(|(_, m)| m.as_str()).collect();
        let draws: Vec<&str> = chunk.iter().map(|(d, _)| d.as_str()).collect();
        let passed: Vec<Option<i64>> = members.iter().map(|m| record.passed_at_ms.get(*m).copied()).collect();
        let tickets: Vec<Option<i64>> = members.iter().map(|m| record.in_line.get(*m).copied()).collect();
        db.execute(
            "INSERT INTO event_shuffle_draws (event_id, place, member, draw, passed_at_ms, ticket)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])",
            &[&record.event_id, &places, &members, &draws, &passed, &tickets],
        )
        .await?;
    }
    Ok(record.draws.len())
}

/// What PostgreSQL keeps of an event's shuffle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The recorded commitment and seed, and the archived draw (empty
    /// until archived).
    pub record: ShuffleRecord,
    /// Whether `event close` archived the room's draw.
    pub archived: bool,
}

/// The shuffle PostgreSQL keeps for `event_id` (`None`: nothing recorded).
/// `with_draws: false` reads the summary only (the report's).
pub async fn stored<C: tokio_postgres::GenericClient>(
    db: &C,
    event_id: &str,
    with_draws: bool,
) -> Result<Option<Stored>, StoreError> {
    let Some(row) = db
        .query_opt(
            "SELECT commitment, seed, mode, opened_at_ms, pre_queued, rate_per_sec, burst, archived_at IS NOT NULL
             FROM event_shuffles WHERE event_id = $1",
            &[&event_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut record = ShuffleRecord {
        event_id: event_id.to_string(),
        commitment: row.get(0),
        seed: row.get(1),
        mode: row.get::<_, Option<String>>(2).unwrap_or_default(),
        opened_at_ms: row.get(3),
        pre_queued: row.get::<_, Option<i64>>(4).unwrap_or(0),
        rate_per_sec: row.get::<_, Option<i64>>(5).unwrap_or(0),
        burst: row.get::<_, Option<i64>>(6).unwrap_or(0),
        ..Default::default()
    };
    if with_draws {
        for row in db
            .query(
                "SELECT member, draw, passed_at_ms, ticket FROM event_shuffle_draws WHERE event_id = $1 ORDER BY place",
                &[&event_id],
            )
            .await?
        {
            let member: String = row.get(0);
            if let Some(at) = row.get::<_, Option<i64>>(2) {
                record.passed_at_ms.insert(member.clone(), at);
            }
            if let Some(ticket) = row.get::<_, Option<i64>>(3) {
                record.in_line.insert(member.clone(), ticket);
            }
            record.draws.push((row.get(1), member));
        }
    }
    Ok(Some(Stored { record, archived: row.get(7) }))
}

/// A few names for a message.
fn sample(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        _ => format!(" (e.g. {})", names.iter().take(5).copied().collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_a_function_of_the_seed_and_the_members_alone() {
        let members = ["m-1", "m-2", "m-3", "m-4", "m-5", "m-6"];
        let seed = "00".repeat(32);
        let once = order(&seed, members);
        let reversed = order(&seed, members.iter().rev().copied());
        assert_eq!(once, reversed, "arrival order does not matter");
        assert_ne!(order(&"11".repeat(32), members), once, "another seed, another draw");
        assert_eq!(once.len(), members.len());
    }

    #[test]
    fn the_commitment_and_the_draw_are_documented_sha_256() {
        assert_eq!(commitment(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(draw("s", "m"), hex::encode(Sha256::digest(b"s|m")));
        let seed = new_seed();
        assert_eq!(seed.len(), 64);
        assert_ne!(seed, new_seed());
    }

    fn record(seed: &str, members: &[&str]) -> ShuffleRecord {
        let drawn = order(seed, members.iter().copied());
        ShuffleRecord {
            event_id: "ev".into(),
            mode: "shuffle".into(),
            opened_at_ms: Some(10_000),
            seed: seed.into(),
            commitment: commitment(seed),
            pre_queued: drawn.len() as i64,
            rate_per_sec: 10,
            burst: 2,
            draws: drawn.iter().map(|m| (draw(seed, m), m.clone())).collect(),
            passed_at_ms: drawn.iter().enumerate().map(|(i, m)| (m.clone(), 10_000 + 100 * i as i64)).collect(),
            in_line: HashMap::new(),
        }
    }

    #[test]
    fn an_honest_room_passes_every_check() {
        let checks = verify(&record(&"ab".repeat(32), &["m-1", "m-2", "m-3", "m-4", "m-5"]));
        assert!(checks.iter().all(|c| c.holds), "{checks:?}");
    }

    #[test]
    fn another_seed_a_swapped_order_or_an_early_pass_is_caught() {
        let honest = record(&"ab".repeat(32), &["m-1", "m-2", "m-3", "m-4", "m-5"]);
        let failing =
            |r: &ShuffleRecord| verify(r).into_iter().filter(|c| !c.holds).map(|c| c.name).collect::<Vec<_>>();
        let mut reseeded = honest.clone();
        reseeded.seed = "cd".repeat(32);
        assert!(failing(&reseeded).contains(&"commitment"));
        let mut swapped = honest.clone();
        swapped.draws.swap(0, 3);
        assert!(failing(&swapped).contains(&"order"));
        let mut jumped = honest.clone();
        let last = jumped.draws[4].1.clone();
        jumped.passed_at_ms.insert(last, 10_000);
        assert_eq!(failing(&jumped), ["gate"]);
    }

    #[test]
    fn the_gate_lets_the_first_burst_through_at_once_then_paces() {
        assert_eq!(earliest_pass_ms(1_000, 1, 2, 10), 1_000);
        assert_eq!(earliest_pass_ms(1_000, 2, 2, 10), 1_000);
        assert_eq!(earliest_pass_ms(1_000, 3, 2, 10), 1_100);
        assert_eq!(earliest_pass_ms(1_000, 12, 2, 10), 2_000);
    }
}
