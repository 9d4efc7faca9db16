//! `firstcome verify shuffle <event>`: replays the waiting room's pre-queue
//! draw from the revealed seed and the pre-queue's members, and checks the
//! room against it (`ingest::shuffle::verify`): the seed is the committed
//! one, every draw and the order are the replay's, the members still in
//! line hold their drawn places, and none passed the gate before it could
//! reach them. Reads the room's keys in Redis (they expire with the event).

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
        &[Need::Redis]
    }
}

pub async fn command(settings: &CliSettings, command: VerifyCommand) -> anyhow::Result<Output> {
    match command {
        VerifyCommand::Shuffle { event_id } => {
            let mut redis = platform::redis::connect(&settings.redis).await?;
            let record = ingest::waiting_room::shuffle_record(&mut redis, &event_id).await?;
            let checks = ingest::shuffle::verify(&record);
            let holds = checks.iter().all(|c| c.holds);
            let mut text = format!(
                "event {event_id}: {} pre-queued, order {}, seed {}\n",
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
