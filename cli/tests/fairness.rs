//! `firstcome receipt keygen | verify` and `firstcome verify shuffle` on the
//! built binary: a receipt signed with a new key verifies with its public
//! key, alone and with its Merkle proof under the published root; an
//! altered receipt, another root or a tampered draw is exit 1. The shuffle
//! is replayed from a room written into the stack's Redis as the waiting
//! room leaves it.

use std::path::PathBuf;
use std::process::Output;

use ingest::merkle::{self, Proof};
use ingest::receipts::{ReceiptFacts, Signer};
use testkit::TestEnv;

fn firstcome(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_firstcome"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("firstcome runs")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

/// A file of this test's own (removed with the process' temp dir).
fn file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firstcome-fairness-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("file written");
    path
}

fn facts(i: i64) -> ReceiptFacts {
    ReceiptFacts {
        event_id: "ev-fair".into(),
        entry_id: uuid::Uuid::now_v7().to_string(),
        member: format!("m-{i}"),
        ticket: i,
        accepted_at_ms: 1_767_225_600_000 + i,
    }
}

#[test]
fn a_receipt_verifies_with_its_key_and_its_proof_and_an_altered_one_does_not() {
    let keygen = firstcome(&["receipt", "keygen", "--format", "json"]);
    assert_eq!(keygen.status.code(), Some(0));
    let key = json(&keygen);
    let signer = Signer::from_pem(key["signing_key_pem"].as_str().unwrap()).expect("the new key parses");
    let public = key["public_key"].as_str().unwrap();

    // Three winners in line order; the second one's receipt and proof.
    let receipts: Vec<_> = (1..=3).map(|i| signer.sign(facts(i)).unwrap()).collect();
    let leaves: Vec<_> = receipts.iter().map(|r| merkle::leaf_hash(&r.facts.canonical_bytes().unwrap())).collect();
    let root = hex::encode(merkle::root(&leaves));
    let proof = Proof {
        event_id: "ev-fair".into(),
        entry_id: receipts[1].facts.entry_id.clone(),
        leaf_index: 1,
        tree_size: 3,
        leaf: hex::encode(leaves[1]),
        path: merkle::path(&leaves, 1).iter().map(hex::encode).collect(),
        root: root.clone(),
    };
    let receipt_file = file("receipt.json", &serde_json::json!({ "receipt": receipts[1] }).to_string());
    let proof_file = file("proof.json", &serde_json::to_string(&proof).unwrap());
    let receipt_path = receipt_file.to_str().unwrap();
    let proof_path = proof_file.to_str().unwrap();

    let ok = firstcome(&["receipt", "verify", receipt_path, "--key", public, "--format", "json"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(json(&ok)["valid"], true);
    let in_tree =
        firstcome(&["receipt", "verify", receipt_path, "--key", public, "--proof", proof_path, "--root", &root]);
    assert_eq!(in_tree.status.code(), Some(0), "{}", String::from_utf8_lossy(&in_tree.stdout));

    let other_root = "00".repeat(32);
    let elsewhere =
        firstcome(&["receipt", "verify", receipt_path, "--key", public, "--proof", proof_path, "--root", &other_root]);
    assert_eq!(elsewhere.status.code(), Some(1), "another root");
    let mut altered = receipts[1].clone();
    altered.facts.ticket = 1;
    let altered_file = file("altered.json", &serde_json::to_string(&altered).unwrap());
    let forged = firstcome(&["receipt", "verify", altered_file.to_str().unwrap(), "--key", public]);
    assert_eq!(forged.status.code(), Some(1), "an altered receipt");
}

#[tokio::test]
async fn verify_shuffle_replays_the_room_and_catches_a_tampered_draw() {
    let env = TestEnv::new().await;
    let mut redis = platform::redis::connect(
        &env.redis.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .await
    .expect("redis");
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let keys = ingest::waiting_room::RoomKeys::new(&event_id);
    let seed = ingest::shuffle::new_seed();
    let members = ["m-1", "m-2", "m-3", "m-4"];
    let order = ingest::shuffle::order(&seed, members);
    // The room as the waiting room leaves it at the opening (burst 4: all pass at once).
    let _: () = redis::cmd("HSET")
        .arg(&keys.room)
        .arg(&[
            ("opened_at", "1000".to_string()),
            ("seed", seed.clone()),
            ("commitment", ingest::shuffle::commitment(&seed)),
            ("mode", "shuffle".into()),
            ("pre_queued", "4".into()),
            ("rate", "1".into()),
            ("burst", "4".into()),
        ])
        .query_async(&mut redis)
        .await
        .unwrap();
    for member in &order {
        let draw = format!("{}|{member}", ingest::shuffle::draw(&seed, member));
        let _: () = redis::cmd("ZADD").arg(&keys.draws).arg(0).arg(draw).query_async(&mut redis).await.unwrap();
        let _: () = redis::cmd("HSET").arg(&keys.passed).arg(member).arg(1_000).query_async(&mut redis).await.unwrap();
    }
    for key in [&keys.room, &keys.draws, &keys.passed] {
        let _: () = redis::cmd("PEXPIRE").arg(key).arg(600_000).query_async(&mut redis).await.unwrap();
    }

    let honest = firstcome(&["verify", "shuffle", &event_id, "--format", "json"]);
    assert_eq!(honest.status.code(), Some(0), "{}", String::from_utf8_lossy(&honest.stdout));
    assert_eq!(json(&honest)["holds"], true);

    // A draw that is not the seed's (a member moved to the front).
    let last = order.last().unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&keys.draws)
        .arg(0)
        .arg(format!("{}|{last}", "0".repeat(64)))
        .query_async(&mut redis)
        .await
        .unwrap();
    let tampered = firstcome(&["verify", "shuffle", &event_id]);
    assert_eq!(tampered.status.code(), Some(1), "{}", String::from_utf8_lossy(&tampered.stdout));
}
