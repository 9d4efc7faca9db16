//! Holes: an admitted entry whose record never reached the log (ingest died
//! between the admit script and the broker's acknowledgement, and the member
//! did not come back) is announced after its deadline, so its place passes
//! down the line instead of holding a unit until close.

use std::time::{Duration, Instant};

use ingest::admission::{Admission, Admitter, HOLE_AFTER_RESUMES};
use ingest::auth::MemberId;
use ingest::holes::HOLE_CHANNEL;
use platform::event_keys::EventKeys;
use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn an_entry_that_never_reached_the_log_is_announced_as_a_hole_after_its_deadline() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec { stock: 1, ..EventSpec::open(&["m-1", "m-2"]) }).await;
    let resume_after = app.settings.resume_after();
    let hole_after = resume_after * HOLE_AFTER_RESUMES;

    // This instance serves the event (members ask it about it)...
    let state = app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.expect("event state");
    assert_eq!(state.status(), StatusCode::OK);
    // ...and another ingest instance admitted m-1 and died before producing: the
    // mark, the ticket and the deadline are in Redis, nothing in the log.
    let admitted_at = Instant::now();
    let member = MemberId::parse("m-1").expect("member id");
    let lost = uuid::Uuid::now_v7().to_string();
    let admission = Admitter::new(resume_after).admit(&mut conn, &event_id, &member, &lost, true).await.expect("admit");
    assert!(matches!(admission, Admission::Accept { ticket: 1, .. }), "{admission:?}");

    // This instance's sweep announces it once its deadline has passed.
    let (record, _) = consume_entry(&app.settings, &lost).await;
    let waited = admitted_at.elapsed();
    assert_eq!((record.user_id.as_str(), record.ticket), ("m-1", 1));
    assert_eq!(record.client.channel, HOLE_CHANNEL);
    assert!(record.answers.is_empty(), "a hole carries no answers");
    assert!(
        waited + Duration::from_millis(50) >= hole_after,
        "announced after {waited:?}, before its deadline {hole_after:?}"
    );
    let keys = EventKeys::new(&event_id);
    let pending: Option<f64> = redis::cmd("ZSCORE").arg(&keys.pending).arg(&lost).query_async(&mut conn).await.unwrap();
    assert_eq!(pending, None, "no longer pending: a hole");

    // m-1 comes back: admitted afresh, at the end of the line.
    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = json_of(response).await;
    assert_ne!(body["entry_id"].as_str(), Some(lost.as_str()), "a new entry, not the hole");
    assert_eq!(body["ticket"], 2);
    app.stop().await;
}

/// An entry the broker acknowledged is in the log: never a hole, however
/// long the stock stage takes to reach it.
#[tokio::test]
async fn an_acknowledged_entry_is_never_a_hole() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let entry_id = json_of(response).await["entry_id"].as_str().expect("entry id").to_string();
    let keys = EventKeys::new(&event_id);
    let pending: Option<f64> =
        redis::cmd("ZSCORE").arg(&keys.pending).arg(&entry_id).query_async(&mut conn).await.unwrap();
    assert_eq!(pending, None, "the accept mark took it out of the pending set");
    let holes: i64 = redis::cmd("HLEN").arg(&keys.holes).query_async(&mut conn).await.unwrap();
    assert_eq!(holes, 0);
    app.stop().await;
}
