//! Property tests ("fuzzing") of the registry-aware codec on what any
//! producer with a Kafka login could write: arbitrary datum bytes behind a
//! valid wire header (magic byte and a registered schema id), and valid
//! records with bytes flipped, cut or inserted. Every outcome is a decoded
//! value or a Poison error (dead-lettered), never a panic, never a huge
//! allocation, never Unavailable (which would retry the record forever).
//! And any event we write decodes back to itself.
//!
//! Needs the registry: `eval "$(stack/bin/stack env)"`. A few hundred cases
//! per property run in `scripts/test.sh`; `bash scripts/fuzz.sh [cases]` (or
//! `PROPTEST_CASES=N cargo test -p schemas --test fuzz`) runs many more. A
//! failing input found that way is kept below as a named test.

use std::time::Duration;

use proptest::prelude::*;
use schemas::events::{DispatchStatus, Event, GiftDispatch, Outcome, StockDecision, StockRelease, SurveySubmitted};
use schemas::{ClientInfo, Codec, CodecError, SurveyAnswer};

/// Cases per property: `PROPTEST_CASES` when set, else the suite's default.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn registry_url() -> String {
    std::env::var("FIRSTCOME_REGISTRY__URL").expect("FIRSTCOME_REGISTRY__URL: eval \"$(stack/bin/stack env)\" first")
}

/// One runtime and codec per test thread, and one valid record of each
/// event type encoded against the registry (subjects under a `t-` prefix,
/// which `firstcome-lab cleanup-tests` removes).
struct Setup {
    runtime: tokio::runtime::Runtime,
    codec: Codec,
    prefix: String,
    records: [Vec<u8>; 4],
}

thread_local! {
    static SETUP: Setup = setup();
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let codec = Codec::new(&registry_url(), Duration::from_secs(10)).expect("codec");
    let prefix = format!("t-fuzz-{}", uuid::Uuid::new_v4().simple());
    let records = runtime.block_on(async {
        [
            encoded(&codec, &prefix, &submitted_example()).await,
            encoded(&codec, &prefix, &decision_example()).await,
            encoded(&codec, &prefix, &dispatch_example()).await,
            encoded(&codec, &prefix, &release_example()).await,
        ]
    });
    Setup { runtime, codec, prefix, records }
}

fn topic<E: Event>(prefix: &str) -> String {
    format!("{prefix}.{}", E::topic(&schemas::Topics::default()))
}

/// Encodes `event` for its topic under `prefix`; the first record of a type
/// registers its schema first (the codec only looks schemas up, as the
/// services do after `firstcome schemas register`).
async fn encoded<E: Event>(codec: &Codec, prefix: &str, event: &E) -> Vec<u8> {
    let topic = topic::<E>(prefix);
    if let Ok(bytes) = codec.encode(&topic, event).await {
        return bytes;
    }
    schemas::RegistryAdmin::new(&registry_url(), Duration::from_secs(10))
        .expect("registry client")
        .register(&schemas::Topics::value_subject(&topic), E::NAME, E::SCHEMA)
        .await
        .expect("registered");
    codec.encode(&topic, event).await.expect("encode against the registry")
}

fn submitted_example() -> SurveySubmitted {
    SurveySubmitted {
        event_id: "ev-1".into(),
        entry_id: "en-1".into(),
        user_id: "m-1".into(),
        answers: vec![SurveyAnswer { question: "q1".into(), answer: "네".into() }],
        submitted_at: 1,
        accepted_at: 2,
        client: ClientInfo { channel: "web".into(), user_agent: Some("ua".into()) },
        ticket: 3,
    }
}

fn decision_example() -> StockDecision {
    StockDecision {
        event_id: "ev-1".into(),
        entry_id: "en-1".into(),
        user_id: "m-1".into(),
        outcome: Outcome::Won,
        unit_no: Some(1),
        decided_at: 4,
        accepted_at: 2,
        ticket: 3,
    }
}

fn dispatch_example() -> GiftDispatch {
    GiftDispatch {
        event_id: "ev-1".into(),
        entry_id: "en-1".into(),
        user_id: "m-1".into(),
        status: DispatchStatus::Sent,
        provider_ref: Some("ref".into()),
        attempts: 1,
        reason: None,
        dispatched_at: 5,
    }
}

fn release_example() -> StockRelease {
    StockRelease {
        event_id: "ev-1".into(),
        entry_id: "en-1".into(),
        user_id: "m-1".into(),
        unit_no: 1,
        reason: "refused".into(),
        released_at: 6,
    }
}

/// Decodes `bytes` as the event type at `kind` (the order of
/// [`Setup::records`]); Ok(()) for a value or a Poison error.
fn decode_as(setup: &Setup, kind: usize, bytes: &[u8]) -> Result<(), String> {
    let codec = &setup.codec;
    let outcome = setup.runtime.block_on(async {
        match kind {
            0 => codec.decode::<SurveySubmitted>(Some(bytes)).await.map(drop),
            1 => codec.decode::<StockDecision>(Some(bytes)).await.map(drop),
            2 => codec.decode::<GiftDispatch>(Some(bytes)).await.map(drop),
            _ => codec.decode::<StockRelease>(Some(bytes)).await.map(drop),
        }
    });
    match outcome {
        Ok(()) | Err(CodecError::Poison(_)) => Ok(()),
        Err(other) => Err(format!("{other:?}")),
    }
}

/// A change to a valid record's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: prop::sample::Index, bits: u8 },
    Set { at: prop::sample::Index, to: u8 },
    Cut { at: prop::sample::Index },
    Insert { at: prop::sample::Index, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        // Bytes that are large or negative Avro varints (lengths, counts).
        (any::<prop::sample::Index>(), prop_oneof![Just(0x7fu8), Just(0x80), Just(0xff), Just(0x01), any::<u8>()])
            .prop_map(|(at, to)| Mutation::Set { at, to }),
        any::<prop::sample::Index>().prop_map(|at| Mutation::Cut { at }),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

/// Applies `mutations` to the datum only (after the 5-byte wire header).
fn mutate(record: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let (header, datum) = record.split_at(5);
    let mut datum = datum.to_vec();
    for mutation in mutations {
        match mutation {
            Mutation::Flip { at, bits } if !datum.is_empty() => {
                let at = at.index(datum.len());
                datum[at] ^= bits;
            }
            Mutation::Set { at, to } if !datum.is_empty() => {
                let at = at.index(datum.len());
                datum[at] = *to;
            }
            Mutation::Cut { at } => datum.truncate(at.index(datum.len() + 1)),
            Mutation::Insert { at, bytes } => {
                let at = at.index(datum.len() + 1);
                datum.splice(at..at, bytes.iter().copied());
            }
            _ => {}
        }
    }
    [header, &datum].concat()
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9-]{1,12}", 1 => ".{0,20}", 1 => "\\PC{0,8}"]
}

prop_compose! {
    fn any_submitted()(
        event_id in text(), entry_id in text(), user_id in text(),
        answers in prop::collection::vec((text(), text()), 0..5),
        submitted_at in any::<i64>(), accepted_at in any::<i64>(), ticket in any::<i64>(),
        channel in text(), user_agent in prop::option::of(text()),
    ) -> SurveySubmitted {
        SurveySubmitted {
            event_id, entry_id, user_id,
            answers: answers.into_iter().map(|(question, answer)| SurveyAnswer { question, answer }).collect(),
            submitted_at, accepted_at, ticket,
            client: ClientInfo { channel, user_agent },
        }
    }
}

prop_compose! {
    fn any_decision()(
        event_id in text(), entry_id in text(), user_id in text(),
        outcome in prop::sample::select(vec![Outcome::Won, Outcome::SoldOut, Outcome::AlreadyWon, Outcome::Ineligible, Outcome::Closed]),
        unit_no in prop::option::of(any::<i32>()),
        decided_at in any::<i64>(), accepted_at in any::<i64>(), ticket in any::<i64>(),
    ) -> StockDecision {
        StockDecision { event_id, entry_id, user_id, outcome, unit_no, decided_at, accepted_at, ticket }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_datum_bytes_after_a_valid_header_are_a_value_or_poison(
        kind in 0usize..4,
        datum in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..1024),
        ],
    ) {
        SETUP.with(|setup| {
            let bytes = [&setup.records[kind][..5], &datum[..]].concat();
            decode_as(setup, kind, &bytes).map_err(TestCaseError::fail)
        })?;
    }

    #[test]
    fn a_valid_record_with_bytes_changed_is_a_value_or_poison(
        kind in 0usize..4,
        as_kind in prop_oneof![3 => Just(None), 1 => (0usize..4).prop_map(Some)],
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        SETUP.with(|setup| {
            let bytes = mutate(&setup.records[kind], &mutations);
            decode_as(setup, as_kind.unwrap_or(kind), &bytes).map_err(TestCaseError::fail)
        })?;
    }

    #[test]
    fn any_entry_decodes_back_to_itself(event in any_submitted()) {
        SETUP.with(|setup| {
            let back = setup.runtime.block_on(async {
                let bytes = encoded(&setup.codec, &setup.prefix, &event).await;
                setup.codec.decode::<SurveySubmitted>(Some(&bytes)).await
            });
            prop_assert_eq!(back.ok(), Some(event.clone()));
            Ok(())
        })?;
    }

    #[test]
    fn any_decision_decodes_back_to_itself(event in any_decision()) {
        SETUP.with(|setup| {
            let back = setup.runtime.block_on(async {
                let bytes = encoded(&setup.codec, &setup.prefix, &event).await;
                setup.codec.decode::<StockDecision>(Some(&bytes)).await
            });
            prop_assert_eq!(back.ok(), Some(event.clone()));
            Ok(())
        })?;
    }
}
