//! Arbitrary bytes through Avro decoding: never a panic, never a huge
//! allocation, and through the registry-aware codec always a Poison error
//! (a bad record is dead-lettered, never retried as if the registry were down).
//!
//! Run: `cargo test -p schemas --test avro_bytes` (the registry test needs
//! `eval "$(stack/bin/stack env)"`).

use apache_avro::Schema;
use proptest::prelude::*;
use schemas::events::{Event, StockDecision, SurveySubmitted};
use schemas::{Codec, CodecError};

#[allow(deprecated)] // from_avro_datum: the plain datum reader is what we test
fn decode_pure<E: Event>(schema: &Schema, bytes: &[u8]) {
    let mut reader = bytes;
    if let Ok(value) = apache_avro::from_avro_datum(schema, &mut reader, None) {
        // A datum that parsed may still not be the type; either way no panic.
        let _ = apache_avro::from_value::<E>(&value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_datum_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let submitted = Schema::parse_str(SurveySubmitted::SCHEMA).unwrap();
        let decision = Schema::parse_str(StockDecision::SCHEMA).unwrap();
        decode_pure::<SurveySubmitted>(&submitted, &bytes);
        decode_pure::<StockDecision>(&decision, &bytes);
    }
}

fn registry_url() -> String {
    std::env::var("FIRSTCOME_REGISTRY__URL").expect("FIRSTCOME_REGISTRY__URL: eval \"$(stack/bin/stack env)\" first")
}

/// One codec and the wire header (magic byte + schema id) of a schema that is
/// really registered, so arbitrary bodies reach the Avro decoder too.
async fn codec_and_header(rt_topic: &str) -> (Codec, Vec<u8>) {
    let codec = Codec::new(&registry_url(), std::time::Duration::from_secs(10)).unwrap();
    let event = SurveySubmitted {
        event_id: "ev".into(),
        entry_id: "en".into(),
        user_id: "u".into(),
        answers: vec![],
        submitted_at: 1,
        accepted_at: 2,
        client: schemas::ClientInfo { channel: "web".into(), user_agent: None },
        ticket: 0,
    };
    // The codec only looks schemas up: register first, as the bootstrap does.
    schemas::RegistryAdmin::new(&registry_url(), std::time::Duration::from_secs(10))
        .unwrap()
        .register(&schemas::Topics::value_subject(rt_topic), SurveySubmitted::NAME, SurveySubmitted::SCHEMA)
        .await
        .expect("registered");
    let bytes = codec.encode(rt_topic, &event).await.expect("encode against the registry");
    (codec, bytes[..5].to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn arbitrary_record_values_are_poison_through_the_codec(
        body in prop::collection::vec(any::<u8>(), 0..256),
        header_kind in 0u8..3,
        unknown_id in 1_000_000u32..u32::MAX,
    ) {
        thread_local! {
            static SETUP: (tokio::runtime::Runtime, Codec, Vec<u8>) = {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let topic = format!("prop-{}.survey-submitted", uuid::Uuid::new_v4().simple());
                let (codec, header) = rt.block_on(codec_and_header(&topic));
                (rt, codec, header)
            };
        }
        SETUP.with(|(rt, codec, header)| {
            let bytes = match header_kind {
                0 => [header.clone(), body].concat(),
                // The wire header with an id the registry does not have.
                1 => [vec![0u8], unknown_id.to_be_bytes().to_vec(), body].concat(),
                _ => body,
            };
            match rt.block_on(codec.decode::<SurveySubmitted>(Some(&bytes))) {
                Ok(_) => Ok(()), // arbitrary bytes that happen to be a valid record
                Err(CodecError::Poison(_)) => Ok(()),
                Err(other) => Err(TestCaseError::fail(format!("{} bytes gave {other:?}, not Poison", bytes.len()))),
            }
        })?;
    }
}
