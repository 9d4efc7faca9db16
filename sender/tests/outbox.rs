//! The outbox relay against the real PostgreSQL and Kafka.

mod common;

use std::sync::Arc;

use sender::outbox::Relay;
use sender::settings::RelaySettings;
use tokio::sync::Notify;

use common::TestEnv;

#[tokio::test]
async fn published_rows_are_pruned_once_older_than_the_retention_and_pending_ones_never() {
    let env = TestEnv::new().await;
    let client = env.pool.get().await.expect("db");
    // Published two hours ago, published just now, never published.
    client
        .batch_execute(
            "INSERT INTO outbox (topic, message_key, payload, headers, published_at) VALUES
               ('t', 'old', '\\x00', '{}', now() - interval '2 hours'),
               ('t', 'recent', '\\x00', '{}', now()),
               ('t', 'pending', '\\x00', '{}', NULL)",
        )
        .await
        .expect("rows");
    let settings = RelaySettings { retain_published_secs: 3_600, ..RelaySettings::default() };
    let relay = Relay::new(env.pool.clone(), env.producer.clone(), settings, Arc::new(Notify::new()));

    assert_eq!(relay.prune().await.expect("prune"), 1);
    let keys: Vec<String> = client
        .query("SELECT message_key FROM outbox ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["recent", "pending"]);
    assert_eq!(relay.prune().await.expect("prune"), 0, "nothing more to prune");
}
