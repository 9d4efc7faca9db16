//! Avro encode and decode through the registry-aware codec (the schema id
//! cached after the first record), against the stack's registry
//! (`eval "$(stack/bin/stack env)"`), beside wave 1's encode path (the
//! registry client's `encode_struct` with the schema parsed and canonicalised
//! for every record) for the before/after ratio in one run.
//!
//! `cargo bench -p schemas --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use schemas::codec::{registry_settings, supplied_schema};
use schemas::{ClientInfo, Codec, Event, SurveyAnswer, SurveySubmitted};

fn entry() -> SurveySubmitted {
    SurveySubmitted {
        event_id: "drill-event".into(),
        entry_id: "0193b4c6-7c1e-7d2a-9f00-5d4b8e1a2c3d".into(),
        user_id: "m0000001".into(),
        answers: vec![
            SurveyAnswer { question: "satisfaction".into(), answer: "5".into() },
            SurveyAnswer { question: "recommend".into(), answer: "yes".into() },
        ],
        submitted_at: 1_795_000_000_000,
        accepted_at: 1_795_000_000_001,
        client: ClientInfo { channel: "web".into(), user_agent: Some("Mozilla/5.0".into()) },
        ticket: 0,
    }
}

fn codec(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url =
        std::env::var("FIRSTCOME_REGISTRY__URL").unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into());
    let codec = Codec::new(&url, Duration::from_secs(10)).expect("codec");
    // A `t-` topic: `firstcome-lab cleanup-tests` removes its subject.
    let topic = format!("t-bench-{}.survey-submitted", uuid::Uuid::new_v4().simple());
    let event = entry();
    // The codec only looks schemas up: register first, as the bootstrap does.
    let admin = schemas::RegistryAdmin::new(&url, Duration::from_secs(10)).expect("registry admin");
    let subject = schemas::Topics::value_subject(&topic);
    runtime.block_on(admin.register(&subject, SurveySubmitted::NAME, SurveySubmitted::SCHEMA)).expect("registered");
    let bytes = runtime.block_on(codec.encode(&topic, &event)).expect("encodes");
    c.bench_function("schemas/avro_encode", |b| {
        b.to_async(&runtime).iter(|| async { codec.encode(&topic, black_box(&event)).await.expect("encode") })
    });
    // Wave 1: what `Codec::encode` did per record before the schema was
    // parsed once (its registry id is cached by the client after the first call).
    let client = AvroEncoder::new(registry_settings(&url, Duration::from_secs(10)).expect("settings"));
    c.bench_function("schemas/avro_encode_schema_per_record", |b| {
        b.to_async(&runtime).iter(|| async {
            let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.clone(),
                false,
                supplied_schema(SurveySubmitted::NAME, SurveySubmitted::SCHEMA).expect("schema"),
            );
            client.encode_struct(black_box(&event), &strategy).await.expect("encode")
        })
    });
    c.bench_function("schemas/avro_decode", |b| {
        b.to_async(&runtime)
            .iter(|| async { codec.decode::<SurveySubmitted>(Some(black_box(&bytes))).await.expect("decode") })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
