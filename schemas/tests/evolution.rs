//! Schema evolution as the registry's rule promises it: a record written with
//! an evolved schema (v2: one field added, with a default) reads in code that
//! knows only v1, a v1 record reads in v2 code with the field's Avro default,
//! and a change the rule forbids is refused by the registry, so no producer
//! ever writes a record with it.
//!
//! Run: `eval "$(stack/bin/stack env)"; cargo test -p schemas --test evolution`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemas::events::{Event, SurveySubmitted};
use schemas::{ClientInfo, Codec, CodecError, RegistryAdmin, SurveyAnswer, Topics};

fn registry_url() -> String {
    std::env::var("FIRSTCOME_REGISTRY__URL").expect("FIRSTCOME_REGISTRY__URL: eval \"$(stack/bin/stack env)\" first")
}

/// `SurveySubmitted` as the v2 code of a partner (or of a later firstcome)
/// has it: one field more, which its schema defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SurveySubmittedV2 {
    event_id: String,
    entry_id: String,
    user_id: String,
    answers: Vec<SurveyAnswer>,
    submitted_at: i64,
    accepted_at: i64,
    ticket: i64,
    client: ClientInfo,
    /// No serde default on purpose: only the Avro default may fill it.
    referrer: String,
}

/// A change the BACKWARD(_TRANSITIVE) rule forbids: a field added without a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SurveySubmittedIncompatible {
    event_id: String,
    entry_id: String,
    user_id: String,
    answers: Vec<SurveyAnswer>,
    submitted_at: i64,
    accepted_at: i64,
    ticket: i64,
    client: ClientInfo,
    referrer: String,
    store_id: String,
}

macro_rules! test_event {
    ($ty:ty, $file:literal) => {
        impl Event for $ty {
            const SCHEMA: &'static str = include_str!(concat!("avro/", $file));
            const NAME: &'static str = "dev.firstcome.events.SurveySubmitted";
            fn topic(topics: &Topics) -> &str {
                &topics.survey_submitted
            }
            fn key(&self) -> &str {
                &self.user_id
            }
            fn entry_id(&self) -> &str {
                &self.entry_id
            }
            fn occurred_at_ms(&self) -> i64 {
                self.accepted_at
            }
        }
    };
}
test_event!(SurveySubmittedV2, "survey_submitted_v2.avsc");
test_event!(SurveySubmittedIncompatible, "survey_submitted_incompatible.avsc");

fn v1(n: i64) -> SurveySubmitted {
    SurveySubmitted {
        event_id: "ev-evolution".into(),
        entry_id: format!("en-{n}"),
        user_id: format!("u{n}"),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: "5".into() }],
        submitted_at: 1_700_000_000_000 + n,
        accepted_at: 1_700_000_000_001 + n,
        ticket: n,
        client: ClientInfo { channel: "partner".into(), user_agent: Some("partner-app/2".into()) },
    }
}

fn v2(n: i64, referrer: &str) -> SurveySubmittedV2 {
    let SurveySubmitted { event_id, entry_id, user_id, answers, submitted_at, accepted_at, ticket, client } = v1(n);
    SurveySubmittedV2 {
        event_id,
        entry_id,
        user_id,
        answers,
        submitted_at,
        accepted_at,
        ticket,
        client,
        referrer: referrer.into(),
    }
}

/// A subject of this test only, holding v1 then v2 under the rule every
/// firstcome subject carries (as `firstcome schemas register` leaves it).
async fn v1_then_v2(admin: &RegistryAdmin) -> (String, String) {
    let topic = format!("t-evolution-{}.survey-submitted", uuid::Uuid::new_v4().simple());
    let subject = Topics::value_subject(&topic);
    admin.register(&subject, SurveySubmitted::NAME, SurveySubmitted::SCHEMA).await.expect("v1 registered");
    admin
        .register(&subject, SurveySubmittedV2::NAME, SurveySubmittedV2::SCHEMA)
        .await
        .expect("v2 is a compatible change");
    (topic, subject)
}

fn clients() -> (Codec, RegistryAdmin) {
    let codec = Codec::new(&registry_url(), Duration::from_secs(10)).expect("codec");
    let admin = RegistryAdmin::new(&registry_url(), Duration::from_secs(10)).expect("registry admin");
    (codec, admin)
}

#[tokio::test]
async fn a_v1_record_reads_in_v2_code_with_the_new_fields_avro_default() {
    let (codec, admin) = clients();
    let (topic, _) = v1_then_v2(&admin).await;

    let bytes = codec.encode(&topic, &v1(1)).await.expect("v1 encoded");
    let read: SurveySubmittedV2 = codec.decode(Some(&bytes)).await.expect("a v1 record reads in v2 code");

    assert_eq!(read, v2(1, "unknown"), "the field v1 lacks has v2's default");
}

#[tokio::test]
async fn a_v2_record_reads_in_v1_code_without_the_field_it_does_not_know() {
    let (codec, admin) = clients();
    let (topic, _) = v1_then_v2(&admin).await;

    let bytes = codec.encode(&topic, &v2(2, "partner-app")).await.expect("v2 encoded");
    let read: SurveySubmitted = codec.decode(Some(&bytes)).await.expect("a v2 record reads in v1 code");

    assert_eq!(read, v1(2));
}

#[tokio::test]
async fn an_incompatible_change_is_refused_by_the_registry_before_any_record_is_written() {
    let (codec, admin) = clients();
    let (topic, subject) = v1_then_v2(&admin).await;

    let verdict = admin
        .check(&subject, SurveySubmittedIncompatible::NAME, SurveySubmittedIncompatible::SCHEMA)
        .await
        .expect("checked");
    assert_eq!(verdict.compatible, Some(false), "the registry calls the change incompatible");
    let registered =
        admin.register(&subject, SurveySubmittedIncompatible::NAME, SurveySubmittedIncompatible::SCHEMA).await;
    assert!(matches!(registered, Err(CodecError::Rejected(_))), "the registry took it: {registered:?}");

    // A producer holding the incompatible schema gets no bytes to send.
    let incompatible = SurveySubmittedIncompatible {
        event_id: "ev".into(),
        entry_id: "en".into(),
        user_id: "u".into(),
        answers: Vec::new(),
        submitted_at: 0,
        accepted_at: 0,
        ticket: 0,
        client: ClientInfo { channel: "partner".into(), user_agent: None },
        referrer: "r".into(),
        store_id: "s".into(),
    };
    let encoded = codec.encode(&topic, &incompatible).await;
    assert!(matches!(encoded, Err(CodecError::NotRegistered { .. })), "encoded with a refused schema: {encoded:?}");
}
