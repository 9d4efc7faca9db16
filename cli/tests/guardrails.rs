//! The operator's guardrails on the real stack: `event create --dry-run`
//! says what would happen and changes nothing; `create` refuses an event that
//! `survey-submitted`'s retention does not cover; outside local, `create` and
//! `close` are confirmed or refused; every operator action leaves a row in
//! `operator_actions` (who, what, when), and the rows cannot be rewritten.

use firstcome_cli::commands::event::{self, EventCommand, Prompt};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::commands::rebuild::{self, RebuildCommand};
use firstcome_cli::CliSettings;
use platform::event_keys::EventKeys;
use platform::settings::{Environment, Principal};
use secrecy::ExposeSecret;
use testkit::TestEnv;

/// The operator's settings on the test's own slice of the stack (the
/// same as every operator command test's: the lab's).
fn cli(env: &TestEnv) -> CliSettings {
    firstcome_lab::pipeline::operator_settings(env)
}

/// `count` members who bought the test's product; returns the product.
async fn buyers(env: &TestEnv, count: usize) -> String {
    let product = format!("product-{}", &env.id[..8]);
    let plan =
        SeedPlan { count, id_prefix: format!("g{}-", &env.id[..8]), product_id: product.clone(), eligible_ratio: 1.0 };
    members::seed(&env.member_primary, &env.replica, &plan).await.expect("members seeded");
    product
}

fn create(event_id: &str, product: &str, open_at: &str, close_at: &str, dry_run: bool) -> EventCommand {
    EventCommand::Create {
        id: Some(event_id.to_string()),
        name: "guardrails".into(),
        gift: "₩5,000 tea".into(),
        product: product.to_string(),
        total: 10,
        safety: 2,
        line_depth: None,
        open_at: open_at.to_string(),
        close_at: close_at.to_string(),
        questions: vec!["satisfaction".into(), "recommend".into()],
        rebuild_window: "1d".into(),
        dry_run,
        yes: false,
    }
}

/// No terminal: nobody answers.
struct NoTerminal;

impl Prompt for NoTerminal {
    fn ask(&mut self, _question: &str) -> Option<String> {
        None
    }
}

/// What the stores hold for this test: the database's rows, the event's
/// Redis keys, the records in the test's topics.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    rows: Vec<i64>,
    redis_keys: i64,
    records: usize,
}

async fn footprint(env: &TestEnv, event_id: &str) -> Footprint {
    let client = env.pool().get().await.expect("db");
    let mut rows = Vec::new();
    for table in ["events", "stock_ledger", "event_entries", "operator_actions"] {
        rows.push(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0));
    }
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let keys = EventKeys::new(event_id);
    let redis_keys: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut redis).await.expect("EXISTS");
    let topics = env.topics();
    let mut records = 0;
    for topic in [&topics.survey_submitted, &topics.stock_decided, &topics.gift_dispatched, &topics.stock_released] {
        records += env.read_log(topic).await.len();
    }
    Footprint { rows, redis_keys, records }
}

async fn actions(env: &TestEnv, event_id: &str) -> Vec<(String, String, String, Option<String>)> {
    let client = env.pool().get().await.expect("db");
    client
        .query(
            "SELECT operator, action, outcome, error FROM operator_actions WHERE event_id = $1 ORDER BY id",
            &[&event_id],
        )
        .await
        .expect("actions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_dry_run_counts_the_eligible_warns_and_changes_nothing() {
    let env = TestEnv::new().await;
    let product = buyers(&env, 3).await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let before = footprint(&env, &event_id).await;

    // 8 for sale to 3 buyers, opening five minutes ago.
    let out = event::run(&cli(&env), create(&event_id, &product, "-5m", "+1h", true), &mut NoTerminal)
        .await
        .expect("a dry run");
    assert_eq!(out.failed, None, "nothing refused: {}", out.text);
    assert_eq!(out.json["dry_run"], true);
    assert_eq!(out.json["eligible"], 3, "{}", out.json);
    assert_eq!((out.json["for_sale"].as_i64(), out.json["safety_stock"].as_i64()), (Some(8), Some(2)));
    assert_eq!(out.json["line_depth"].as_i64(), Some(100), "the default line: a tenth of the units, at least 100");
    let warnings = out.json["warnings"].as_array().expect("warnings").clone();
    assert!(warnings.iter().any(|w| w.as_str().unwrap_or("").contains("fewer eligible members (3)")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.as_str().unwrap_or("").contains("opening is in the past")), "{warnings:?}");
    assert_eq!(out.json["retention"]["retention_ms"], 7 * 24 * 3_600_000_i64, "{}", out.json);
    assert!(out.text.starts_with("dry run: nothing was changed"), "{}", out.text);

    // Closing before it opens, and a close the log's 7 days do not cover: both
    // would be refused (exit 1), still changing nothing.
    let out = event::run(&cli(&env), create(&event_id, &product, "+1h", "+30m", true), &mut NoTerminal)
        .await
        .expect("a dry run");
    assert!(out.failed.is_some());
    assert!(out.json["refusals"][0].as_str().unwrap_or("").contains("close before it opens"), "{}", out.json);
    let out = event::run(&cli(&env), create(&event_id, &product, "now", "+30d", true), &mut NoTerminal)
        .await
        .expect("a dry run");
    assert!(out.failed.is_some());
    assert!(out.json["refusals"][0].as_str().unwrap_or("").contains("NOT covered"), "{}", out.json);

    assert_eq!(footprint(&env, &event_id).await, before, "PostgreSQL, Redis and Kafka unchanged");
}

#[tokio::test]
async fn an_event_the_logs_retention_does_not_cover_is_refused() {
    let env = TestEnv::new().await;
    let product = buyers(&env, 2).await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let before = footprint(&env, &event_id).await;
    // survey-submitted keeps 7 days; closing in 8 days, rebuilt up to a day after.
    let refused = event::run(&cli(&env), create(&event_id, &product, "now", "+8d", false), &mut NoTerminal)
        .await
        .expect_err("refused");
    assert!(format!("{refused:#}").contains("retention.ms"), "{refused:#}");
    assert_eq!(footprint(&env, &event_id).await, before, "nothing created, nothing recorded");
}

#[tokio::test]
async fn outside_local_create_and_close_are_refused_without_yes_and_done_with_it() {
    let env = TestEnv::new().await;
    let product = buyers(&env, 2).await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let production = CliSettings { environment: Environment::Production, ..cli(&env) };
    let before = footprint(&env, &event_id).await;

    let refused = event::run(&production, create(&event_id, &product, "now", "+1h", false), &mut NoTerminal)
        .await
        .expect_err("no terminal, no --yes");
    assert!(refused.downcast_ref::<firstcome_cli::exit::Usage>().is_some(), "exit 2: {refused:#}");
    assert!(refused.to_string().contains("--yes"), "{refused:#}");
    assert_eq!(footprint(&env, &event_id).await, before, "nothing created, nothing recorded");

    let EventCommand::Create {
        id, name, gift, product, total, safety, line_depth, open_at, close_at, questions, ..
    } = create(&event_id, &product, "now", "+1h", false)
    else {
        unreachable!()
    };
    let confirmed = EventCommand::Create {
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
        rebuild_window: "1d".into(),
        dry_run: false,
        yes: true,
    };
    event::run(&production, confirmed, &mut NoTerminal).await.expect("created with --yes");

    let close = |yes| EventCommand::Close { event_id: event_id.clone(), yes };
    event::run(&production, close(false), &mut NoTerminal).await.expect_err("close without --yes");
    assert_eq!(event::show(&cli(&env), &event_id).await.expect("show").status_db, "open");
    event::run(&production, close(true), &mut NoTerminal).await.expect("closed with --yes");
    assert_eq!(event::show(&cli(&env), &event_id).await.expect("show").status_db, "closed");
}

#[tokio::test]
async fn every_operator_action_leaves_a_row_naming_who_what_and_when() {
    let env = TestEnv::new().await;
    let product = buyers(&env, 2).await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let alice = CliSettings { operator: Some("alice".into()), ..cli(&env) };

    event::run(&alice, create(&event_id, &product, "now", "+1h", false), &mut NoTerminal).await.expect("created");
    rebuild::command(&alice, RebuildCommand::Redis { event_id: event_id.clone() }).await.expect("rebuilt");
    event::run(&cli(&env), EventCommand::Close { event_id: event_id.clone(), yes: false }, &mut NoTerminal)
        .await
        .expect("closed");
    // A close that fails (an event nobody created) is recorded as failed.
    let unknown = format!("ev-{}", uuid::Uuid::new_v4());
    let failed =
        event::run(&alice, EventCommand::Close { event_id: unknown.clone(), yes: false }, &mut NoTerminal).await;
    assert!(failed.is_err());

    let os_user = firstcome_cli::audit_trail::os_user();
    let rows = actions(&env, &event_id).await;
    let summary: Vec<(&str, &str, &str)> =
        rows.iter().map(|(who, what, outcome, _)| (who.as_str(), what.as_str(), outcome.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("alice", "event create", "done"),
            ("alice", "rebuild redis", "done"),
            (os_user.as_str(), "event close", "done")
        ]
    );
    let failed = actions(&env, &unknown).await;
    assert_eq!((failed[0].1.as_str(), failed[0].2.as_str()), ("event close", "failed"));
    assert!(failed[0].3.as_deref().is_some_and(|e| !e.is_empty()), "the error is kept: {failed:?}");

    // When, and as which database role; the create's arguments in the detail.
    let client = env.pool().get().await.expect("db");
    let row = client
        .query_one(
            "SELECT started_at <= finished_at AND finished_at <= now(), db_user, detail->>'total_stock', detail->>'gift'
             FROM operator_actions WHERE event_id = $1 AND action = 'event create'",
            &[&event_id],
        )
        .await
        .expect("the create's row");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), env.admin_database().user.unwrap_or_default());
    assert_eq!((row.get::<_, String>(2), row.get::<_, String>(3)), ("10".into(), "₩5,000 tea".into()));
    // `event show` lists them.
    let view = event::show(&cli(&env), &event_id).await.expect("show");
    assert_eq!(view.operator_actions.len(), 3);
    assert_eq!(view.gift, "₩5,000 tea");

    // Append-only, even for the owner: no rewrite, no delete.
    for statement in [
        "UPDATE operator_actions SET operator = 'mallory'",
        "UPDATE operator_actions SET outcome = 'failed' WHERE outcome = 'done'",
        "DELETE FROM operator_actions",
        "TRUNCATE operator_actions",
    ] {
        let refused = client.batch_execute(statement).await.expect_err(statement);
        assert!(format!("{refused:?}").contains("append-only"), "{statement}: {refused:?}");
    }
    // No service role may write it.
    let ingest = platform::db::pool(&env.database_as(Principal::INGEST)).expect("ingest pool");
    let denied = ingest
        .get()
        .await
        .expect("ingest connects")
        .execute("INSERT INTO operator_actions (operator, action) VALUES ('ingest', 'event close')", &[])
        .await;
    assert!(denied.is_err(), "ingest may not write operator actions");
}

/// The built binary's contract for a dry run: one JSON document, exit 1 when
/// the create would be refused, no audit line (nothing was done).
#[tokio::test]
async fn the_binarys_dry_run_exits_1_when_the_create_would_be_refused() {
    let env = TestEnv::new().await;
    let product = buyers(&env, 1).await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let database_url = env.database.url.expose_secret().to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_firstcome"))
        .args(["event", "create", "--id", &event_id, "--product", &product, "--total", "5"])
        .args(["--close-at", "+30d", "--dry-run", "--format", "json"])
        .env("FIRSTCOME_DATABASE__URL", &database_url)
        .env("FIRSTCOME_KAFKA__TOPIC_PREFIX", &env.prefix)
        .env("FIRSTCOME_REPLICA__SCHEMA", &env.replica.schema)
        .env_remove("RUST_LOG")
        .output()
        .expect("firstcome runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!((plan["eligible"].as_u64(), plan["dry_run"].as_bool()), (Some(1), Some(true)), "{plan}");
    assert!(!stderr.contains("operator action"), "a dry run is not an action: {stderr}");
    assert_eq!(footprint(&env, &event_id).await.rows[0], 0, "no event row");
}

/// The actions recorded in the test's database that name no event: (who, what, outcome).
async fn storewide_actions(pool: &deadpool_postgres::Pool) -> Vec<(String, String, String)> {
    let client = pool.get().await.expect("db");
    client
        .query("SELECT operator, action, outcome FROM operator_actions WHERE event_id IS NULL ORDER BY id", &[])
        .await
        .expect("actions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn topics_schemas_and_members_are_recorded_before_they_run() {
    use firstcome_cli::commands::{members::MembersCommand, schemas, topics};
    let env = TestEnv::new().await;
    let alice = CliSettings { operator: Some("alice".into()), ..cli(&env) };

    // The test kit made the topics and subjects already: both run, idempotently.
    let create = topics::TopicsCommand::Create { partitions: 3, dlq_partitions: 1, replication: Some(1) };
    topics::command(&alice, create).await.expect("topics created");
    schemas::command(&alice, schemas::SchemasCommand::Register).await.expect("schemas registered");
    let seed = MembersCommand::Seed {
        count: 2,
        prefix: format!("a{}-", &env.id[..8]),
        product: "audited-beans".into(),
        eligible_ratio: 1.0,
    };
    members::command(&alice, seed).await.expect("members seeded");
    // Read-only commands leave no row.
    topics::command(&alice, topics::TopicsCommand::Show).await.expect("topics shown");
    schemas::command(&alice, schemas::SchemasCommand::Check { dir: None }).await.expect("schemas checked");
    // A seed that fails (a member schema name the settings refuse) is recorded as failed.
    let nowhere = CliSettings {
        member_primary: platform::settings::MemberPrimarySettings {
            schema: "Not A Schema".into(),
            ..env.member_primary.clone()
        },
        ..alice.clone()
    };
    let seed = MembersCommand::Seed { count: 1, prefix: "x".into(), product: "p".into(), eligible_ratio: 1.0 };
    members::command(&nowhere, seed).await.expect_err("an invalid schema name");

    let rows = storewide_actions(env.pool()).await;
    let summary: Vec<(&str, &str, &str)> = rows.iter().map(|(w, a, o)| (w.as_str(), a.as_str(), o.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("alice", "topics create", "done"),
            ("alice", "schemas register", "done"),
            ("alice", "members seed", "done"),
            ("alice", "members seed", "failed"),
        ]
    );
    let client = env.pool().get().await.expect("db");
    let detail: serde_json::Value = client
        .query_one("SELECT detail FROM operator_actions WHERE action = 'topics create'", &[])
        .await
        .expect("the create's row")
        .get(0);
    assert_eq!((detail["topic_prefix"].as_str(), detail["partitions"].as_i64()), (Some(env.prefix.as_str()), Some(3)));
}

#[tokio::test]
async fn db_migrate_is_recorded_after_it_made_the_table_and_before_once_it_exists() {
    use firstcome_cli::commands::db::{self, DbCommand};
    let env = TestEnv::builder().partitions(1).build().await;
    // A fresh database: no operator_actions until the migrations made it.
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = env.admin_database();
    platform::db::create_database(&admin, &name).await.expect("database created");
    let alice = CliSettings { operator: Some("alice".into()), database: admin.with_database(&name), ..cli(&env) };
    let pool = platform::db::pool(&alice.database).expect("pool");

    let first = db::command(&alice, DbCommand::Migrate).await.expect("migrated");
    assert!(first.json["applied"].as_u64().is_some_and(|n| n > 0), "{}", first.json);
    let rows = storewide_actions(&pool).await;
    assert_eq!(rows, [("alice".into(), "db migrate".into(), "done".into())], "recorded right after, finished");
    let again = db::command(&alice, DbCommand::Migrate).await.expect("migrated again");
    assert_eq!(again.json["applied"], 0);
    let client = pool.get().await.expect("db");
    let rows = client
        .query("SELECT operator, action, outcome, started_at <= finished_at FROM operator_actions ORDER BY id", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "the second run is recorded too (before it ran, as every action)");
    assert!(rows.iter().all(|r| r.get::<_, String>(2) == "done" && r.get::<_, bool>(3)));
    drop(client);
    drop(pool);
    let server = platform::db::pool(&admin.with_database("postgres")).expect("pool");
    let dropped = server
        .get()
        .await
        .expect("db")
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    assert!(dropped.is_ok(), "{dropped:?}");
}
