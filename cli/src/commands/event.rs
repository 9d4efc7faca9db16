//! `firstcome event create | show | close`.
//!
//! `create` writes the event (as `scheduled`) and its ledger to PostgreSQL,
//! then loads the eligible members (bought the product) from the shop's member
//! replica (`replica.url`, a streaming standby) into
//! Redis and sets the event's keys (see `platform::event_keys`), all expiring
//! after close, then marks the event open in PostgreSQL. Run again after a
//! failure, it completes what it started.
//!
//! The operator's guardrails are the command's ([`command`]), not the
//! library's: `create --dry-run` prints the [`Plan`] (eligible members on the
//! replica, stock, schedule, the log's retention, warnings) and changes
//! nothing; `create` refuses an event whose entries `survey-submitted` would
//! delete before the close and the rebuild window; outside local, `create`
//! and `close` ask for confirmation (or `--yes`); and both are recorded in
//! `operator_actions` ([`crate::audit_trail`]).

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;

use platform::event_keys::{write_event, EventKeys, EventMeta, EventStatus, GRACE_AFTER_CLOSE};

use crate::audit_trail::{self, Action};
use crate::exit::Usage;
use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// The survey every demo event asks.
pub const DEFAULT_QUESTIONS: [&str; 2] = ["satisfaction", "recommend"];

/// The gift of an event created without `--gift` (the column's default too).
pub const DEFAULT_GIFT: &str = "₩10,000 coffee gifticon";

/// How long after the close the event may still be rebuilt from
/// `survey-submitted` (`rebuild redis`, `reconcile --repair`): as long as
/// its Redis keys live.
pub const DEFAULT_REBUILD_WINDOW: chrono::Duration = chrono::Duration::seconds(GRACE_AFTER_CLOSE.as_secs() as i64);

/// An event to create.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub name: String,
    pub product_id: String,
    pub total_stock: i32,
    pub safety_stock: i32,
    pub open_at: DateTime<Utc>,
    pub close_at: DateTime<Utc>,
    pub questions: Vec<String>,
    /// Entries that may wait in line beyond the units (`--line-depth`);
    /// `None`: [`EventMeta::default_line_depth`].
    pub line_depth: Option<i32>,
}

impl NewEvent {
    pub fn for_sale(&self) -> i32 {
        self.total_stock - self.safety_stock
    }

    /// The line's depth this event admits: the one given, else the default.
    pub fn line_depth(&self) -> i64 {
        self.line_depth.map(i64::from).unwrap_or_else(|| EventMeta::default_line_depth(i64::from(self.for_sale())))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    }

    /// What makes the event invalid (empty: nothing).
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        // The rules every consumer applies to event ids (they go into Redis keys).
        if let Err(e) = schemas::check_id("event id", &self.event_id) {
            out.push(e.to_string());
        }
        if self.total_stock < 0 || self.safety_stock < 0 || self.safety_stock > self.total_stock {
            out.push("need 0 <= safety stock <= total stock".into());
        }
        if self.line_depth.is_some_and(|depth| depth < 0) {
            out.push("need a line depth >= 0 (0: admission closes when the tickets reach the units)".into());
        }
        if self.close_at <= self.open_at {
            out.push("close_at must be after open_at (the event would close before it opens)".into());
        }
        out
    }
}

/// Parses `now`, `+90s`, `+15m`, `+2h`, `-5m` or an RFC 3339 time.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if text == "now" {
        return Ok(now);
    }
    if let Some(rest) = text.strip_prefix('+').map(|r| (1, r)).or(text.strip_prefix('-').map(|r| (-1, r))) {
        let (sign, rest) = rest;
        let (number, unit) = rest.split_at(rest.len().saturating_sub(1));
        let n: i64 = number.parse().with_context(|| format!("bad relative time {text}"))?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => bail!("bad unit in {text} (s, m, h, d)"),
        };
        return Ok(now + chrono::Duration::seconds(sign * secs));
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad time {text}: use now, +10m or RFC 3339"))?
        .with_timezone(&Utc))
}

/// Creates the event; returns how many members are eligible.
///
/// Three steps, in this order so that no failure in between leaves a live
/// event PostgreSQL does not know:
/// 1. PostgreSQL, one transaction: the event row as `scheduled` and its ledger
///    (the payout guard's counter, `events.payout_claimed`, starts at 0 by
///    default). Ingest does not know the event yet.
/// 2. Redis: the event's keys ([`write_event`]); `meta`, written last, is what
///    makes the event live for ingest.
/// 3. PostgreSQL: the row marked open.
///
/// A create that stopped after step 1 or 2 is completed by running it again
/// with the same parameters: a `scheduled` row is taken up (not refused), the
/// Redis keys are written if `meta` is missing, or kept when `meta` describes
/// this same event (step 2 finished, step 3 did not). An event past step 3
/// (open, sold out, closed), a `scheduled` row with other parameters, or a
/// Redis `meta` describing another event is refused.
pub async fn create(settings: &CliSettings, event: &NewEvent) -> anyhow::Result<usize> {
    create_with_gift(settings, event, DEFAULT_GIFT).await
}

/// [`create`], naming the event's gift (the survey page shows it beside the name).
pub async fn create_with_gift(settings: &CliSettings, event: &NewEvent, gift: &str) -> anyhow::Result<usize> {
    event.validate()?;
    let pool = platform::db::pool(&settings.database)?;
    let mut client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    schedule(&mut client, event, gift).await?;
    // Eligibility comes from the shop's member replica, never its primary.
    let eligible = super::members::eligible(&settings.replica, &event.product_id).await.with_context(|| {
        format!(
            "Failed to read eligibility on the member replica: event {} stays scheduled, run create again",
            event.event_id
        )
    })?;

    let meta = event.meta();
    let mut redis = platform::redis::connect(&settings.redis).await.with_context(|| {
        format!("Failed to connect to Redis: event {} stays scheduled, run create again", event.event_id)
    })?;
    let written = write_event(&mut redis, &meta, &eligible).await.with_context(|| {
        format!("Failed to write the Redis keys: event {} stays scheduled, run create again", event.event_id)
    })?;
    if !written {
        // `meta` exists: ours, from a run that stopped before step 3, or another event's.
        let live = EventMeta::load(&mut redis, &event.event_id).await?;
        match live {
            Some(live) if same_event(&live, &meta) => {
                tracing::info!(event_id = %event.event_id, "Redis keys already written by an earlier create: completing it");
            }
            _ => bail!(
                "event {} already has Redis keys for other parameters: refusing to overwrite a live event",
                event.event_id
            ),
        }
    }
    // What the survey page shows before sign-in, beside the meta's facts
    // (fields `EventMeta` does not read; written again by a resumed create).
    let _: () = redis::cmd("HSET")
        .arg(EventKeys::new(&event.event_id).meta)
        .arg("name")
        .arg(&event.name)
        .arg("gift")
        .arg(gift)
        .query_async(&mut redis)
        .await
        .with_context(|| {
            format!("Failed to write the event's name and gift: run create again for {}", event.event_id)
        })?;
    // The pre-queue shuffle's seed, committed in the room and recorded in
    // PostgreSQL before the event opens (the record outlives the room's keys).
    super::verify::commit_shuffle(&client, &mut redis, &event.event_id)
        .await
        .with_context(|| format!("Failed to commit the shuffle's seed: run create again for {}", event.event_id))?;

    let opened = client
        .execute(
            "UPDATE events SET status = $2 WHERE event_id = $1 AND status = 'scheduled'",
            &[&event.event_id, &meta.status.as_str()],
        )
        .await
        .with_context(|| format!("Failed to open event {} in PostgreSQL: run create again", event.event_id))?;
    if opened == 0 {
        // A concurrent create of the same event finished first; nothing left to do.
        tracing::info!(event_id = %event.event_id, "event already opened by a concurrent create");
    }
    Ok(eligible.len())
}

impl NewEvent {
    /// The event as its Redis `meta` describes it.
    fn meta(&self) -> EventMeta {
        EventMeta {
            event_id: self.event_id.clone(),
            open_at_ms: self.open_at.timestamp_millis(),
            close_at_ms: self.close_at.timestamp_millis(),
            for_sale: i64::from(self.for_sale()),
            line_depth: self.line_depth(),
            questions: self.questions.clone(),
            status: if self.for_sale() > 0 { EventStatus::Open } else { EventStatus::SoldOut },
        }
    }

    /// What differs between this event and a stored one (empty: the same).
    /// Times are compared to the microsecond, PostgreSQL's precision.
    fn differences(&self, stored: &NewEvent) -> Vec<String> {
        let mut out = Vec::new();
        let mut differs = |what: &str, given: String, kept: String| {
            if given != kept {
                out.push(format!("{what}: given {given}, stored {kept}"));
            }
        };
        differs("name", self.name.clone(), stored.name.clone());
        differs("product", self.product_id.clone(), stored.product_id.clone());
        differs("total stock", self.total_stock.to_string(), stored.total_stock.to_string());
        differs("safety stock", self.safety_stock.to_string(), stored.safety_stock.to_string());
        differs("line depth", self.line_depth().to_string(), stored.line_depth().to_string());
        let micros =
            |t: &DateTime<Utc>| DateTime::<Utc>::from_timestamp_micros(t.timestamp_micros()).unwrap_or(*t).to_rfc3339();
        differs("open_at", micros(&self.open_at), micros(&stored.open_at));
        differs("close_at", micros(&self.close_at), micros(&stored.close_at));
        differs("questions", self.questions.join(","), stored.questions.join(","));
        out
    }
}

/// Whether two metas describe the same event's static facts (its status
/// moves on by itself).
fn same_event(a: &EventMeta, b: &EventMeta) -> bool {
    a.event_id == b.event_id
        && a.open_at_ms == b.open_at_ms
        && a.close_at_ms == b.close_at_ms
        && a.for_sale == b.for_sale
        && a.line_depth == b.line_depth
        && a.questions == b.questions
}

/// Step 1: the `scheduled` event row and its ledger, or the `scheduled` row an
/// earlier create left with the same parameters.
async fn schedule(client: &mut deadpool_postgres::Client, event: &NewEvent, gift: &str) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    let questions = serde_json::to_value(&event.questions)?;
    // The depth resolved now: a lost event restored from this row admits as
    // far as it did, even if the default rule changes meanwhile.
    let line_depth = i32::try_from(event.line_depth()).context("line depth out of range")?;
    let inserted = tx
        .execute(
            "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, questions, status, gift, line_depth)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'scheduled', $9, $10) ON CONFLICT (event_id) DO NOTHING",
            &[&event.event_id, &event.name, &event.product_id, &event.total_stock, &event.safety_stock,
              &event.open_at, &event.close_at, &questions, &gift, &line_depth],
        )
        .await
        .context("Failed to insert the event row")?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT name, product_id, total_stock, safety_stock, open_at, close_at, questions, status, gift, line_depth
                 FROM events WHERE event_id = $1 FOR UPDATE",
                &[&event.event_id],
            )
            .await?;
        let status: String = row.get(7);
        if status != "scheduled" {
            bail!("event {} already exists ({status})", event.event_id);
        }
        let stored = NewEvent {
            event_id: event.event_id.clone(),
            name: row.get(0),
            product_id: row.get(1),
            total_stock: row.get(2),
            safety_stock: row.get(3),
            open_at: row.get(4),
            close_at: row.get(5),
            questions: serde_json::from_value(row.get(6)).unwrap_or_default(),
            line_depth: row.get(9),
        };
        let mut differences = event.differences(&stored);
        let stored_gift: String = row.get(8);
        if stored_gift != gift {
            differences.push(format!("gift: given {gift}, stored {stored_gift}"));
        }
        if !differences.is_empty() {
            bail!(
                "event {} was half-created with other parameters ({}): create it again with the stored ones to complete it",
                event.event_id,
                differences.join("; ")
            );
        }
        tracing::info!(event_id = %event.event_id, "completing a create that stopped half-way");
    }
    // The ledger is written in the same transaction as the row; ON CONFLICT
    // keeps a resumed create idempotent.
    tx.execute(
        "INSERT INTO stock_ledger (event_id, total, safety_stock) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING",
        &[&event.event_id, &event.total_stock, &event.safety_stock],
    )
    .await
    .context("Failed to insert the ledger")?;
    tx.commit().await.context("Failed to commit the scheduled event")?;
    Ok(())
}

/// An event's state across PostgreSQL and Redis.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: String,
    pub name: String,
    pub gift: String,
    pub status_db: String,
    pub status_redis: Option<String>,
    pub total: i32,
    pub safety_stock: i32,
    pub for_sale: i32,
    pub ledger_issued: i32,
    pub ledger_returned: i32,
    pub redis_stock: Option<i64>,
    pub redis_winners: i64,
    pub open_at: DateTime<Utc>,
    pub close_at: DateTime<Utc>,
    pub entries_by_status: HashMap<String, i64>,
    /// What operators did to the event (`operator_actions`), oldest first.
    pub operator_actions: Vec<audit_trail::Recorded>,
}

/// Reads the event's state.
pub async fn show(settings: &CliSettings, event_id: &str) -> anyhow::Result<EventView> {
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT e.name, e.status, e.total_stock, e.safety_stock, e.open_at, e.close_at,
                    COALESCE(l.issued, 0), COALESCE(l.returned, 0), e.gift
             FROM events e LEFT JOIN stock_ledger l USING (event_id) WHERE e.event_id = $1",
            &[&event_id],
        )
        .await?
        .with_context(|| format!("no event {event_id}"))?;
    let entries_by_status = client
        .query("SELECT status, count(*) FROM event_entries WHERE event_id = $1 GROUP BY status", &[&event_id])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let mut redis = platform::redis::connect(&settings.redis).await?;
    let keys = EventKeys::new(event_id);
    let meta = EventMeta::load(&mut redis, event_id).await?;
    let redis_stock: Option<i64> = redis.get(&keys.stock).await?;
    let winners: i64 = redis.hlen(&keys.winners).await?;
    let (total, safety): (i32, i32) = (row.get(2), row.get(3));
    Ok(EventView {
        event_id: event_id.to_string(),
        name: row.get(0),
        gift: row.get(8),
        status_db: row.get(1),
        status_redis: meta.map(|m| m.status.as_str().to_string()),
        total,
        safety_stock: safety,
        for_sale: total - safety,
        ledger_issued: row.get(6),
        ledger_returned: row.get(7),
        redis_stock,
        redis_winners: winners,
        open_at: row.get(4),
        close_at: row.get(5),
        entries_by_status,
        operator_actions: audit_trail::recorded(settings, Some(event_id)).await?,
    })
}

/// Closes the event now: every ingest instance answers 410 from then on
/// (`ingest::operations::close_event`, the same code as the dashboard's button).
pub async fn close(settings: &CliSettings, event_id: &str) -> anyhow::Result<()> {
    let pool = platform::db::pool(&settings.database)?;
    let mut redis = platform::redis::connect(&settings.redis).await?;
    ingest::operations::close_event(&pool, &mut redis, event_id).await?;
    // The room's draw outlives its Redis keys in PostgreSQL (`firstcome verify shuffle`, the report).
    super::verify::archive_shuffle(&pool, &mut redis, event_id)
        .await
        .with_context(|| format!("event {event_id} closed, but its pre-queue draw was not archived: close it again"))?;
    Ok(())
}

/// Waits until `check` holds or `timeout` passes (the one polling loop,
/// shared with the tests' `testkit`).
pub use platform::wait::wait_until;

/// How `survey-submitted`'s retention compares with what the event needs:
/// every entry must stay in the log until the close and the rebuild window
/// after it (`rebuild redis` and `reconcile --repair` read the event from it).
#[derive(Debug, Clone, Serialize)]
pub struct RetentionCheck {
    pub topic: String,
    /// The topic's `retention.ms`; `None`: kept forever (-1).
    pub retention_ms: Option<i64>,
    /// (close − now) + the rebuild window.
    pub needed_ms: i64,
    pub rebuild_window_ms: i64,
    /// Why the retention could not be read (the topic is missing, …).
    pub unreadable: Option<String>,
}

impl RetentionCheck {
    pub fn covers(&self) -> bool {
        self.unreadable.is_none() && self.retention_ms.is_none_or(|kept| kept >= self.needed_ms)
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.unreadable {
            return format!("{}: retention unknown ({why})", self.topic);
        }
        let kept = self.retention_ms.map_or_else(|| "forever".to_string(), |ms| human(ms / 1000));
        format!(
            "{} keeps records {kept}; the event needs {} (its close, then a rebuild window of {}): {}",
            self.topic,
            human(self.needed_ms / 1000),
            human(self.rebuild_window_ms / 1000),
            if self.covers() { "covered" } else { "NOT covered" }
        )
    }
}

/// Reads `survey-submitted`'s `retention.ms` (admin describe configs) and
/// compares it with (close − now) + `window`.
pub async fn retention_check(
    settings: &CliSettings,
    close_at: DateTime<Utc>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> anyhow::Result<RetentionCheck> {
    let topic = settings.kafka.topics().survey_submitted;
    let needed_ms = (close_at - now).num_milliseconds().max(0) + window.num_milliseconds();
    let mut check = RetentionCheck {
        topic: topic.clone(),
        retention_ms: None,
        needed_ms,
        rebuild_window_ms: window.num_milliseconds(),
        unreadable: None,
    };
    match platform::kafka::admin::topic_config(&settings.kafka, &topic, "retention.ms").await {
        Ok(Some(value)) => match value.trim().parse::<i64>() {
            Ok(ms) if ms < 0 => check.retention_ms = None,
            Ok(ms) => check.retention_ms = Some(ms),
            Err(_) => check.unreadable = Some(format!("retention.ms is {value:?}")),
        },
        Ok(None) => check.unreadable = Some("no retention.ms reported".into()),
        Err(rdkafka::error::KafkaError::AdminOp(code)) => {
            check.unreadable = Some(format!("{code:?}: run `firstcome topics create`?"))
        }
        Err(e) => return Err(e).with_context(|| format!("Failed to describe the configs of {topic}")),
    }
    Ok(check)
}

/// What `event create` would do, read without changing anything.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub event_id: String,
    pub name: String,
    pub gift: String,
    pub product_id: String,
    /// Members who bought the product, counted on the member replica.
    pub eligible: usize,
    pub total_stock: i32,
    pub safety_stock: i32,
    pub for_sale: i32,
    /// Entries admitted beyond the units, to wait in line.
    pub line_depth: i64,
    pub open_at: DateTime<Utc>,
    pub close_at: DateTime<Utc>,
    pub questions: Vec<String>,
    /// The event's row, if it has one (`scheduled`: a create stopped half-way).
    pub existing_status: Option<String>,
    pub retention: RetentionCheck,
    /// Worth a look; the create would go ahead.
    pub warnings: Vec<String>,
    /// The create would refuse.
    pub refusals: Vec<String>,
}

/// Reads what `create` would use — the member replica's eligible count, the
/// event's row and Redis meta, `survey-submitted`'s retention — and says
/// what it would do. Writes nothing anywhere.
pub async fn plan(
    settings: &CliSettings,
    event: &NewEvent,
    gift: &str,
    rebuild_window: chrono::Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Plan> {
    let mut refusals = event.problems();
    let mut warnings = Vec::new();
    let eligible = super::members::eligible(&settings.replica, &event.product_id)
        .await
        .context("Failed to count the eligible members on the member replica")?
        .len();
    let for_sale = event.for_sale();
    if (eligible as i64) < i64::from(for_sale) {
        warnings.push(format!(
            "fewer eligible members ({eligible}) than units for sale ({for_sale}): at least {} units cannot be won",
            i64::from(for_sale) - eligible as i64
        ));
    }
    if event.open_at < now {
        warnings.push(format!(
            "the opening is in the past ({} ago): the event opens at once",
            human((now - event.open_at).num_seconds())
        ));
    }
    if event.close_at <= now {
        warnings.push("the close is in the past: the event would be closed from the start".into());
    }
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let existing_status: Option<String> = client
        .query_opt("SELECT status FROM events WHERE event_id = $1", &[&event.event_id])
        .await
        .context("Failed to read the event's row")?
        .map(|row| row.get(0));
    match existing_status.as_deref() {
        Some("scheduled") => warnings.push(format!(
            "event {} was half-created: create completes it if the parameters are the stored ones",
            event.event_id
        )),
        Some(status) => refusals.push(format!("event {} already exists ({status})", event.event_id)),
        None => {}
    }
    if schemas::check_id("event id", &event.event_id).is_ok() {
        let mut redis = platform::redis::connect(&settings.redis).await.context("Failed to connect to Redis")?;
        let live: bool = redis::cmd("EXISTS")
            .arg(EventKeys::new(&event.event_id).meta)
            .query_async(&mut redis)
            .await
            .context("Failed to read the event's Redis meta")?;
        if live && existing_status.is_none() {
            refusals.push(format!("event {} is live in Redis without a row in PostgreSQL", event.event_id));
        }
    }
    let retention = retention_check(settings, event.close_at, now, rebuild_window).await?;
    if !retention.covers() {
        refusals.push(retention.describe());
    }
    Ok(Plan {
        event_id: event.event_id.clone(),
        name: event.name.clone(),
        gift: gift.to_string(),
        product_id: event.product_id.clone(),
        eligible,
        total_stock: event.total_stock,
        safety_stock: event.safety_stock,
        for_sale,
        line_depth: event.line_depth(),
        open_at: event.open_at,
        close_at: event.close_at,
        questions: event.questions.clone(),
        existing_status,
        retention,
        warnings,
        refusals,
    })
}

impl Plan {
    /// The plan for people.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        let when = |t: DateTime<Utc>| {
            let secs = (t - now).num_seconds();
            let relative = if secs >= 0 { format!("in {}", human(secs)) } else { format!("{} ago", human(-secs)) };
            format!("{} ({relative})", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        let mut out = format!(
            "event      {} \"{}\"\ngift       {}\nmembers    {} eligible (bought {}, counted on the member replica)\n\
             stock      {} total, {} safety stock, {} for sale, a line of {} beyond them\nschedule   opens {}, closes {}\n\
             questions  {}\nretention  {}\n",
            self.event_id,
            self.name,
            self.gift,
            self.eligible,
            self.product_id,
            self.total_stock,
            self.safety_stock,
            self.for_sale,
            self.line_depth,
            when(self.open_at),
            when(self.close_at),
            self.questions.join(", "),
            self.retention.describe(),
        );
        for warning in &self.warnings {
            out.push_str(&format!("warning    {warning}\n"));
        }
        for refusal in &self.refusals {
            out.push_str(&format!("refused    {refusal}\n"));
        }
        out
    }
}

/// `90061` → `1d 1h 1m` (the largest two units that are not zero).
fn human(secs: i64) -> String {
    let secs = secs.max(0);
    let parts = [(secs / 86_400, "d"), (secs % 86_400 / 3600, "h"), (secs % 3600 / 60, "m"), (secs % 60, "s")];
    let shown: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if shown.is_empty() {
        "0s".into()
    } else {
        shown.join(" ")
    }
}

/// Where a confirmation is asked: the operator's terminal, or a test's answer.
pub trait Prompt {
    /// Shows `question` and returns the answer; `None` when no one can
    /// answer (no terminal).
    fn ask(&mut self, question: &str) -> Option<String>;
}

/// The process's terminal: stderr for the question, stdin for the answer;
/// no answer when stdin is not a terminal (a script, a pipe).
pub struct Terminal;

impl Prompt for Terminal {
    fn ask(&mut self, question: &str) -> Option<String> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let mut stderr = std::io::stderr();
        write!(stderr, "{question}").ok()?;
        stderr.flush().ok()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer).ok()?;
        Some(answer)
    }
}

/// Outside local, an action on an event is confirmed: `--yes`, or the event
/// id typed back at the prompt (after `preview`). With no one to ask and no
/// `--yes` it is refused (exit 2), so a script never acts on production by
/// accident.
fn confirm(
    settings: &CliSettings,
    prompt: &mut dyn Prompt,
    yes: bool,
    action: &str,
    event_id: &str,
    preview: &str,
) -> Result<(), Usage> {
    if yes || settings.environment.is_local() {
        return Ok(());
    }
    let question = format!("{preview}{action} {event_id} ({:?}). Type the event id to confirm: ", settings.environment);
    match prompt.ask(&question) {
        None => Err(Usage(format!("{action} outside local needs confirmation: run it at a terminal, or pass --yes"))),
        Some(answer) if answer.trim() == event_id => Ok(()),
        Some(_) => Err(Usage(format!("{action} not confirmed: nothing was changed"))),
    }
}

/// `firstcome event …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventCommand {
    /// Create an event and load its eligible members into Redis.
    Create {
        /// Event id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "Survey reward: ₩10,000 coffee")]
        name: String,
        /// The gift, as members read it on the survey page.
        #[arg(long, default_value = DEFAULT_GIFT)]
        gift: String,
        #[arg(long, default_value = "coffee-beans-1kg")]
        product: String,
        #[arg(long)]
        total: i32,
        #[arg(long, default_value_t = 0)]
        safety: i32,
        /// Entries admitted beyond the units, to wait for a returned one; admission
        /// answers 410 once the tickets reach for-sale + this (default: a tenth of
        /// the units, at least 100).
        #[arg(long)]
        line_depth: Option<i32>,
        /// now, +10m, -5m or RFC 3339
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        open_at: String,
        #[arg(long, default_value = "+1h", allow_hyphen_values = true)]
        close_at: String,
        /// Required question ids, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_QUESTIONS.map(String::from))]
        questions: Vec<String>,
        /// How long after the close the event may be rebuilt from survey-submitted
        /// (30m, 12h, 1d): its retention must cover the close and this.
        #[arg(long, default_value = "1d")]
        rebuild_window: String,
        /// Print what would happen (eligible members, stock, schedule, retention,
        /// warnings) and change nothing; exit 1 when the create would be refused.
        #[arg(long)]
        dry_run: bool,
        /// Outside local: create without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Show an event across PostgreSQL and Redis, with the operator actions on it.
    Show { event_id: String },
    /// The event's public report (JSON), as ingest serves it at /api/events/{id}/report:
    /// counts, winners, FCFS fidelity, timeline, the shuffle, the receipts' Merkle root.
    Report { event_id: String },
    /// Close an event now.
    Close {
        event_id: String,
        /// Outside local: close without asking.
        #[arg(long)]
        yes: bool,
    },
}

impl EventCommand {
    pub fn needs(&self) -> &'static [Need] {
        match self {
            EventCommand::Create { .. } => &[Need::Database, Need::Replica, Need::Redis, Need::Kafka],
            EventCommand::Show { .. } | EventCommand::Close { .. } | EventCommand::Report { .. } => {
                &[Need::Database, Need::Redis]
            }
        }
    }
}

/// `30m`, `12h`, `1d` as a duration (the units of [`parse_time`]).
fn parse_window(text: &str) -> Result<chrono::Duration, Usage> {
    let now = Utc::now();
    let at = parse_time(&format!("+{}", text.trim_start_matches('+')), now)
        .map_err(|e| Usage(format!("--rebuild-window: {e:#}")))?;
    Ok(at - now)
}

/// Runs `firstcome event …`, asking confirmations at the terminal.
pub async fn command(settings: &CliSettings, command: EventCommand) -> anyhow::Result<Output> {
    run(settings, command, &mut Terminal).await
}

/// Runs `firstcome event …`, asking confirmations with `prompt`.
pub async fn run(settings: &CliSettings, command: EventCommand, prompt: &mut dyn Prompt) -> anyhow::Result<Output> {
    match command {
        EventCommand::Create {
            id,
            name,
            gift,
            product,
            total,
            safety,
            line_depth,
            open_at,
            close_at,
            questions,
            rebuild_window,
            dry_run,
            yes,
        } => {
            let now = Utc::now();
            let time = |text: &str| parse_time(text, now).map_err(|e| Usage(format!("{e:#}")));
            let new = NewEvent {
                event_id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                name,
                product_id: product,
                total_stock: total,
                safety_stock: safety,
                open_at: time(&open_at)?,
                close_at: time(&close_at)?,
                questions,
                line_depth,
            };
            let window = parse_window(&rebuild_window)?;
            let plan = plan(settings, &new, &gift, window, now).await?;
            if dry_run {
                let text = format!("dry run: nothing was changed\n{}", plan.render(now));
                let mut json = serde_json::to_value(&plan)?;
                json["dry_run"] = serde_json::Value::Bool(true);
                return Ok(Output::new(text, &json)
                    .failed_if(!plan.refusals.is_empty(), "the create would be refused (see `refused`)"));
            }
            if !plan.retention.covers() {
                bail!(
                    "refusing to create event {}: {} (raise the topic's retention.ms, or close the event sooner)",
                    new.event_id,
                    plan.retention.describe()
                );
            }
            confirm(settings, prompt, yes, "create event", &new.event_id, &plan.render(now))?;
            let detail = serde_json::json!({
                "name": new.name, "gift": gift, "product_id": new.product_id, "total_stock": new.total_stock,
                "safety_stock": new.safety_stock, "line_depth": new.line_depth(), "open_at": new.open_at, "close_at": new.close_at,
                "questions": new.questions, "eligible_counted": plan.eligible, "warnings": plan.warnings,
            });
            let action = Action::new("event create", Some(&new.event_id), detail);
            let eligible = audit_trail::audited(settings, action, create_with_gift(settings, &new, &gift)).await?;
            let mut text =
                format!("event {} created: {} for sale, {eligible} eligible members", new.event_id, new.for_sale());
            for warning in &plan.warnings {
                text.push_str(&format!("\nwarning: {warning}"));
            }
            let json = serde_json::json!({
                "event_id": new.event_id, "for_sale": new.for_sale(), "eligible": eligible, "warnings": plan.warnings,
            });
            Ok(Output::new(text, &json))
        }
        EventCommand::Show { event_id } => {
            let view = show(settings, &event_id).await?;
            Ok(Output::new(serde_json::to_string_pretty(&view)?, &view))
        }
        EventCommand::Report { event_id } => {
            let client = platform::db::pool(&settings.database)?.get().await?;
            let mut redis = platform::redis::connect(&settings.redis).await?;
            let built = ingest::report::build(&client, &mut redis, &event_id)
                .await?
                .with_context(|| format!("no event {event_id}"))?;
            Ok(Output::new(serde_json::to_string_pretty(&built.report)?, &built.report))
        }
        EventCommand::Close { event_id, yes } => {
            let preview = "Closing answers every member 410 from now on.\n";
            confirm(settings, prompt, yes, "close event", &event_id, preview)?;
            let action = Action::new("event close", Some(&event_id), serde_json::json!({}));
            audit_trail::audited(settings, action, close(settings, &event_id)).await?;
            Ok(Output::new(
                format!("event {event_id} closed"),
                &serde_json::json!({ "event_id": event_id, "closed": true }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times_parse() {
        let now = Utc::now();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("+90s", now).unwrap(), now + chrono::Duration::seconds(90));
        assert_eq!(parse_time("-5m", now).unwrap(), now - chrono::Duration::minutes(5));
        assert_eq!(parse_time("+2h", now).unwrap(), now + chrono::Duration::hours(2));
        assert!(parse_time("2026-11-25T10:00:00Z", now).is_ok());
        assert!(parse_time("+5y", now).is_err());
        assert!(parse_time("tomorrow", now).is_err());
    }

    fn sample() -> NewEvent {
        let open_at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456789Z").unwrap().with_timezone(&Utc);
        NewEvent {
            event_id: "ev-1".into(),
            name: "coffee".into(),
            product_id: "beans".into(),
            total_stock: 10,
            safety_stock: 2,
            open_at,
            close_at: open_at + chrono::Duration::hours(1),
            questions: vec!["q1".into()],
            line_depth: None,
        }
    }

    #[test]
    fn the_line_depth_is_the_one_given_else_the_default_and_never_negative() {
        let default = sample();
        assert_eq!((default.line_depth(), default.meta().line_depth), (100, 100));
        let given = NewEvent { line_depth: Some(3), ..sample() };
        assert_eq!((given.line_depth(), given.meta().line_depth), (3, 3));
        // A stored row without a depth (created before it was a column) is the default.
        assert!(default.differences(&NewEvent { line_depth: Some(100), ..sample() }).is_empty());
        assert_eq!(given.differences(&default), vec!["line depth: given 3, stored 100".to_string()]);
        let negative = NewEvent { line_depth: Some(-1), ..sample() };
        assert!(negative.problems().iter().any(|p| p.contains("line depth")), "{:?}", negative.problems());
    }

    #[test]
    fn a_stored_event_with_the_same_parameters_differs_in_nothing_even_below_a_microsecond() {
        let given = sample();
        let mut stored = sample();
        // PostgreSQL keeps microseconds: the nanoseconds are gone on the way back.
        stored.open_at = DateTime::<Utc>::from_timestamp_micros(given.open_at.timestamp_micros()).unwrap();
        assert!(given.differences(&stored).is_empty(), "{:?}", given.differences(&stored));
    }

    #[test]
    fn a_stored_event_with_other_stock_or_times_is_named_in_the_differences() {
        let given = sample();
        let mut stored = sample();
        stored.total_stock = 11;
        stored.close_at += chrono::Duration::minutes(1);
        let differences = given.differences(&stored);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].starts_with("total stock"));
        assert!(differences[1].starts_with("close_at"));
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(45), "45s");
        assert_eq!(human(90_061), "1d 1h");
        assert_eq!(human(7 * 86_400), "7d");
        assert_eq!(human(3_660), "1h 1m");
        assert_eq!(parse_window("1d").unwrap(), chrono::Duration::days(1));
        // `--rebuild-window`'s default is as long as the event's Redis keys live after the close.
        assert_eq!(parse_window("1d").unwrap(), DEFAULT_REBUILD_WINDOW);
        assert!(parse_window("soon").is_err());
    }

    fn retention(kept: Option<i64>, needed_ms: i64) -> RetentionCheck {
        RetentionCheck {
            topic: "survey-submitted".into(),
            retention_ms: kept,
            needed_ms,
            rebuild_window_ms: 0,
            unreadable: None,
        }
    }

    #[test]
    fn a_retention_shorter_than_the_close_and_the_rebuild_window_does_not_cover_the_event() {
        assert!(retention(Some(7 * 86_400_000), 86_400_000).covers());
        assert!(!retention(Some(3_600_000), 86_400_000).covers());
        assert!(retention(None, i64::MAX).covers(), "kept forever");
        let unknown = RetentionCheck { unreadable: Some("missing".into()), ..retention(None, 0) };
        assert!(!unknown.covers());
    }

    struct Answer(Option<&'static str>);

    impl Prompt for Answer {
        fn ask(&mut self, _question: &str) -> Option<String> {
            self.0.map(|a| format!("{a}\n"))
        }
    }

    #[test]
    fn outside_local_an_action_is_confirmed_by_yes_or_the_event_id_typed_back() {
        let local = CliSettings::default();
        assert!(confirm(&local, &mut Answer(None), false, "close event", "ev-1", "").is_ok());
        let production = CliSettings { environment: platform::settings::Environment::Production, ..local };
        assert!(confirm(&production, &mut Answer(None), true, "close event", "ev-1", "").is_ok());
        let refused = confirm(&production, &mut Answer(None), false, "close event", "ev-1", "").unwrap_err();
        assert!(refused.0.contains("--yes"), "{refused}");
        assert!(confirm(&production, &mut Answer(Some("ev-1")), false, "close event", "ev-1", "").is_ok());
        assert!(confirm(&production, &mut Answer(Some("y")), false, "close event", "ev-1", "").is_err());
    }

    #[test]
    fn metas_of_the_same_event_match_whatever_their_status() {
        let meta = sample().meta();
        let sold_out = EventMeta { status: EventStatus::SoldOut, ..meta.clone() };
        assert!(same_event(&meta, &sold_out));
        let other = EventMeta { for_sale: 9, ..meta.clone() };
        assert!(!same_event(&meta, &other));
    }
}
