//! `firstcome receipt keygen | verify` and `firstcome verify shuffle` on the
//! built binary: a receipt signed with a new key verifies with its public
//! key, alone and with its Merkle proof under the published root; an
//! altered receipt, another root or a tampered draw is exit 1. The shuffle
//! is replayed from a room written into the stack's Redis as the waiting
//! room leaves it, and again from PostgreSQL once the room's keys are gone.

use std::path::PathBuf;
use std::process::Output;

use firstcome_cli::commands::event::{self, EventCommand, Prompt};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::commands::verify::{self, VerifyCommand};
use ingest::merkle::{self, Proof};
use ingest::receipts::{ReceiptFacts, Signer};
use secrecy::ExposeSecret;
use testkit::TestEnv;

fn firstcome(args: &[&str]) -> Output {
    firstcome_with(args, &[])
}

fn firstcome_with(args: &[&str], vars: &[(&str, String)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_firstcome"))
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
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

    // The test's own database (nothing recorded there for this room).
    let database = [("FIRSTCOME_DATABASE__URL", env.database.url.expose_secret().to_string())];
    let honest = firstcome_with(&["verify", "shuffle", &event_id, "--format", "json"], &database);
    assert_eq!(honest.status.code(), Some(0), "{}", String::from_utf8_lossy(&honest.stdout));
    assert_eq!((json(&honest)["holds"].as_bool(), json(&honest)["source"].as_str()), (Some(true), Some("redis")));

    // A draw that is not the seed's (a member moved to the front).
    let last = order.last().unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&keys.draws)
        .arg(0)
        .arg(format!("{}|{last}", "0".repeat(64)))
        .query_async(&mut redis)
        .await
        .unwrap();
    let tampered = firstcome_with(&["verify", "shuffle", &event_id], &database);
    assert_eq!(tampered.status.code(), Some(1), "{}", String::from_utf8_lossy(&tampered.stdout));
}

/// No terminal: nobody answers (the local environment asks nothing).
struct NoTerminal;

impl Prompt for NoTerminal {
    fn ask(&mut self, _question: &str) -> Option<String> {
        None
    }
}

/// An event created by `firstcome event create` for `count` buyers, opening
/// at `open_at`; returns the event and its members.
async fn created(env: &TestEnv, count: usize, open_at: &str) -> (String, Vec<String>) {
    let settings = firstcome_lab::pipeline::operator_settings(env);
    let product = format!("product-{}", &env.id[..8]);
    let plan =
        SeedPlan { count, id_prefix: format!("f{}-", &env.id[..8]), product_id: product.clone(), eligible_ratio: 1.0 };
    let members = members::seed(&env.member_primary, &env.replica, &plan).await.expect("members seeded").members;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let create = EventCommand::Create {
        id: Some(event_id.clone()),
        name: "fair".into(),
        gift: "tea".into(),
        product,
        total: count as i32,
        safety: 0,
        line_depth: None,
        open_at: open_at.into(),
        close_at: "+2h".into(),
        questions: vec!["satisfaction".into()],
        rebuild_window: "1d".into(),
        dry_run: false,
        yes: false,
    };
    event::run(&settings, create, &mut NoTerminal).await.expect("created");
    (event_id, members)
}

/// The (seed, commitment) `event create` recorded for `event_id`.
async fn recorded(env: &TestEnv, event_id: &str) -> (String, String) {
    let db = env.pool().get().await.expect("db");
    let row = db
        .query_one("SELECT seed, commitment FROM event_shuffles WHERE event_id = $1", &[&event_id])
        .await
        .expect("the commitment recorded at the create");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_room_that_lost_its_seed_before_the_opening_is_given_the_committed_one_back() {
    use ingest::waiting_room::{Turn, WaitingRoom, WaitingRoomSettings};
    let env = TestEnv::new().await;
    let (event_id, members) = created(&env, 2, "+1h").await;
    let (seed, commitment) = recorded(&env, &event_id).await;
    let room = WaitingRoom::new(WaitingRoomSettings { enabled: true, ..Default::default() });
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let published = room.public(&mut redis, &event_id, i64::MAX, 0).await.expect("public state");
    assert_eq!(published.commitment, commitment, "ingest publishes the commitment the create recorded");

    // Redis loses the room's hash before the opening; the next member's turn
    // commits the seed this instance published, not a new one.
    let keys = ingest::waiting_room::RoomKeys::new(&event_id);
    let _: () = redis::cmd("DEL").arg(&keys.room).query_async(&mut redis).await.unwrap();
    let member = ingest::auth::MemberId::parse(&members[0]).expect("member id");
    let turn = room.turn(&mut redis, &event_id, &member).await.expect("a turn");
    assert!(matches!(turn, Turn::PreQueue(_)), "{turn:?}");
    let held: (String, String) =
        redis::cmd("HMGET").arg(&keys.room).arg(&["seed", "commitment"]).query_async(&mut redis).await.unwrap();
    assert_eq!(held, (seed.clone(), commitment), "the room holds the committed seed again");
    let draws: Vec<String> =
        redis::cmd("ZRANGE").arg(&keys.draws).arg(0).arg(-1).query_async(&mut redis).await.unwrap();
    assert_eq!(draws, [format!("{}|{}", ingest::shuffle::draw(&seed, &members[0]), members[0])]);
}

#[tokio::test]
async fn the_shuffle_is_verified_from_postgresql_after_the_rooms_keys_are_gone() {
    let env = TestEnv::new().await;
    let settings = firstcome_lab::pipeline::operator_settings(&env);
    let (event_id, members) = created(&env, 4, "now").await;

    // The create committed the seed in the room and recorded the same pair.
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let keys = ingest::waiting_room::RoomKeys::new(&event_id);
    let (seed, commitment): (String, String) =
        redis::cmd("HMGET").arg(&keys.room).arg(&["seed", "commitment"]).query_async(&mut redis).await.unwrap();
    assert_eq!(recorded(&env, &event_id).await, (seed.clone(), commitment.clone()));
    assert_eq!(ingest::shuffle::commitment(&seed), commitment);
    let db = env.pool().get().await.expect("db");

    // The room as the waiting room leaves it: burst 3 passed at the opening, the fourth still in line.
    let order = ingest::shuffle::order(&seed, members.iter().map(String::as_str));
    let _: () = redis::cmd("HSET")
        .arg(&keys.room)
        .arg(&[("opened_at", "1000"), ("mode", "shuffle"), ("pre_queued", "4"), ("rate", "1"), ("burst", "3")])
        .query_async(&mut redis)
        .await
        .unwrap();
    for (i, member) in order.iter().enumerate() {
        let draw = format!("{}|{member}", ingest::shuffle::draw(&seed, member));
        let _: () = redis::cmd("ZADD").arg(&keys.draws).arg(0).arg(draw).query_async(&mut redis).await.unwrap();
        if i < 3 {
            let _: () =
                redis::cmd("HSET").arg(&keys.passed).arg(member).arg(1_000).query_async(&mut redis).await.unwrap();
        } else {
            let _: () = redis::cmd("ZADD").arg(&keys.line).arg(4).arg(member).query_async(&mut redis).await.unwrap();
        }
    }
    // The close archives the room; then its keys go, as they do a day after the close.
    event::run(&settings, EventCommand::Close { event_id: event_id.clone(), yes: false }, &mut NoTerminal)
        .await
        .expect("closed");
    let mut gone = vec![keys.room.clone(), keys.draws.clone(), keys.passed.clone(), keys.line.clone()];
    let event_keys = platform::event_keys::EventKeys::new(&event_id);
    gone.extend(event_keys.all().iter().map(|k| k.to_string()));
    let _: () = redis::cmd("DEL").arg(&gone[..]).query_async(&mut redis).await.unwrap();

    let verify = |event_id: String| verify::command(&settings, VerifyCommand::Shuffle { event_id });
    let out = verify(event_id.clone()).await.expect("verified");
    assert_eq!(out.failed, None, "{}", out.text);
    assert_eq!(out.json["source"], "postgresql", "{}", out.json);
    let held: Vec<&str> = out.json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["holds"] == true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(held, ["commitment", "draws", "order", "pre_queued", "line", "gate"], "{}", out.text);

    // The public report reads the same record, the seed revealed.
    let built = ingest::report::build(&db, &mut redis, &event_id).await.expect("report").expect("the event");
    let shuffle = built.report.shuffle.expect("the draw on record");
    assert_eq!((shuffle.source, shuffle.seed.as_deref(), shuffle.pre_queued), ("postgresql", Some(seed.as_str()), 4));
    assert_eq!((shuffle.commitment, shuffle.mode.as_str()), (commitment, "shuffle"));

    // A draw altered in PostgreSQL is caught.
    db.execute("UPDATE event_shuffle_draws SET draw = repeat('0', 64) WHERE event_id = $1 AND place = 4", &[&event_id])
        .await
        .expect("tampered");
    let out = verify(event_id.clone()).await.expect("verified");
    assert!(out.failed.is_some(), "{}", out.text);
    // An event nothing was recorded for does not verify.
    let out = verify(format!("ev-{}", uuid::Uuid::new_v4())).await.expect("verified");
    assert!(out.failed.is_some(), "{}", out.text);
}

#[tokio::test]
async fn rebuild_redis_gives_a_lost_room_its_recorded_seed() {
    use firstcome_cli::commands::rebuild::{self, RebuildCommand};
    let env = TestEnv::new().await;
    let settings = firstcome_lab::pipeline::operator_settings(&env);
    let (event_id, _) = created(&env, 1, "+1h").await;
    let (seed, commitment) = recorded(&env, &event_id).await;
    // Redis loses the event whole, its room with it.
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let keys = ingest::waiting_room::RoomKeys::new(&event_id);
    let mut lost = vec![keys.room.clone()];
    lost.extend(platform::event_keys::EventKeys::new(&event_id).all().iter().map(|k| k.to_string()));
    let _: () = redis::cmd("DEL").arg(&lost[..]).query_async(&mut redis).await.unwrap();

    rebuild::command(&settings, RebuildCommand::Redis { event_id: event_id.clone() }).await.expect("rebuilt");
    let held: (String, String) =
        redis::cmd("HMGET").arg(&keys.room).arg(&["seed", "commitment"]).query_async(&mut redis).await.unwrap();
    assert_eq!(held, (seed, commitment), "the recorded seed is the room's again");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys.room).query_async(&mut redis).await.unwrap();
    assert!(ttl > 0, "and it expires with the event: {ttl}");
}
