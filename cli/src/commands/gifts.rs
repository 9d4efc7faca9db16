//! `firstcome gifts parked`: the gifts the sender set aside because the
//! provider's answers settle nothing (they may have been issued; a lookup
//! could not tell). Each keeps its payout claim and is retried by the
//! sender on its own schedule; this shows which, since when, how many tries
//! and the last answer (docs/provider.md).

use anyhow::Context;
use sender::store::ParkedGift;

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// The parked gifts (of `event_id`, when given), the longest parked first.
pub async fn parked(settings: &CliSettings, event_id: Option<&str>) -> anyhow::Result<Vec<ParkedGift>> {
    let pool = platform::db::pool(&settings.database).context("Failed to connect to PostgreSQL")?;
    sender::store::parked_gifts(&pool, event_id).await.context("Failed to read parked_gifts")
}

/// One line per gift, for people.
pub fn text(gifts: &[ParkedGift]) -> String {
    use std::fmt::Write;
    if gifts.is_empty() {
        return "no parked gifts\n".into();
    }
    let mut out = format!(
        "{:<36}  {:<24}  {:<16}  {:>5}  {:<20}  {:>5}  {:<20}  last answer\n",
        "entry", "event", "member", "unit", "parked at", "tries", "next try"
    );
    for gift in gifts {
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:<16}  {:>5}  {:<20}  {:>5}  {:<20}  {}",
            gift.entry_id,
            gift.event_id,
            gift.user_id,
            gift.unit_no,
            gift.parked_at.format("%Y-%m-%d %H:%M:%S"),
            gift.tries,
            gift.next_try_at.format("%Y-%m-%d %H:%M:%S"),
            gift.last_error
        );
    }
    let _ = writeln!(out, "{} parked (each keeps its claim and is retried by the sender)", gifts.len());
    out
}

/// `firstcome gifts …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GiftsCommand {
    /// Gifts parked because the provider's answers settle nothing: each keeps its claim and is
    /// retried by the sender with backoff (docs/provider.md). Exit status 0 whether or not any are.
    Parked {
        /// Only this event's.
        #[arg(long)]
        event: Option<String>,
        /// The same as `--format json` (kept for scripts written before it).
        #[arg(long)]
        json: bool,
    },
}

impl GiftsCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Database]
    }

    /// Whether the command asks for JSON itself (`--json`).
    pub fn wants_json(&self) -> bool {
        matches!(self, GiftsCommand::Parked { json: true, .. })
    }
}

pub async fn command(settings: &CliSettings, command: GiftsCommand) -> anyhow::Result<Output> {
    let GiftsCommand::Parked { event, .. } = command;
    let gifts = parked(settings, event.as_deref()).await?;
    Ok(Output::new(text(&gifts), &gifts))
}
