//! Property tests ("fuzzing") of what platform parses from the outside: the
//! W3C `traceparent` value every HTTP request and Kafka record may carry.
//!
//! A few hundred cases run in `scripts/test.sh`; `bash scripts/fuzz.sh
//! [cases]` (or `PROPTEST_CASES=N cargo test -p platform --test fuzz`) runs
//! many more. A failing input found that way is kept below as a named test.

use platform::trace_context::TraceParent;
use proptest::prelude::*;

/// Cases per property: `PROPTEST_CASES` when set, else the suite's default.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The W3C grammar (trace-context level 1): `version-traceid-parentid-flags`,
/// lower-case hex only, version `ff` invalid, ids not all zero; version `00`
/// has exactly four fields, a later version may carry more after a `-`.
fn w3c_valid(value: &str) -> bool {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let fields: Vec<&str> = value.splitn(5, '-').collect();
    if fields.len() < 4 {
        return false;
    }
    let (version, trace, span, flags) = (fields[0], fields[1], fields[2], fields[3]);
    let shapes = version.len() == 2
        && trace.len() == 32
        && span.len() == 16
        && flags.len() == 2
        && [version, trace, span, flags].iter().all(|f| is_lower_hex(f));
    if !shapes || version == "ff" || trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return false;
    }
    match fields.get(4) {
        None => true,
        Some(_) => version != "00",
    }
}

/// Strings near the grammar: mostly hex digits and dashes, so that the
/// random inputs reach the field checks instead of failing at the first one.
fn near_traceparent() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F+ -]{0,70}",
        "[0-9a-f]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-fA-F+-]{2}(-[0-9a-z]{0,4})?",
        "( |\t)?(00|01|fe|ff|0x|\\+1)-[0-9a-f]{32}-[0-9a-f]{16}-(00|01|\\+1|-1|0G|ff)( |\t)?",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn what_parses_is_a_valid_w3c_traceparent(value in near_traceparent()) {
        if let Some(parsed) = TraceParent::parse(&value) {
            prop_assert!(w3c_valid(&value), "accepted {value:?} as {parsed:?}");
        }
    }

    #[test]
    fn every_valid_w3c_traceparent_parses(value in near_traceparent()) {
        if w3c_valid(&value) && value.starts_with("00-") {
            prop_assert!(TraceParent::parse(&value).is_some(), "refused {value:?}");
        }
    }

    #[test]
    fn any_ids_survive_printing_and_parsing(
        trace_id in any::<[u8; 16]>().prop_filter("not all zero", |t| *t != [0; 16]),
        span_id in any::<[u8; 8]>().prop_filter("not all zero", |s| *s != [0; 8]),
        flags in any::<u8>(),
    ) {
        let text = format!("00-{}-{}-{flags:02x}", hex::encode(trace_id), hex::encode(span_id));
        let parsed = TraceParent::parse(&text);
        prop_assert_eq!(parsed, Some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 }));
        let printed = parsed.map(|p| p.to_string());
        prop_assert_eq!(printed.as_deref().and_then(TraceParent::parse), parsed);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = TraceParent::parse(&String::from_utf8_lossy(&bytes));
    }
}

// Inputs the properties above found; each was accepted before the parser
// checked the grammar field by field.

#[test]
fn a_sign_in_the_flags_is_refused() {
    // `u8::from_str_radix` takes a leading `+`.
    assert_eq!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1"), None);
}

#[test]
fn upper_case_hex_is_refused() {
    assert_eq!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None);
    assert_eq!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"), None);
}

#[test]
fn a_version_that_is_not_hex_is_refused() {
    assert_eq!(TraceParent::parse("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
}

#[test]
fn version_00_with_a_fifth_field_is_refused_and_a_later_version_may_have_one() {
    assert_eq!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), None);
    assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
}
