//! Fairness anyone can check: the receipt every 202 carries verifies with
//! the published key, and the public report's figures are the entries
//! table's, with a Merkle proof per winner that checks against the
//! receipt. The entries table is filled as the recorder fills it (the
//! recorder itself does not run in these tests).

use ingest::merkle::Proof;
use ingest::receipts::{PublicKey, Receipt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Enters `member` and returns the 202's receipt.
async fn receipt_of(app: &TestApp, event_id: &str, member: &str) -> Receipt {
    let response = app.enter(event_id, member).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{member}");
    let body = json_of(response).await;
    let receipt: Receipt = serde_json::from_value(body["receipt"].clone()).expect("the 202 carries a receipt");
    assert_eq!(receipt.facts.entry_id, body["entry_id"].as_str().unwrap());
    assert_eq!(receipt.facts.ticket, body["ticket"].as_i64().unwrap());
    assert_eq!(receipt.facts.member, member);
    receipt
}

async fn published_key(app: &TestApp) -> PublicKey {
    let key = json_of(app.http.get(format!("{}/api/receipts/key", app.base_url)).send().await.unwrap()).await;
    assert_eq!(key["algorithm"], "Ed25519");
    let from_pem = PublicKey::parse(key["public_key_pem"].as_str().unwrap()).expect("SPKI PEM");
    let raw = PublicKey::parse(key["public_key"].as_str().unwrap()).expect("raw base64");
    assert_eq!(from_pem, raw);
    assert_eq!(key["key_id"], from_pem.key_id());
    from_pem
}

#[tokio::test]
async fn a_202_carries_a_receipt_the_published_key_verifies() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let mut receipt = receipt_of(&app, &event_id, "m-1").await;
    let key = published_key(&app).await;
    key.verify(&receipt).expect("the receipt verifies");
    // A receipt claiming an earlier place does not.
    receipt.facts.ticket -= 1;
    assert!(key.verify(&receipt).is_err(), "an altered receipt is refused");
    app.stop().await;
}

/// Writes the entry as the recorder would, with the stock stage's outcome.
async fn record(db: &tokio_postgres::Client, receipt: &Receipt, outcome: &str) {
    let status = if outcome == "WON" { "won" } else { "lost" };
    let accepted_at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(receipt.facts.accepted_at_ms).unwrap();
    db.execute(
        "INSERT INTO event_entries (entry_id, event_id, user_id, accepted_at, submitted_at, ticket, outcome, status, decided_at)
         VALUES ($1::text::uuid, $2, $3, $4, $4, $5, $6, $7, now())",
        &[
            &receipt.facts.entry_id,
            &receipt.facts.event_id,
            &receipt.facts.member,
            &accepted_at,
            &receipt.facts.ticket,
            &outcome,
            &status,
        ],
    )
    .await
    .expect("entry recorded");
}

#[tokio::test]
async fn the_report_is_the_entries_table_and_each_winner_proves_its_receipt() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let members = ["m-1", "m-2", "m-3", "m-4"];
    let event_id = create_event(&mut conn, EventSpec::open(&members)).await;
    insert_event_row(&app.settings, &event_id).await;
    let mut receipts = Vec::new();
    for member in members {
        receipts.push(receipt_of(&app, &event_id, member).await);
    }
    let pool = platform::db::pool(
        &app.settings
            .database
            .for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .expect("pool");
    let db = pool.get().await.expect("db connection");
    // Three won, the last one in line did not.
    for (i, receipt) in receipts.iter().enumerate() {
        record(&db, receipt, if i < 3 { "WON" } else { "SOLD_OUT" }).await;
    }

    let response = app.http.get(format!("{}/api/events/{event_id}/report", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = json_of(response).await;

    // The figures are the database's.
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'WON'), min(ticket) FILTER (WHERE outcome = 'WON'),
                    max(ticket) FILTER (WHERE outcome = 'WON')
             FROM event_entries WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    let (entries, won, first, last): (i64, i64, Option<i64>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(report["counts"]["entries"], entries, "{report}");
    assert_eq!(report["counts"]["by_outcome"]["WON"], won);
    assert_eq!(report["counts"]["by_outcome"]["SOLD_OUT"], 1);
    assert_eq!(report["winners"]["count"], won);
    assert_eq!(report["winners"]["ticket_first"], first.unwrap());
    assert_eq!(report["winners"]["ticket_last"], last.unwrap());
    let fidelity = audit::fcfs_fidelity_in(&db, &event_id, audit::FirstN::ForSale).await.unwrap();
    assert_eq!(report["fcfs_fidelity"]["winners_among_first_n"], fidelity.winners_among_first_n);
    assert_eq!(report["fcfs_fidelity"]["first_n"], fidelity.first_n);
    assert_eq!(
        report["timeline"]["accepted"].as_array().unwrap().iter().map(|n| n.as_i64().unwrap()).sum::<i64>(),
        entries
    );
    assert_eq!(report["receipts"]["leaves"], 3);
    let root = report["receipts"]["merkle_root"].as_str().unwrap().to_string();

    // Each winner's receipt is in the tree under the published root; the
    // loser has no proof.
    let key = published_key(&app).await;
    for (i, receipt) in receipts.iter().enumerate() {
        let url = format!("{}/api/events/{event_id}/report/proofs/{}", app.base_url, receipt.facts.entry_id);
        let response = app.http.get(url).send().await.unwrap();
        if i == 3 {
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "no proof for an entry that did not win");
            continue;
        }
        let proof: Proof = response.json().await.expect("a proof");
        key.verify(receipt).expect("the receipt verifies");
        proof.check(&receipt.facts.canonical_bytes().unwrap(), Some(&root)).expect("the receipt is in the tree");
        assert_eq!(proof.leaf_index, i as u64, "winners in line order");
        // Another winner's receipt is not this proof's leaf.
        let other = &receipts[(i + 1) % 3];
        assert!(proof.check(&other.facts.canonical_bytes().unwrap(), Some(&root)).is_err());
    }

    // The page for people says the same.
    let page = app.http.get(format!("{}/events/{event_id}/report", app.base_url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(&root) && html.contains("<svg"), "the page shows the root and the chart");
    let unknown = app.http.get(format!("{}/api/events/ev-none/report", app.base_url)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
