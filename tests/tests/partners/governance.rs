//! Schema governance as a partner sees it: `firstcome schemas register` is
//! the one writer of the registry (the compatibility rule first, then the
//! schemas); a service only looks its schemas up and, when one is missing,
//! stops at start with an error naming the subject and the registry, rather
//! than putting its own schema in the registry by writing a record.

use platform::settings::HttpSettings;
use schemas::registry::COMPATIBILITY;
use schemas::Topics;
use testkit::TestEnv;

#[tokio::test]
async fn a_service_stops_at_start_naming_the_subject_nobody_registered_and_the_cli_registers_it() {
    let env = TestEnv::builder().without_database().build().await;
    // A prefix nobody registered: a deployment whose bootstrap skipped `schemas register`.
    let kafka = platform::settings::KafkaSettings {
        topic_prefix: format!("t-{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        ..env.kafka.clone()
    };
    let settings = stock_processor::Settings {
        kafka: kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        http: HttpSettings::on_port(0),
        ..Default::default()
    };

    let started = stock_processor::Application::build(settings).await;
    let error = match started {
        Ok(_) => panic!("the stage started without its schemas registered"),
        Err(error) => error.to_string(),
    };
    let subject = Topics::value_subject(&kafka.topics().survey_submitted);
    assert!(error.contains(&subject), "the error names the subject: {error}");
    assert!(error.contains(&env.registry.url), "the error names the registry: {error}");
    let admin = env.registry.admin().expect("registry admin");
    assert!(admin.compatibility(&subject).await.expect("rule read").is_none(), "the stage touched {subject}");

    // The bootstrap's step (`firstcome schemas register`, the registry
    // admin's): every subject gets its rule, then its schema.
    let registered = admin.register_all(&kafka.topics()).await.expect("registered");
    assert_eq!(registered.len(), 4, "{registered:?}");
    for r in &registered {
        assert_eq!(admin.compatibility(&r.subject).await.expect("rule read").as_deref(), Some(COMPATIBILITY));
    }
    env.registry.codec().expect("codec").require_registered(&kafka.topics()).await.expect("every schema resolves");
}
