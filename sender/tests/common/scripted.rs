//! A scripted gift provider: a real HTTP server on 127.0.0.1:0 that keeps an
//! honest ledger (one gift per idempotency key, as the contract says) and
//! answers, per key and per request, whatever the test scripted — the
//! answers a third party gives that its contract never promised.
//!
//! Not a mock of our client: the sender talks HTTP to it, through its own
//! client, timeouts and size cap. Every hostile answer to a `POST` that a
//! provider could give after issuing does issue the gift underneath (the
//! worst case for us: the gift exists and we were not told).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Which call a scripted answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Issue,
    Lookup,
}

/// One answer of the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// What the contract says (the ledger's answer).
    Honest,
    /// 201 (or 200 on a lookup) carrying another key's gift.
    OtherKeysGift,
    /// The previous body this provider sent, to whichever request it was.
    ReplayPrevious,
    /// 201 (200 on a lookup) whose body is not JSON.
    MalformedJson,
    /// 200 with the gift, but its status is this one (not `ISSUED`).
    Status(&'static str),
    /// 500 with an HTML page (a proxy's error page).
    Html500,
    /// 404 with no body at all.
    Bare404,
    /// 201 with the gift padded past the sender's answer cap.
    Oversized,
    /// The honest answer, a few bytes at a time, slower than the sender's timeout.
    Dribble,
    /// 429 with this `Retry-After` (seconds); nothing issued.
    RateLimited { retry_after_secs: u64 },
    /// The gift issued, then the connection broken before the answer completes.
    Reset,
    /// 307 to elsewhere; nothing issued.
    Redirect,
    /// The gift issued, then no answer until long after the sender's timeout.
    Hold,
    /// 503, decided before issuing: nothing issued.
    Unavailable,
}

impl Answer {
    /// Whether a `POST` answered this way issued the gift underneath.
    fn issues(&self) -> bool {
        !matches!(self, Answer::RateLimited { .. } | Answer::Redirect | Answer::Unavailable | Answer::Bare404)
    }
}

#[derive(Default)]
struct Ledger {
    /// key → the gift, as the provider stores it.
    gifts: HashMap<String, Value>,
    /// Answers still to give, per key and call, in order.
    queued: HashMap<(String, Call), VecDeque<Answer>>,
    /// Answers given to every call of a key until [`ScriptedProvider::heal`].
    sticky: HashMap<(String, Call), Answer>,
    /// Calls received, per key.
    calls: HashMap<(String, Call), usize>,
    /// The last body sent (for [`Answer::ReplayPrevious`]).
    previous: Option<Bytes>,
    /// Another key's gift, for [`Answer::OtherKeysGift`].
    foreign: Option<Value>,
}

type Shared = Arc<(Mutex<Ledger>, CancellationToken)>;

pub struct ScriptedProvider {
    pub url: String,
    shared: Shared,
}

impl ScriptedProvider {
    pub async fn start() -> Self {
        let shared: Shared = Arc::new((Mutex::new(Ledger::default()), CancellationToken::new()));
        let router = Router::new()
            .route("/v1/gifts", post(issue))
            .route("/v1/gifts/{key}", get(lookup))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let stop = shared.1.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
        Self { url, shared }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next calls of `call` for `key` get `answers`, in order; then the honest one.
    pub fn queue(&self, key: &str, call: Call, answers: impl IntoIterator<Item = Answer>) {
        self.ledger().queued.entry((key.to_string(), call)).or_default().extend(answers);
    }

    /// Every call of `call` for `key` gets `answer` until [`heal`](Self::heal).
    pub fn always(&self, key: &str, call: Call, answer: Answer) {
        self.ledger().sticky.insert((key.to_string(), call), answer);
    }

    /// Ends every script of `key`: honest answers from now on.
    pub fn heal(&self, key: &str) {
        let mut ledger = self.ledger();
        ledger.sticky.retain(|(k, _), _| k != key);
        ledger.queued.retain(|(k, _), _| k != key);
    }

    /// The gift id the provider holds for `key`.
    pub fn gift_id(&self, key: &str) -> Option<String> {
        self.ledger().gifts.get(key).and_then(|g| g["gift_id"].as_str().map(str::to_string))
    }

    /// How many gifts exist.
    pub fn gift_count(&self) -> usize {
        self.ledger().gifts.len()
    }

    /// Calls of `call` received for `key`.
    pub fn calls(&self, key: &str, call: Call) -> usize {
        self.ledger().calls.get(&(key.to_string(), call)).copied().unwrap_or(0)
    }

    pub fn stop(&self) {
        self.shared.1.cancel();
    }
}

impl Drop for ScriptedProvider {
    fn drop(&mut self) {
        self.shared.1.cancel();
    }
}

fn gift_of(request: &Value) -> Value {
    json!({
        "gift_id": format!("gft_{}", uuid::Uuid::now_v7().simple()),
        "idempotency_key": request["idempotency_key"],
        "phone": request["phone"],
        "product": request["product"],
        "amount": request["amount"],
        "status": "ISSUED",
        "issued_at": "2025-01-01T00:00:00Z",
    })
}

/// The scripted answer for this call (and counts it).
fn next_answer(ledger: &mut Ledger, key: &str, call: Call) -> Answer {
    *ledger.calls.entry((key.to_string(), call)).or_default() += 1;
    if let Some(answer) = ledger.sticky.get(&(key.to_string(), call)) {
        return answer.clone();
    }
    ledger.queued.get_mut(&(key.to_string(), call)).and_then(VecDeque::pop_front).unwrap_or(Answer::Honest)
}

/// A gift of a key nobody asked for (what a mixed-up cache would serve).
fn foreign(ledger: &mut Ledger, like: &Value) -> Value {
    ledger
        .foreign
        .get_or_insert_with(|| {
            let mut other = gift_of(like);
            other["idempotency_key"] = json!(uuid::Uuid::new_v4().to_string());
            other["phone"] = json!("010-9999-0000");
            other
        })
        .clone()
}

async fn issue(State(shared): State<Shared>, Json(request): Json<Value>) -> Response {
    let key = request["idempotency_key"].as_str().unwrap_or_default().to_string();
    let (answer, status, gift, previous, other) = {
        let mut ledger = shared.0.lock().unwrap_or_else(|p| p.into_inner());
        let answer = next_answer(&mut ledger, &key, Call::Issue);
        let (status, gift) = if answer.issues() {
            match ledger.gifts.get(&key) {
                Some(existing) => {
                    let same = ["phone", "product", "amount"].iter().all(|f| existing[f] == request[f]);
                    (if same { StatusCode::OK } else { StatusCode::CONFLICT }, existing.clone())
                }
                None => {
                    let gift = gift_of(&request);
                    ledger.gifts.insert(key.clone(), gift.clone());
                    (StatusCode::CREATED, gift)
                }
            }
        } else {
            (StatusCode::CREATED, Value::Null)
        };
        let other = foreign(&mut ledger, &request);
        (answer, status, gift, ledger.previous.clone(), other)
    };
    let honest = if status == StatusCode::CONFLICT {
        (StatusCode::CONFLICT, json!({"error": "idempotency_conflict"}))
    } else {
        (status, gift.clone())
    };
    respond(&shared, answer, honest, gift, previous, other, StatusCode::CREATED).await
}

async fn lookup(State(shared): State<Shared>, Path(key): Path<String>) -> Response {
    let (answer, gift, previous, other) = {
        let mut ledger = shared.0.lock().unwrap_or_else(|p| p.into_inner());
        let answer = next_answer(&mut ledger, &key, Call::Lookup);
        let gift = ledger.gifts.get(&key).cloned().unwrap_or(Value::Null);
        let like = if gift.is_null() { json!({"idempotency_key": key}) } else { gift.clone() };
        let other = foreign(&mut ledger, &like);
        (answer, gift, ledger.previous.clone(), other)
    };
    let honest = if gift.is_null() {
        (StatusCode::NOT_FOUND, json!({"error": "not_found"}))
    } else {
        (StatusCode::OK, gift.clone())
    };
    respond(&shared, answer, honest, gift, previous, other, StatusCode::OK).await
}

/// The answer's response. `ours` is the gift under the key (null when none).
async fn respond(
    shared: &Shared,
    answer: Answer,
    honest: (StatusCode, Value),
    ours: Value,
    previous: Option<Bytes>,
    other: Value,
    success: StatusCode,
) -> Response {
    let json_body = |status: StatusCode, body: Bytes| {
        remember(shared, &body);
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let to_bytes = |value: &Value| Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    // Where our gift does not exist, a "gift" answer describes the one the honest path would have.
    let ours_or_other = if ours.is_null() { other.clone() } else { ours.clone() };
    match answer {
        Answer::Honest => json_body(honest.0, to_bytes(&honest.1)),
        Answer::OtherKeysGift => json_body(success, to_bytes(&other)),
        Answer::ReplayPrevious => json_body(StatusCode::OK, previous.unwrap_or_else(|| to_bytes(&other))),
        Answer::MalformedJson => json_body(success, Bytes::from_static(b"{\"gift_id\": \"gft_")),
        Answer::Status(status) => {
            let mut gift = ours_or_other;
            gift["status"] = json!(status);
            json_body(StatusCode::OK, to_bytes(&gift))
        }
        Answer::Html500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>500 Internal Server Error</h1></body></html>",
        )
            .into_response(),
        Answer::Bare404 => StatusCode::NOT_FOUND.into_response(),
        Answer::Oversized => {
            let mut gift = ours_or_other;
            gift["padding"] = json!("x".repeat(256 * 1024));
            json_body(success, to_bytes(&gift))
        }
        Answer::Dribble => {
            let body = to_bytes(&honest.1);
            let chunks: Vec<Bytes> = body.chunks(4).map(Bytes::copy_from_slice).collect();
            let stream = futures::stream::unfold(chunks.into_iter(), |mut rest| async move {
                let chunk = rest.next()?;
                tokio::time::sleep(Duration::from_millis(150)).await;
                Some((Ok::<_, std::io::Error>(chunk), rest))
            });
            (honest.0, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
        }
        Answer::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs.to_string())],
            Json(json!({"error": "rate_limited"})),
        )
            .into_response(),
        Answer::Reset => {
            // The head may go out; the body breaks: the exchange never completes.
            let stream = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted reset"))
            });
            (success, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
        }
        Answer::Redirect => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "http://127.0.0.1:9/v1/gifts")]).into_response()
        }
        Answer::Hold => {
            tokio::select! {
                _ = shared.1.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            json_body(honest.0, to_bytes(&honest.1))
        }
        Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "unavailable"}))).into_response(),
    }
}

fn remember(shared: &Shared, body: &Bytes) {
    shared.0.lock().unwrap_or_else(|p| p.into_inner()).previous = Some(body.clone());
}
