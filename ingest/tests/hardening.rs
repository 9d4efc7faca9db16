//! Property tests over the entry body (parse + validate) and the body limit,
//! and the supply-chain check on the lock file. No stack needed.
//!
//! Run: `cargo test -p ingest --test hardening`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use ingest::error::ApiError;
use ingest::settings::Limits;
use ingest::submission::EntryBody;
use proptest::prelude::*;
use tower::ServiceExt;

// ---- bounded allocation: a per-thread peak of live heap bytes --------------

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|p| {
            if now > p.get() {
                p.set(now)
            }
        });
    });
}
fn sub(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes `f` held above what was live when it started (this thread).
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

/// Parse and validate as the handler does (after the body limit).
fn parse_and_validate(bytes: &[u8], limits: &Limits) -> Result<(), ()> {
    let body: EntryBody = serde_json::from_slice(bytes).map_err(|_| ())?;
    let questions = vec!["q1".to_string(), "q2".to_string()];
    match body.validate(&questions, limits, Some("agent/1")) {
        Ok(submission) => {
            // What passed obeys every rule.
            assert!(submission.answers.len() <= limits.max_answers);
            for a in &submission.answers {
                assert!(!a.answer.trim().is_empty());
                assert!(a.answer.chars().count() <= limits.max_answer_chars);
                assert!(!a.answer.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
                assert!(!a.question.chars().any(char::is_control));
            }
            for q in &questions {
                assert!(submission.answers.iter().any(|a| &a.question == q), "required {q} missing");
            }
            let channel = &submission.client.channel;
            assert!(!channel.is_empty() && channel.len() <= 32);
            assert!(channel.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            if let Some(ua) = &submission.client.user_agent {
                assert!(ua.chars().count() <= 256 && !ua.chars().any(char::is_control));
            }
            Ok(())
        }
        Err(ApiError::Invalid { .. }) => Err(()),
        Err(other) => panic!("validation gave a non-validation error: {other:?}"),
    }
}

/// Heap a body of `n` bytes may cost: a small multiple of its size.
fn allowed_peak(n: usize) -> usize {
    64 * 1024 + 16 * n
}

fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof!["[a-z0-9]{1,6}", any::<String>(), "[\\x00-\\x1f ]{0,4}", Just("q1".to_string()), Just("q2".to_string()),]
}

/// JSON-ish bodies: the right shape with arbitrary contents, wrong shapes,
/// and valid JSON with a few bytes flipped.
fn shaped_body() -> impl Strategy<Value = Vec<u8>> {
    let answers = prop::collection::vec((text(), text()), 0..12);
    let client = prop::option::of((prop::option::of(text()), prop::option::of(text())));
    (answers, client).prop_map(|(answers, client)| {
        let map: serde_json::Map<String, serde_json::Value> =
            answers.into_iter().map(|(q, a)| (q, serde_json::Value::String(a))).collect();
        let mut body = serde_json::json!({ "answers": map });
        if let Some((channel, ua)) = client {
            body["client"] = serde_json::json!({ "channel": channel, "user_agent": ua });
        }
        serde_json::to_vec(&body).unwrap()
    })
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let shaped = shaped_body();
    let mutated = (shaped_body(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(
        |(mut bytes, flips)| {
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        },
    );
    let odd = prop_oneof![
        Just(b"{\"answers\": {\"q1\": 5}}".to_vec()),
        Just(b"{\"answers\": [\"q1\"]}".to_vec()),
        Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        Just(format!("{}{}", "[".repeat(4000), "]".repeat(4000)).into_bytes()),
        Just(b"{\"answers\": {\"q1\": \"a\", \"q1\": \"b\"}}".to_vec()),
        Just(b"{\"answers\": {\"q1\": \"\\ud800\"}}".to_vec()),
        Just(b"{\"answers\": {\"q1\": \"a\", \"q2\": \"b\"}, \"client\": 1e999999}".to_vec()),
    ];
    prop_oneof![3 => shaped, 3 => mutated, 1 => odd]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let (_, peak) = peak_during(|| parse_and_validate(&bytes, &Limits::default()));
        prop_assert!(peak <= allowed_peak(bytes.len()), "{} bytes held {peak} bytes", bytes.len());
    }

    #[test]
    fn json_bodies_are_a_value_or_a_typed_error(bytes in json_body(), max_answers in 1usize..8, max_chars in 1usize..16) {
        let limits = Limits { max_answers, max_answer_chars: max_chars, ..Limits::default() };
        let (_, peak) = peak_during(|| parse_and_validate(&bytes, &limits));
        prop_assert!(peak <= allowed_peak(bytes.len()), "{} bytes held {peak} bytes", bytes.len());
    }
}

// ---- the body limit, as the entries route applies it -----------------------

fn limited_router(max_body: usize) -> Router {
    async fn take(Json(_body): Json<EntryBody>) -> StatusCode {
        StatusCode::OK
    }
    Router::new().route("/entries", post(take).layer(DefaultBodyLimit::max(max_body)))
}

fn post_status(rt: &tokio::runtime::Runtime, router: &Router, body: Vec<u8>, chunked: bool) -> StatusCode {
    let mut request = Request::post("/entries").header(header::CONTENT_TYPE, "application/json");
    if !chunked {
        request = request.header(header::CONTENT_LENGTH, body.len());
    }
    let body = if chunked {
        // No length up front: the limit must hold while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(512).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    let request = request.body(body).unwrap();
    rt.block_on(router.clone().oneshot(request)).unwrap().status()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_body_over_the_limit_is_refused(over in 1usize..5000, filler in any::<u8>(), chunked in any::<bool>()) {
        let limits = Limits::default();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let router = limited_router(limits.max_body_bytes);
        // A well-formed body padded with whitespace past the limit: only its size is wrong.
        let mut body = br#"{"answers": {"q1": "a", "q2": "b"}}"#.to_vec();
        let pad = if filler.is_ascii_whitespace() { filler } else { b' ' };
        body.resize(limits.max_body_bytes + over, pad);
        let status = post_status(&rt, &router, body, chunked);
        prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn a_body_within_the_limit_is_never_a_server_error(bytes in json_body(), chunked in any::<bool>()) {
        let limits = Limits::default();
        prop_assume!(bytes.len() <= limits.max_body_bytes);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let status = post_status(&rt, &limited_router(limits.max_body_bytes), bytes, chunked);
        prop_assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "status {status}"
        );
    }
}

// ---- supply chain -----------------------------------------------------------

/// RUSTSEC-2023-0071 (Marvin attack on `rsa`, no fixed version): nothing in
/// the workspace may depend on the `rsa` crate. jsonwebtoken's `rust_crypto`
/// backend pulled it in; the `aws_lc_rs` backend (rustls' provider) does not.
#[test]
fn the_lock_file_has_no_rsa_crate() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let rsa: Vec<&str> =
        lock.split("[[package]]").filter(|p| p.lines().any(|l| l.trim() == r#"name = "rsa""#)).collect();
    assert!(rsa.is_empty(), "the rsa crate is in Cargo.lock: {rsa:?}");
}
