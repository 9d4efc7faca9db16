//! `firstcome verify shuffle <event>`: replays the waiting room's pre-queue
//! draw from the revealed seed and the pre-queue's members, and checks the
//! room against it (`ingest::shuffle::verify`): the seed is the committed
//! one, every draw and the order are the replay's, the members still in
//! line hold their drawn places, and none passed the gate before it could
//! reach them.
//!
//! It reads the room's keys in Redis while they live, and checks that their
//! commitment is the one `event create` recorded in PostgreSQL; once they
//! expired with the event (or Redis lost them) it reads what PostgreSQL
//! keeps: the commitment and seed recorded at the create
//! ([`commit_shuffle`]) and the draw archived at the close
//! ([`archive_shuffle`]).

use anyhow::Context;
use ingest::shuffle::{ShuffleCheck, ShuffleRecord};

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum VerifyCommand {
    /// Replay the pre-queue shuffle of an event and check the order the waiting room let
    /// its members through (exit 1 when a check does not hold).
    Shuffle { event_id: String },
}

impl VerifyCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Redis, Need::Database]
    }
}

/// Commits the event's shuffle seed in the waiting room's Redis hash and
/// records it in PostgreSQL, so both hold the same pair before anyone can
/// queue (`event create` runs it once the event's `meta` exists, whose
/// lifetime the room's hash takes). The seed recorded earlier (a create run
/// again) is the one committed; a room that already holds a seed (an ingest
/// drew one first) keeps it, and that one is recorded. Returns the commitment.
pub async fn commit_shuffle(
    db: &tokio_postgres::Client,
    redis: &mut platform::redis::Connection,
    event_id: &str,
) -> anyhow::Result<String> {
    let recorded = ingest::shuffle::recorded_seed(db, event_id).await.context("Failed to read event_shuffles")?;
    let seed = recorded.clone().unwrap_or_else(ingest::shuffle::new_seed);
    let held = ingest::waiting_room::commit_seed(redis, event_id, &seed)
        .await
        .context("Failed to commit the shuffle's seed in Redis")?;
    if recorded.as_ref().is_some_and(|r| *r != held.seed) {
        // The replay will fail on the room's draws: say it now, where the operator looks.
        tracing::warn!(
            event_id,
            room = %held.commitment,
            "the waiting room holds another seed than the one recorded in PostgreSQL"
        );
        return Ok(held.commitment);
    }
    let (_, commitment) = ingest::shuffle::record_commitment(db, event_id, &held.seed)
        .await
        .context("Failed to record the shuffle's commitment")?;
    Ok(commitment)
}

/// Puts the seed recorded at the create back in the room's hash if the
/// room lost it (`rebuild redis`, after a Redis loss): otherwise the first
/// ingest to see the room again would draw another, and the commitment
/// already published would no longer hold. A room that holds a seed keeps
/// it; an event with no recorded seed is left alone. Returns whether a seed
/// was recorded.
pub async fn restore_shuffle_seed(
    settings: &CliSettings,
    redis: &mut platform::redis::Connection,
    event_id: &str,
) -> anyhow::Result<bool> {
    let client = platform::db::pool(&settings.database)?.get().await.context("Failed to connect to PostgreSQL")?;
    let Some(seed) =
        ingest::shuffle::recorded_seed(&**client, event_id).await.context("Failed to read event_shuffles")?
    else {
        return Ok(false);
    };
    let held = ingest::waiting_room::commit_seed(redis, event_id, &seed)
        .await
        .context("Failed to restore the shuffle's seed in Redis")?;
    if held.seed != seed {
        tracing::warn!(event_id, room = %held.commitment, "the waiting room holds another seed than the one recorded");
    }
    Ok(true)
}

/// Keeps the waiting room's draw of `event_id` in PostgreSQL (`event
/// close`): its record read from Redis, replacing an earlier archive.
/// Returns the members archived, or `None` when Redis holds no room (its
/// keys are gone: an earlier archive, if any, is kept as it is).
pub async fn archive_shuffle(
    pool: &deadpool_postgres::Pool,
    redis: &mut platform::redis::Connection,
    event_id: &str,
) -> anyhow::Result<Option<usize>> {
    let record =
        ingest::waiting_room::shuffle_record(redis, event_id).await.context("Failed to read the waiting room")?;
    if record.commitment.is_empty() {
        return Ok(None);
    }
    let mut client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let tx = client.transaction().await.context("Failed to begin the archive")?;
    let archived = ingest::shuffle::archive(&*tx, &record).await.context("Failed to archive the shuffle")?;
    tx.commit().await.context("Failed to commit the archive")?;
    tracing::info!(event_id, archived, opened = record.opened_at_ms.is_some(), "the pre-queue draw archived");
    Ok(Some(archived))
}

/// Where the record replayed came from, and the checks beyond the replay's.
struct Source {
    name: &'static str,
    record: ShuffleRecord,
    checks: Vec<ShuffleCheck>,
}

/// The room's record from Redis while it holds one, else PostgreSQL's.
async fn source(settings: &CliSettings, event_id: &str) -> anyhow::Result<Source> {
    let mut redis = platform::redis::connect(&settings.redis).await?;
    let live = ingest::waiting_room::shuffle_record(&mut redis, event_id).await?;
    let client = platform::db::pool(&settings.database)?.get().await.context("Failed to connect to PostgreSQL")?;
    let with_draws = live.commitment.is_empty();
    let stored = ingest::shuffle::stored(&**client, event_id, with_draws)
        .await
        .context("Failed to read event_shuffles (is the database migrated? `firstcome db migrate`)")?;
    let check = |name, holds, detail: String| ShuffleCheck { name, holds, detail };
    if !live.commitment.is_empty() {
        let mut checks = Vec::new();
        if let Some(stored) = stored {
            let recorded = &stored.record.commitment;
            checks.push(check(
                "recorded",
                *recorded == live.commitment,
                format!("the room's commitment {}, recorded at the create {recorded}", live.commitment),
            ));
        }
        return Ok(Source { name: "redis", record: live, checks });
    }
    match stored {
        Some(stored) => {
            let checks = if stored.archived {
                Vec::new()
            } else {
                vec![check(
                    "archived",
                    false,
                    "the room's keys are gone and its draw was never archived (`firstcome event close` archives it)"
                        .into(),
                )]
            };
            Ok(Source { name: "postgresql", record: stored.record, checks })
        }
        None => Ok(Source {
            name: "none",
            record: ShuffleRecord { event_id: event_id.to_string(), ..Default::default() },
            checks: vec![check("recorded", false, "neither Redis nor PostgreSQL holds a draw of this event".into())],
        }),
    }
}

pub async fn command(settings: &CliSettings, command: VerifyCommand) -> anyhow::Result<Output> {
    match command {
        VerifyCommand::Shuffle { event_id } => {
            let Source { name, record, mut checks } = source(settings, &event_id).await?;
            if name != "none" {
                checks.extend(ingest::shuffle::verify(&record));
            }
            let holds = checks.iter().all(|c| c.holds);
            let mut text = format!(
                "event {event_id}: {} pre-queued, order {}, seed {} (from {name})\n",
                record.pre_queued,
                if record.mode.is_empty() { "unknown" } else { &record.mode },
                if record.seed.is_empty() { "none" } else { &record.seed }
            );
            for check in &checks {
                text.push_str(&format!(
                    "{} {}: {}\n",
                    if check.holds { "ok  " } else { "FAIL" },
                    check.name,
                    check.detail
                ));
            }
            let json = serde_json::json!({
                "event_id": event_id,
                "holds": holds,
                "source": name,
                "pre_queued": record.pre_queued,
                "mode": record.mode,
                "seed": record.seed,
                "commitment": record.commitment,
                "checks": checks,
            });
            Ok(Output::new(text, &json).failed_if(!holds, "the shuffle does not replay"))
        }
    }
}
