//! `firstcome gifts parked`: the gifts the sender set aside because the
//! provider's answers settle nothing (they may have been issued; a lookup
//! could not tell). Each keeps its payout claim and is retried by the
//! sender on its own schedule; this shows which, since when, how many tries
//! and the last answer (docs/provider.md).

use anyhow::Context;
use sender::store::ParkedGift;

use crate::settings::CliSettings;

/// The parked gifts (of `event_id`, when given), the longest parked first.
pub async fn parked(settings: &CliSettings, event_id: Option<&str>) -> anyhow::Result<Vec<ParkedGift>> {
    let pool = platform::db::pool(&settings.database).context("Failed to connect to PostgreSQL")?;
    sender::store::parked_gifts(&pool, event_id).await.context("Failed to read parked_gifts")
}

/// One line per gift, for people.
pub fn print(gifts: &[ParkedGift]) {
    if gifts.is_empty() {
        println!("no parked gifts");
        return;
    }
    println!("{:<36}  {:<24}  {:<16}  {:>5}  {:<20}  {:>5}  {:<20}  last answer", "entry", "event", "member", "unit", "parked at", "tries", "next try");
    for gift in gifts {
        println!(
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
    println!("{} parked (each keeps its claim and is retried by the sender)", gifts.len());
}
