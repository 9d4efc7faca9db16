//! The codec's own wire encoding (schema parsed once, id cached) writes the
//! same bytes as the registry client's `encode_struct`, and they decode back.
//!
//! Run: `eval "$(stack/bin/stack env)"; cargo test -p schemas --test codec_wire`.

use std::time::Duration;

use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use schemas::events::{Event, SurveySubmitted};
use schemas::{Codec, SurveyAnswer};

fn registry_url() -> String {
    std::env::var("FIRSTCOME_REGISTRY__URL").expect("FIRSTCOME_REGISTRY__URL: eval \"$(stack/bin/stack env)\" first")
}

fn entry(n: i64) -> SurveySubmitted {
    SurveySubmitted {
        event_id: "ev".into(),
        entry_id: format!("en-{n}"),
        user_id: "u".into(),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: "5".into() }],
        submitted_at: n,
        accepted_at: n + 1,
        client: schemas::ClientInfo { channel: "web".into(), user_agent: Some("ua".into()) },
        ticket: 0,
    }
}

#[tokio::test]
async fn the_cached_encoding_writes_what_the_registry_client_writes_and_decodes_back() {
    let topic = format!("t-codec-{}.survey-submitted", uuid::Uuid::new_v4().simple());
    let codec = Codec::new(&registry_url(), Duration::from_secs(10)).unwrap();
    // The codec only looks schemas up: register first, as the bootstrap does.
    schemas::RegistryAdmin::new(&registry_url(), Duration::from_secs(10))
        .unwrap()
        .register(&schemas::Topics::value_subject(&topic), SurveySubmitted::NAME, SurveySubmitted::SCHEMA)
        .await
        .expect("registered");
    let settings = schemas::codec::registry_settings(&registry_url(), Duration::from_secs(10)).unwrap();
    let reference = AvroEncoder::new(settings);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.clone(),
        false,
        schemas::codec::supplied_schema(SurveySubmitted::NAME, SurveySubmitted::SCHEMA).unwrap(),
    );
    for n in 0..3 {
        let event = entry(n);
        let ours = codec.encode(&topic, &event).await.expect("encode");
        let theirs = reference.encode_struct(&event, &strategy).await.expect("reference encode");
        assert_eq!(ours, theirs, "record {n}");
        let back: SurveySubmitted = codec.decode(Some(&ours)).await.expect("decode");
        assert_eq!(back, event);
    }
}

/// An opening rush on a fresh process: every record misses the id cache at
/// once. They wait for one look-up rather than each asking the registry
/// (a thousand concurrent look-ups once failed a test with a refused
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_miss_the_cache_at_once_share_one_registry_look_up() {
    let topic = format!("t-codec-{}.survey-submitted", uuid::Uuid::new_v4().simple());
    schemas::RegistryAdmin::new(&registry_url(), Duration::from_secs(10))
        .unwrap()
        .register(&schemas::Topics::value_subject(&topic), SurveySubmitted::NAME, SurveySubmitted::SCHEMA)
        .await
        .expect("registered");
    let codec = Codec::new(&registry_url(), Duration::from_secs(10)).unwrap();
    let encodes = (0..500).map(|n| {
        let codec = codec.clone();
        let topic = topic.clone();
        tokio::spawn(async move { codec.encode(&topic, &entry(n)).await })
    });
    for handle in encodes.collect::<Vec<_>>() {
        handle.await.expect("task").expect("encoded");
    }
    assert_eq!(codec.registry_look_ups(), 1, "one look-up for the whole rush");
}
