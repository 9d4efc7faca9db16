//! `firstcome reconcile`: check the six invariants against Redis (counter,
//! decisions, accepted first-entry marks), the PostgreSQL ledger, entries and
//! payout claims, our dispatch records and the provider's; count what was
//! refused on the way (WONs the payout guard refused, releases the stock
//! stage dead-lettered) and list the phantom successes (members told "won"
//! whose WON the guard refused, never paid: invariant 4 does not hold while
//! there is one); with `--repair`, rebuild the event's Redis state from the
//! Kafka log.
//!
//! The repair never trusts Redis' own records: a Redis that lost its last
//! second lost the decisions with the counter, so recomputing the counter
//! from what it still holds would only confirm the loss. It runs `firstcome
//! rebuild redis` (see `stock_processor::rebuild`), which reads the log of
//! record and swaps the rebuilt state in with a compare-and-swap, so it needs
//! no idle pipeline; the ledger (written later, by the recording group) is
//! only reported.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Context;
use rdkafka::message::Message;

use schemas::StockRelease;

use super::dlq;
use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;
use audit::{InvariantReport, Stores};

#[derive(Debug)]
pub struct Reconciliation {
    pub report: InvariantReport,
    /// The counter value written by `--repair`, if it changed.
    pub repaired_stock: Option<i64>,
    /// WONs of this event the payout guard refused, by reason (never paid).
    pub payout_refusals: BTreeMap<String, i64>,
    /// Releases of this event dead-lettered on `stock-released.dlq`.
    pub refused_releases: RefusedReleases,
}

/// Releases (`stock-released` records) refused on the way: their unit did
/// not go back to stock where they were refused.
#[derive(Debug, Default, serde::Serialize)]
pub struct RefusedReleases {
    /// Of this event, by the group that dead-lettered them.
    pub by_group: BTreeMap<String, usize>,
    /// Dead letters whose bytes do not decode as a release: their event is
    /// unknown, so they are counted for every event.
    pub unreadable: usize,
}

impl RefusedReleases {
    /// Refused by the stock stage (group `stock`): units not returned to Redis.
    pub fn by_stock_stage(&self, settings: &CliSettings) -> usize {
        self.by_group.get(&settings.kafka.group(STOCK_GROUP)).copied().unwrap_or(0)
    }
}

/// The stock stage's consumer group, behind the topic prefix.
const STOCK_GROUP: &str = stock_processor::GROUP;

pub async fn run(
    settings: &CliSettings,
    event_id: &str,
    provider_url: Option<&str>,
    repair: bool,
) -> anyhow::Result<Reconciliation> {
    let stores = Stores::connect(&settings.database, &settings.redis).await?;
    let mut repaired_stock = None;
    if repair {
        let rebuilt = crate::audit_trail::audited(
            settings,
            crate::audit_trail::Action::new("reconcile repair", Some(event_id), serde_json::json!({})),
            super::rebuild::redis::rebuild(settings, event_id),
        )
        .await?;
        if rebuilt.stock_before != Some(rebuilt.stock_after) {
            repaired_stock = Some(rebuilt.stock_after);
        }
    }
    // No rush here: invariant 3 is checked against Redis' accepted marks.
    let report = audit::check(&stores, event_id, &[], provider_url).await?;
    let payout_refusals = payout_refusals(&stores, event_id).await?;
    let refused_releases = refused_releases(settings, event_id).await?;
    Ok(Reconciliation { report, repaired_stock, payout_refusals, refused_releases })
}

/// The event's refused WONs by reason.
async fn payout_refusals(stores: &Stores, event_id: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let db = stores.db().await?;
    Ok(db
        .query("SELECT reason, count(*) FROM payout_refusals WHERE event_id = $1 GROUP BY reason", &[&event_id])
        .await
        .context("Failed to count payout refusals")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Counts the event's dead letters on `stock-released.dlq` (every one there
/// when the call starts, read by assignment; nothing committed).
async fn refused_releases(settings: &CliSettings, event_id: &str) -> anyhow::Result<RefusedReleases> {
    let source = settings.kafka.topics().stock_released;
    let dead = dlq::read(&settings.kafka, &source, usize::MAX).await?;
    let mut refused = RefusedReleases::default();
    if dead.is_empty() {
        return Ok(refused);
    }
    let codec = settings.registry.codec().context("Failed to build the registry codec")?;
    for message in &dead {
        match codec.decode::<StockRelease>(message.payload()).await {
            Ok(release) if release.event_id == event_id => {
                let group = dlq::header(message.headers(), "dlq-group").unwrap_or_else(|| "?".into());
                *refused.by_group.entry(group).or_default() += 1;
            }
            Ok(_) => {}
            Err(schemas::CodecError::Poison(_)) => refused.unreadable += 1,
            Err(error) => return Err(error).context("Failed to decode a dead-lettered release"),
        }
    }
    Ok(refused)
}

/// What `run` found, for people.
pub fn text(settings: &CliSettings, event_id: &str, outcome: &Reconciliation) -> String {
    let mut out = format!("reconcile {event_id}\n");
    out.push_str(&audit::text(&outcome.report.checks));
    if let Some(stock) = outcome.repaired_stock {
        let _ = writeln!(out, "repaired: redis stock set to {stock} (rebuilt from the Kafka log)");
    }
    let refusals: i64 = outcome.payout_refusals.values().sum();
    if refusals > 0 {
        let reasons: Vec<String> = outcome.payout_refusals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "payout guard refused {refusals} WONs (never paid; see the dispatch dead letters): {}",
            reasons.join(", ")
        );
    }
    out.push_str(&phantoms(&outcome.report));
    let releases = &outcome.refused_releases;
    if !releases.by_group.is_empty() || releases.unreadable > 0 {
        let groups: Vec<String> = releases.by_group.iter().map(|(g, n)| format!("{g} {n}")).collect();
        let _ = writeln!(
            out,
            "releases dead-lettered on stock-released.dlq: {} by the stock stage (units not returned to Redis); by group: {}; {} unreadable",
            releases.by_stock_stage(settings),
            groups.join(", "),
            releases.unreadable
        );
    }
    out
}

/// The phantom successes: the members to make good by hand.
fn phantoms(report: &InvariantReport) -> String {
    let total = report.tally.phantom_successes;
    if total == 0 {
        return String::new();
    }
    let mut out =
        format!("phantom successes: {total} members told \"won\" whose WON the payout guard refused (never paid)\n");
    let _ = writeln!(out, "  {:<36}  {:<20}  {:>5}  {:<19}  refused at", "entry", "member", "unit", "reason");
    for p in &report.phantom_successes {
        let unit = p.unit_no.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {:<36}  {:<20}  {:>5}  {:<19}  {}",
            p.entry_id,
            p.member,
            unit,
            p.reason,
            p.refused_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    let listed = report.phantom_successes.len() as i64;
    if total > listed {
        let _ = writeln!(out, "  … {} more (payout_refusals of the event, joined with event_entries)", total - listed);
    }
    out
}

/// `firstcome reconcile`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    event_id: String,
    /// The gift provider, to compare its records too.
    #[arg(long)]
    provider_url: Option<String>,
    /// Rebuild the event's Redis state from the Kafka log first.
    #[arg(long)]
    repair: bool,
}

impl ReconcileArgs {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Database, Need::Redis, Need::Kafka, Need::Registry]
    }
}

/// Checks the invariants; exit 1 when one does not hold.
pub async fn command(settings: &CliSettings, args: ReconcileArgs) -> anyhow::Result<Output> {
    let outcome = run(settings, &args.event_id, args.provider_url.as_deref(), args.repair).await?;
    let json = serde_json::json!({
        "event_id": args.event_id,
        "holds": outcome.report.all_hold(),
        "report": outcome.report,
        "repaired_stock": outcome.repaired_stock,
        "payout_refusals": outcome.payout_refusals,
        "refused_releases": outcome.refused_releases,
    });
    Ok(Output::new(text(settings, &args.event_id, &outcome), &json).failed_if(
        !outcome.report.all_hold(),
        "invariants do not hold (a lagging pipeline settles by itself; --repair rebuilds Redis from the log)",
    ))
}
