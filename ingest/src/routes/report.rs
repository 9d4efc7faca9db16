//! The public report of an event (`crate::report`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /events/{event_id}/report` | the report as a page, with the timeline's chart |
//! | `GET /api/events/{event_id}/report` | the report, JSON (what `firstcome event report` prints) |
//! | `GET /api/events/{event_id}/report/proofs/{entry_id}` | a winner's receipt's Merkle proof |
//!
//! Public, so built at most once per event every [`REPORT_TTL`] and shared
//! by every request meanwhile (concurrent misses wait for one build): a
//! crowd reloading the page costs the database one read a few seconds.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::error::ApiError;
use crate::report::{Built, Report};

/// How long a built report is served before it is built again.
pub const REPORT_TTL: Duration = Duration::from_secs(5);
/// Events whose report is kept at once.
const REPORTS_KEPT: u64 = 256;

/// Built reports by event (`None`: no such event), shared by the handlers.
#[derive(Clone)]
pub struct ReportCache(moka::future::Cache<String, Option<Arc<Built>>>);

impl Default for ReportCache {
    fn default() -> Self {
        Self(moka::future::Cache::builder().max_capacity(REPORTS_KEPT).time_to_live(REPORT_TTL).build())
    }
}

/// The event's report, from the cache or built now.
async fn built(app: &AppState, event_id: &str) -> Result<Arc<Built>, ApiError> {
    if !crate::ids::is_valid_id(event_id) {
        return Err(ApiError::NotFound);
    }
    let build = async {
        let db = app.db.get().await.map_err(|e| format!("database: {e}"))?;
        let mut redis = app.redis.clone();
        crate::report::build(&db, &mut redis, event_id)
            .await
            .map(|built| built.map(Arc::new))
            .map_err(|e| format!("report: {e}"))
    };
    // A failed build is not cached: the next request tries again.
    let built =
        app.reports.0.try_get_with(event_id.to_string(), build).await.map_err(|e| ApiError::unavailable(e.as_str()))?;
    built.ok_or(ApiError::NotFound)
}

/// `GET /api/events/{event_id}/report`.
pub async fn json(State(app): State<AppState>, Path(event_id): Path<String>) -> Result<Response, ApiError> {
    tracing::Span::current().record("event_id", event_id.as_str());
    let built = built(&app, &event_id).await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=5")], Json(&built.report)).into_response())
}

/// `GET /api/events/{event_id}/report/proofs/{entry_id}`: 404 for an entry
/// that is not a winner in the tree (yet).
pub async fn proof(
    State(app): State<AppState>,
    Path((event_id, entry_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("event_id", event_id.as_str());
    let built = built(&app, &event_id).await?;
    let proof = built.proof(&entry_id).ok_or(ApiError::NotFound)?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=5")], Json(proof)).into_response())
}

/// `GET /events/{event_id}/report`: the same figures for people.
pub async fn page(State(app): State<AppState>, Path(event_id): Path<String>) -> Result<Response, ApiError> {
    tracing::Span::current().record("event_id", event_id.as_str());
    let built = built(&app, &event_id).await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=5")], Html(render(&built.report))).into_response())
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| "—".to_string())
}

/// The timeline as an SVG bar chart: entries accepted per bucket, winners
/// among them darker.
fn chart(report: &Report) -> String {
    let t = &report.timeline;
    let (w, h) = (640.0_f64, 160.0_f64);
    let max = t.accepted.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = t.accepted.len().max(1) as f64;
    let bar = w / n;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="entries accepted and winners over time">"#
    );
    for (i, (accepted, won)) in t.accepted.iter().zip(&t.won).enumerate() {
        let x = i as f64 * bar;
        let ah = *accepted as f64 / max * (h - 20.0);
        let wh = *won as f64 / max * (h - 20.0);
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{ah:.1}" fill="#9cc3e6"><title>{accepted} accepted</title></rect><rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{wh:.1}" fill="#1f5f99"><title>{won} won</title></rect>"##,
            h - ah,
            (bar - 1.0).max(1.0),
            h - wh,
            (bar - 1.0).max(1.0),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The report as a page (also what the README's screenshot is taken of).
pub fn render(r: &Report) -> String {
    let mut rows = String::new();
    for (outcome, n) in &r.counts.by_outcome {
        let _ = write!(rows, "<tr><td>{}</td><td>{n}</td></tr>", esc(outcome));
    }
    let shuffle = match &r.shuffle {
        Some(s) => format!(
            "<p>Pre-queue order: <b>{}</b>, {} drawn. Commitment (SHA-256 of the seed, published before the opening): <code>{}</code>. Seed: <code>{}</code>.{}</p>",
            esc(&s.mode),
            s.pre_queued,
            esc(&s.commitment),
            esc(s.seed.as_deref().unwrap_or("revealed after the opening")),
            if s.source == "postgresql" { " (As kept in PostgreSQL: the waiting room's keys are gone.)" } else { "" }
        ),
        None => "<p>No waiting-room draw is on record for this event.</p>".to_string(),
    };
    let f = &r.fcfs_fidelity;
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{name} — public report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.25rem .75rem;text-align:left}}
code{{word-break:break-all;font-size:.85em}}.figure{{font-size:1.6rem;font-weight:600}}</style></head><body>
<h1>{name}</h1>
<p>Event <code>{id}</code>, {status}. {for_sale} gifts for sale. Report built {generated} from the entries table
(<a href="/api/events/{id}/report">JSON</a>).</p>
<h2>Outcomes</h2><p class="figure">{entries} entries, {won} winners</p>
<table><tr><th>outcome</th><th>entries</th></tr>{rows}</table>
<h2>Winners</h2><p>Tickets {t_first} to {t_last}; accepted from {a_first} to {a_last}.</p>
<h2>First come, first served</h2><p class="figure">{share:.2} %</p>
<p>Of the first {first_n} valid entries in line, {among} won.</p>
<h2>Timeline</h2>{chart}<p>Entries accepted (light) and winners (dark), per {bucket} s from {start}.</p>
<h2>The pre-queue draw</h2>{shuffle}
<h2>Receipts</h2><p>Every accepted entry was given a signed receipt (<a href="/api/receipts/key">key</a>).
The winners' receipts, in line order, form a Merkle tree ({tree}) of {leaves} leaves with root</p>
<p><code>{root}</code></p>
<p>A winner checks their receipt is in it with the proof at
<code>/api/events/{id}/report/proofs/&lt;entry id&gt;</code> and <code>firstcome receipt verify --proof</code>.</p>
</body></html>"#,
        name = esc(&r.name),
        id = esc(&r.event_id),
        status = esc(&r.status),
        for_sale = r.for_sale,
        generated = time(Some(r.generated_at_ms)),
        entries = r.counts.entries,
        won = r.winners.count,
        t_first = r.winners.ticket_first.map_or("—".into(), |t| t.to_string()),
        t_last = r.winners.ticket_last.map_or("—".into(), |t| t.to_string()),
        a_first = time(r.winners.accepted_first_ms),
        a_last = time(r.winners.accepted_last_ms),
        share = f.share * 100.0,
        first_n = f.first_n,
        among = f.winners_among_first_n,
        chart = chart(r),
        bucket = r.timeline.bucket_ms / 1_000,
        start = time(r.timeline.start_ms),
        tree = esc(r.receipts.tree),
        leaves = r.receipts.leaves,
        root = esc(&r.receipts.merkle_root),
    )
}
