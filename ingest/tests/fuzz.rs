//! Property tests ("fuzzing") of what ingest reads from anyone on the
//! internet: the `Authorization` header and the JWT in it, the correlation
//! id, the entry body, and the dashboard's server-sent events as the page's
//! script reads them back. No service is started: each property calls the
//! parsing code itself, so hundreds of cases take milliseconds.
//!
//! A few hundred cases per property run in `scripts/test.sh`; `bash
//! scripts/fuzz.sh [cases]` (or `PROPTEST_CASES=N cargo test -p ingest --test
//! fuzz`) runs many more. A failing input found that way is kept below the
//! properties as a named test.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::Sse;
use axum::response::IntoResponse;
use ingest::auth::{bearer, AuthError, Expected, Verifier, MAX_AUTHORIZATION_BYTES};
use ingest::dashboard::{snapshot_event, Snapshot};
use ingest::request_context::CorrelationId;
use ingest::submission::EntryBody;
use ingest::Limits;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use secrecy::SecretString;

/// Cases per property: `PROPTEST_CASES` when set, else the suite's default.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

const SECRET: &str = "fuzz-secret";
const MAX_LIFETIME_SECS: i64 = 3_600;
/// The verifier's clock-skew leeway (`ingest::auth`).
const LEEWAY_SECS: i64 = 5;

fn verifier() -> Verifier {
    let expected = Expected { max_lifetime: Duration::from_secs(MAX_LIFETIME_SECS as u64), ..Expected::default() };
    Verifier::new(&SecretString::from(SECRET), &expected)
}

fn sign(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("signing a JSON object")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Times around now and at the edges of i64, where arithmetic overflows.
fn instant() -> impl Strategy<Value = i64> {
    let now = now();
    prop_oneof![
        12 => now - 2 * MAX_LIFETIME_SECS..now + 2 * MAX_LIFETIME_SECS,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(0i64),
        1 => any::<i64>(),
    ]
}

/// A JSON value where a claim is expected: mostly right, sometimes another type.
fn claim_value(good: impl Strategy<Value = serde_json::Value>) -> impl Strategy<Value = Option<serde_json::Value>> {
    prop_oneof![
        60 => good.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(serde_json::Value::Null)),
        1 => any::<f64>().prop_map(|f| Some(serde_json::json!(f))),
        1 => ".{0,8}".prop_map(|s| Some(serde_json::json!(s))),
    ]
}

fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![4 => "m-[0-9]{1,4}", 1 => ".{0,12}", 1 => "[a-z{}| \t]{0,6}", 1 => "x{127,130}"]
}

prop_compose! {
    /// Claims a holder of the signing key might mint, well formed or not.
    fn claims()(
        sub in claim_value(id_like().prop_map(serde_json::Value::from)),
        iss in claim_value(prop_oneof![4 => Just("firstcome".to_string()), 1 => ".{0,10}"].prop_map(serde_json::Value::from)),
        aud in claim_value(prop_oneof![
            8 => Just(serde_json::json!("firstcome-ingest")),
            1 => Just(serde_json::json!(["shop-web", "firstcome-ingest"])),
            1 => ".{0,10}".prop_map(serde_json::Value::from),
        ]),
        (iat, exp) in prop_oneof![
            // Mostly a token that could be good: issued up to a lifetime ago,
            // living about the maximum, around the edges of each rule.
            3 => (-2 * LEEWAY_SECS..MAX_LIFETIME_SECS + 10, -10..MAX_LIFETIME_SECS + 2 * LEEWAY_SECS).prop_map(|(age, life)| {
                let iat = now() - age;
                (Some(serde_json::json!(iat)), Some(serde_json::json!(iat + life)))
            }),
            1 => (
                claim_value(instant().prop_map(serde_json::Value::from)),
                claim_value(instant().prop_map(serde_json::Value::from)),
            ),
        ],
        nbf in prop_oneof![3 => Just(None), 1 => instant().prop_map(|t| Some(serde_json::json!(t)))],
    ) -> serde_json::Value {
        let mut claims = serde_json::Map::new();
        for (name, value) in [("sub", sub), ("iss", iss), ("aud", aud), ("iat", iat), ("exp", exp), ("nbf", nbf)] {
            if let Some(value) = value {
                claims.insert(name.to_string(), value);
            }
        }
        serde_json::Value::Object(claims)
    }
}

proptest! {
    #![proptest_config(config())]

    /// What `bearer` hands on is a non-empty, trimmed piece of a header
    /// within the cap that names the Bearer scheme.
    #[test]
    fn bearer_takes_only_a_bounded_bearer_token(
        header in prop_oneof![
            ".{0,64}",
            "(?i:bearer)[ \t]{0,3}[ -~]{0,40}",
            "[ \t]{0,2}Bearer [ -~]{4090,4100}",
        ],
    ) {
        match bearer(Some(&header)) {
            Ok(token) => {
                prop_assert!(header.len() <= MAX_AUTHORIZATION_BYTES);
                prop_assert!(!token.is_empty());
                prop_assert_eq!(token, token.trim());
                prop_assert!(header.contains(token));
                prop_assert!(header.trim_start()[..6].eq_ignore_ascii_case("bearer"));
            }
            Err(AuthError::Oversized) => prop_assert!(header.len() > MAX_AUTHORIZATION_BYTES),
            Err(AuthError::Missing) => {}
            Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
        }
    }

    #[test]
    fn any_bearer_token_without_white_space_is_taken_whole(token in "[!-~]{1,200}") {
        let header = format!("Bearer {token}");
        prop_assert_eq!(bearer(Some(&header)).ok(), Some(token.as_str()));
    }

    /// Random text shaped like a JWT (three base64url-ish parts) never
    /// verifies and never panics.
    #[test]
    fn unsigned_jwt_shapes_are_refused(
        token in prop_oneof!["[A-Za-z0-9_=-]{0,40}\\.[A-Za-z0-9_=-]{0,80}\\.[A-Za-z0-9_=-]{0,50}", ".{0,120}"],
    ) {
        prop_assert!(verifier().verify(&token).is_err());
    }

    /// Whatever claims a holder of the key signs, a token that verifies
    /// names a valid member and lives at most the maximum from ingest's
    /// clock: the lifetime rules hold for every claim value, including
    /// overflowing ones.
    #[test]
    fn a_verified_token_is_bounded_in_time_and_names_a_valid_member(claims in claims()) {
        let token = sign(&claims);
        let before = now();
        let verified = verifier().verify(&token);
        let after = now();
        if let Ok(member) = verified {
            prop_assert!(ingest::ids::is_valid_id(member.as_str()), "member {member:?} from {claims}");
            prop_assert_eq!(Some(member.as_str()), claims["sub"].as_str());
            let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
            let (Some(iat), Some(exp)) = (iat, exp) else {
                return Err(TestCaseError::fail(format!("verified without integer iat and exp: {claims}")));
            };
            prop_assert!(exp.checked_sub(iat).is_some_and(|l| l <= MAX_LIFETIME_SECS), "lifetime of {claims}");
            prop_assert!(iat <= after + LEEWAY_SECS, "issued in the future: {claims}");
            prop_assert!(exp >= before - LEEWAY_SECS, "expired: {claims}");
            prop_assert!(exp - before <= MAX_LIFETIME_SECS + LEEWAY_SECS, "lives too long: {claims}");
            if let Some(nbf) = claims.get("nbf").and_then(|n| n.as_i64()) {
                prop_assert!(nbf <= after + LEEWAY_SECS, "not valid yet: {claims}");
            }
        }
    }

    /// One character of a valid token changed never yields another member.
    #[test]
    fn a_changed_character_never_verifies_as_someone_else(at in any::<prop::sample::Index>(), to in "[!-~]") {
        let now = now();
        let token = sign(&serde_json::json!({
            "sub": "m-1", "iss": "firstcome", "aud": "firstcome-ingest", "iat": now, "exp": now + 60,
        }));
        let mut bytes = token.clone().into_bytes();
        let at = at.index(bytes.len());
        bytes[at] = to.as_bytes()[0];
        let forged = String::from_utf8(bytes).expect("ASCII");
        if let Ok(member) = verifier().verify(&forged) {
            prop_assert_eq!(member.as_str(), "m-1", "forged {} from {}", forged, token);
        }
    }

    /// The correlation id ingest logs, produces and echoes is always one it
    /// can echo: the client's when acceptable, else a fresh one.
    #[test]
    fn the_correlation_id_is_always_a_short_visible_ascii_header(
        value in prop_oneof![
            "[!-~]{1,130}",
            ".{0,40}",
            prop::collection::vec(any::<u8>(), 0..140).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        let header = HeaderValue::from_bytes(value.as_bytes()).ok();
        let CorrelationId(id) = CorrelationId::from_header(header.as_ref());
        prop_assert!(!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
        prop_assert!(HeaderValue::from_str(&id).is_ok());
        let acceptable = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
        if acceptable {
            prop_assert_eq!(id, value);
        } else {
            prop_assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?} for {value:?}");
        }
    }

    /// Any bytes as an entry body: parsed or refused, never a panic.
    #[test]
    fn arbitrary_entry_body_bytes_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "\\{\"answers\":\\{(\"[a-z\\\\u0000]{0,3}\":\"[ -~]{0,6}\",?){0,4}\\}(,\"client\":.{0,20})?\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        if let Ok(body) = serde_json::from_slice::<EntryBody>(&bytes) {
            let _ = body.validate(&["q1".to_string()], &Limits::default(), None);
        }
    }

    /// Every body the validator accepts keeps the rules the rest of the
    /// pipeline relies on (Avro strings, PostgreSQL jsonb, log lines), and
    /// every body within the rules is accepted.
    #[test]
    fn validation_accepts_exactly_the_bodies_within_the_rules(
        answers in prop::collection::vec((question_id(), answer_text()), 0..6),
        channel in prop::option::of(prop_oneof![3 => "[a-z0-9_-]{28,33}", 3 => "[a-z0-9_-]{1,8}", 1 => ".{0,6}"]),
        body_agent in prop::option::of(".{0,300}"),
        header_agent in prop::option::of(".{0,20}"),
        required in prop::collection::vec("q[1-3]", 0..3),
    ) {
        let limits = Limits { max_answers: 4, max_answer_chars: 12, ..Limits::default() };
        let mut object = serde_json::Map::new();
        for (question, answer) in &answers {
            object.insert(question.clone(), serde_json::Value::from(answer.clone()));
        }
        let answers: Vec<(String, String)> = object.iter().map(|(q, a)| (q.clone(), a.as_str().unwrap_or_default().to_string())).collect();
        let body = serde_json::json!({
            "answers": object,
            "client": { "channel": channel, "user_agent": body_agent },
        });
        let parsed: EntryBody = serde_json::from_value(body.clone()).expect("the body's shape");
        let result = parsed.validate(&required, &limits, header_agent.as_deref());

        let chars = |s: &str| s.chars().count();
        let within = answers.len() <= limits.max_answers
            && answers.iter().all(|(q, a)| {
                !q.trim().is_empty() && chars(q) <= limits.max_answer_chars && !q.chars().any(char::is_control)
                    && !a.trim().is_empty() && chars(a) <= limits.max_answer_chars
                    && !a.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            })
            && required.iter().all(|r| answers.iter().any(|(q, _)| q == r))
            && channel.as_deref().is_none_or(|c| {
                !c.is_empty() && chars(c) <= 32 && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        match result {
            Ok(submission) => {
                prop_assert!(within, "accepted {body}");
                prop_assert_eq!(submission.answers.len(), answers.len());
                for answer in &submission.answers {
                    prop_assert!(!answer.answer.contains('\0') && !answer.question.contains('\0'));
                }
                if let Some(agent) = &submission.client.user_agent {
                    prop_assert!(!agent.is_empty() && chars(agent) <= 256 && !agent.chars().any(char::is_control));
                }
                // What becomes the record is stored as jsonb: it must survive JSON.
                let json = serde_json::to_string(&submission.answers).expect("JSON");
                let back: Vec<schemas::SurveyAnswer> = serde_json::from_str(&json).expect("read back");
                prop_assert_eq!(back, submission.answers);
            }
            Err(error) => prop_assert!(!within, "refused {body}: {error}"),
        }
    }

    /// The dashboard's stream, framed by ingest and read back the way
    /// `static/dashboard.js` reads it (in any chunking), gives back the
    /// snapshot: text with new lines, `data:` or blank lines in a figure's
    /// name or an error message cannot break or inject an event.
    #[test]
    fn the_dashboard_reads_back_every_snapshot_it_is_sent(
        snapshots in prop::collection::vec(snapshot(), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let bytes = sse_bytes(&snapshots);
        let text = String::from_utf8(bytes).expect("UTF-8");
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).filter(|&i| text.is_char_boundary(i)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for to in at {
            chunks.push(&text[from..to]);
            from = to;
        }
        chunks.push(&text[from..]);
        let events = DashboardReader::default().read_all(&chunks);
        let expected: Vec<(String, serde_json::Value)> =
            snapshots.iter().map(|s| ("snapshot".to_string(), serde_json::to_value(s).expect("JSON"))).collect();
        let read: Vec<(String, serde_json::Value)> = events
            .into_iter()
            .map(|(name, data)| (name, serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)))
            .collect();
        prop_assert_eq!(read, expected);
    }

    /// Any bytes given to the page's reader: events or nothing, never a panic
    /// (the reader below is the page's algorithm; this keeps it total).
    #[test]
    fn the_dashboard_reader_takes_any_stream(text in "(event:|data:|\n| |[a-z{}\"])*") {
        let _ = DashboardReader::default().read_all(&[&text]);
    }
}

/// Question ids: mostly the survey's own, now and then anything.
fn question_id() -> impl Strategy<Value = String> {
    prop_oneof![6 => "q[1-4]", 1 => "[ a-z]{0,13}", 1 => answer_text()]
}

/// Text as a member might type it: letters, spaces, Korean, emoji, and now
/// and then a control character or a long run.
fn answer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9가-힣][a-z0-9 가-힣\n]{0,11}",
        1 => "[a-z0-9 ]{0,14}",
        1 => "[가-힣 ]{1,13}",
        1 => "[\u{0}-\u{1f}\u{7f}\u{85}\u{2028}a ]{1,4}",
        1 => "[\n\r\ta]{1,4}",
        1 => "\\PC{0,14}",
        1 => ".{0,16}",
    ]
}

prop_compose! {
    fn snapshot()(
        event_id in ".{0,12}",
        status in prop_oneof![Just("open".to_string()), "[a-z\n:]{0,8}"],
        counts in prop::collection::btree_map("(data:|event:|\n|\n\n|\r| |[a-z])*", any::<i64>(), 0..4),
        errors in prop::collection::vec("(data: x|\n\n|\r\n|: comment|[ -~]|[가-힣])*", 0..3),
        at_ms in any::<i64>(),
        lag in prop::collection::vec(("[a-z.-]{1,10}", any::<i32>(), prop::option::of(any::<i64>()), any::<i64>()), 0..2),
    ) -> Snapshot {
        Snapshot {
            event_id,
            status,
            at_ms,
            entries: counts.clone(),
            dead_letters: counts,
            errors,
            lag: lag
                .into_iter()
                .map(|(topic, partition, committed, end)| platform::kafka::lag::PartitionLag {
                    group: "recorder".into(),
                    topic,
                    partition,
                    committed,
                    end,
                    lag: end.saturating_sub(committed.unwrap_or(0)),
                })
                .collect(),
            ..Snapshot::default()
        }
    }
}

/// The bytes ingest's stream sends for these snapshots: the same events
/// the stream handler makes, through axum's SSE response.
fn sse_bytes(snapshots: &[Snapshot]) -> Vec<u8> {
    let events: Vec<Result<_, std::convert::Infallible>> = snapshots.iter().map(|s| Ok(snapshot_event(s))).collect();
    let response = Sse::new(futures::stream::iter(events)).into_response();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let body = runtime.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("body");
    body.to_vec()
}

/// `static/dashboard.js`'s `pump`, line for line: blocks split on a blank
/// line, `event:` names the event, `data:` lines (one leading space taken
/// off) are joined with new lines.
#[derive(Default)]
struct DashboardReader {
    buffer: String,
}

impl DashboardReader {
    fn read_all(mut self, chunks: &[&str]) -> Vec<(String, String)> {
        let mut events = Vec::new();
        for chunk in chunks {
            self.buffer.push_str(chunk);
            while let Some(at) = self.buffer.find("\n\n") {
                let block = self.buffer[..at].to_string();
                self.buffer = self.buffer[at + 2..].to_string();
                let mut name = "message".to_string();
                let mut data = Vec::new();
                for line in block.split('\n') {
                    if let Some(rest) = line.strip_prefix("event:") {
                        name = rest.trim().to_string();
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
                    }
                }
                if !data.is_empty() {
                    events.push((name, data.join("\n")));
                }
            }
        }
        events
    }
}
