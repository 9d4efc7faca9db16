//! Schema governance: only `firstcome schemas register` (the admin client)
//! registers, under a BACKWARD_TRANSITIVE rule set before the subject's first
//! version; the codec only looks schemas up, and a schema nobody registered
//! is an error naming the subject and the registry.
//!
//! Run: `eval "$(stack/bin/stack env)"; cargo test -p schemas --test governance`.

use std::time::Duration;

use schemas::events::{Event, SurveySubmitted};
use schemas::registry::COMPATIBILITY;
use schemas::{ClientInfo, Codec, CodecError, RegistryAdmin, SurveyAnswer, Topics};

fn registry_url() -> String {
    std::env::var("FIRSTCOME_REGISTRY__URL").expect("FIRSTCOME_REGISTRY__URL: eval \"$(stack/bin/stack env)\" first")
}

fn clients() -> (Codec, RegistryAdmin) {
    let codec = Codec::new(&registry_url(), Duration::from_secs(10)).expect("codec");
    let admin = RegistryAdmin::new(&registry_url(), Duration::from_secs(10)).expect("registry admin");
    (codec, admin)
}

/// A prefix of this test only (`t-`: `firstcome-lab cleanup-tests` removes its subjects).
fn fresh_topics() -> Topics {
    Topics::with_prefix(&format!("t-governance-{}.", uuid::Uuid::new_v4().simple()))
}

fn entry() -> SurveySubmitted {
    SurveySubmitted {
        event_id: "ev-governance".into(),
        entry_id: uuid::Uuid::new_v4().to_string(),
        user_id: "u1".into(),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: "5".into() }],
        submitted_at: schemas::now_millis(),
        accepted_at: schemas::now_millis(),
        ticket: 1,
        client: ClientInfo { channel: "web".into(), user_agent: None },
    }
}

#[tokio::test]
async fn encoding_never_registers_and_a_missing_schema_names_its_subject_and_registry() {
    let (codec, admin) = clients();
    let topics = fresh_topics();
    let subject = Topics::value_subject(&topics.survey_submitted);

    let encoded = codec.encode(&topics.survey_submitted, &entry()).await;
    match &encoded {
        Err(error @ CodecError::NotRegistered { subject: named, .. }) => {
            assert_eq!(named, &subject);
            let message = error.to_string();
            assert!(message.contains(&subject) && message.contains(&registry_url()), "{message}");
            assert!(message.contains("firstcome schemas register"), "{message}");
        }
        other => panic!("encoded without a registered schema: {other:?}"),
    }
    let verdict = admin.check(&subject, SurveySubmitted::NAME, SurveySubmitted::SCHEMA).await.expect("checked");
    assert_eq!(verdict.compatible, None, "the codec created the subject {subject}");

    // What a service does at start: the first missing subject stops it.
    let required = codec.require_registered(&topics).await;
    assert!(matches!(required, Err(CodecError::NotRegistered { .. })), "{required:?}");
}

#[tokio::test]
async fn a_registered_schema_resolves_to_the_id_registration_gave() {
    let (codec, admin) = clients();
    let topics = fresh_topics();
    let registered = admin.register_all(&topics).await.expect("registered");

    codec.require_registered(&topics).await.expect("every schema resolves once registered");
    let bytes = codec.encode(&topics.survey_submitted, &entry()).await.expect("encoded");
    let id = u32::from_be_bytes(bytes[1..5].try_into().expect("four id bytes"));
    let survey = registered.iter().find(|r| r.subject == Topics::value_subject(&topics.survey_submitted));
    assert_eq!(Some(id), survey.map(|r| r.id));
}

#[tokio::test]
async fn every_subject_carries_the_transitive_rule_so_v3_may_not_drop_a_default_v1_records_need() {
    let (_, admin) = clients();
    let topics = fresh_topics();
    let subject = Topics::value_subject(&topics.survey_submitted);
    admin.register(&subject, SurveySubmitted::NAME, SurveySubmitted::SCHEMA).await.expect("v1");
    assert_eq!(admin.compatibility(&subject).await.expect("rule read").as_deref(), Some(COMPATIBILITY));
    assert_eq!(COMPATIBILITY, "BACKWARD_TRANSITIVE");

    // v2 adds `referrer` with a default: v1 records read in v2 code.
    let v2 = include_str!("avro/survey_submitted_v2.avsc");
    admin.register(&subject, SurveySubmitted::NAME, v2).await.expect("v2 is compatible");
    // v3 keeps `referrer` but drops its default: v2 records still read in v3
    // code (BACKWARD alone allows it), v1 records no longer do.
    let v3 = v2.replacen(r#""default": "unknown","#, "", 1);
    assert_ne!(v3, v2, "the edit applied");
    let refused = admin.register(&subject, SurveySubmitted::NAME, &v3).await;
    assert!(matches!(refused, Err(CodecError::Rejected(_))), "v3 registered over v1's records: {refused:?}");
}
