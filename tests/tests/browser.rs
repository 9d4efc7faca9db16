//! The survey page and the operations dashboard in a real browser: Debian's
//! Chromium driven by its chromedriver (installed by `scripts/lib.sh`
//! `ensure_browser`), headless, against the whole pipeline running in this
//! process on the real stack (the e2e harness).
//!
//! - a member signs in with a token, answers, submits and sees won, then sent;
//! - the same member again sees "already entered" with the entry's status;
//! - a non-buyer sees "not eligible"; after the sell-out a member sees "sold out";
//! - past the waiting room's rate a member sees their place in line, and the
//!   page enters by itself when the turn comes;
//! - during a burst the dashboard's figures move, and at the end they agree
//!   with the dashboard API and with the database.
//!
//! Screenshots go to `target/browser-artifacts/` (docs/img/ holds copies).

#[path = "e2e/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "e2e/pipeline_harness.rs"]
#[allow(dead_code)]
mod pipeline_harness;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};
use helpers::{CliEnv, TestEnv};
use pipeline_harness::{open_event, seed_crowd, Crowd, Pipeline, Topology};

/// Every wait in this file ends by itself.
const DEADLINE: Duration = Duration::from_secs(120);
const OPERATOR: &str = ingest::settings::DEV_OPERATOR_TOKEN;

/// Debian's chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = testkit::unused_port();
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        // Its own process group: the Chromium it starts is in it too, so a
        // failing test (no session closed) still leaves no browser behind.
        let child = Command::new(&binary)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts (bash scripts/lib.sh ensure_browser installs it): {e}"));
        let url = format!("http://127.0.0.1:{port}");
        testkit::wait_for("chromedriver listening", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { child, url }
    }

    /// A headless Chromium session (as root on CI: no sandbox); below 600
    /// px wide it emulates a phone (touch, device width).
    async fn browser(&self, width: u32, height: u32) -> Client {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--lang=en-US", format!("--window-size={width},{height}")],
            }),
        );
        if width < 600 {
            caps["goog:chromeOptions"]["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2, "touch": true } });
        }
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(caps).connect(&self.url).await.expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group (chromedriver and its browsers), by its id.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<target dir>/browser-artifacts` (`CARGO_TARGET_DIR` when set).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact folder");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join(format!("{name}.png")), png).expect("screenshot written");
}

/// The attribute `attr` of the first element at `css`, if both exist.
async fn attr(client: &Client, css: &str, attr: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.attr(attr).await.ok().flatten()
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `#status` has `data-state` = `state` (and `data-code` = `code`
/// when given); panics with what the page showed.
async fn wait_status(client: &Client, state: &str, code: Option<&str>, name: &str) {
    let ok = testkit::wait_until(DEADLINE, || async {
        attr(client, "#status", "data-state").await.as_deref() == Some(state)
            && (code.is_none() || attr(client, "#status", "data-code").await.as_deref() == code)
    })
    .await;
    if !ok {
        screenshot(client, &format!("failed-{name}")).await;
    }
    assert!(
        ok,
        "{name}: the page never showed {state}/{code:?}; it shows {:?}/{:?}: {:?}",
        attr(client, "#status", "data-state").await,
        attr(client, "#status", "data-code").await,
        text(client, "#status").await
    );
}

/// Signs `member` in on the page of `event_id`, answers and submits.
async fn submit_through_page(client: &Client, base_url: &str, event_id: &str, member: &str) {
    let token = member_token(member);
    client.goto(&format!("{base_url}/?event={event_id}")).await.expect("the page loads");
    // A fresh tab state: the token is kept per tab (sessionStorage).
    client.execute("sessionStorage.clear(); return true;", vec![]).await.expect("storage cleared");
    client.goto(&format!("{base_url}/?event={event_id}")).await.expect("the page loads");
    client.find(Locator::Css("#token")).await.expect("token field").send_keys(&token).await.expect("typed");
    client.find(Locator::Css("#signin-button")).await.expect("sign in").click().await.expect("clicked");
    testkit::wait_for("the questions", DEADLINE, || async {
        client.find_all(Locator::Css("#questions input")).await.map(|inputs| inputs.len() == 2).unwrap_or(false)
    })
    .await;
    // Labels name every field (accessibility: a label per input).
    for (i, answer) in ["5", "yes"].iter().enumerate() {
        let label = text(client, &format!("label[for=q-{i}]")).await;
        assert!(!label.is_empty(), "question {i} has a label");
        client
            .find(Locator::Css(&format!("#q-{i}")))
            .await
            .expect("answer field")
            .send_keys(answer)
            .await
            .expect("typed");
    }
    // Every state the status line takes, in order (the test reads it afterwards).
    client
        .execute(
            "var el = document.getElementById('status'); window.__states = [];
             new MutationObserver(function () {
               var s = el.getAttribute('data-state');
               if (window.__states[window.__states.length - 1] !== s) window.__states.push(s);
             }).observe(el, { attributes: true, attributeFilter: ['data-state'] });
             return true;",
            vec![],
        )
        .await
        .expect("observer installed");
    client.find(Locator::Css("#submit")).await.expect("submit").click().await.expect("clicked");
}

fn member_token(member: &str) -> String {
    let secret = ingest::Settings::default().auth.token_secret;
    ingest::mint(&secret, member, Duration::from_secs(600)).expect("token")
}

/// An ingest of the test's own (the harness starts none): its API and ops URLs.
struct Ingest {
    base_url: String,
    ops_url: String,
}

async fn start_ingest(env: &TestEnv, shutdown: &CancellationToken, room: Option<(u32, u32)>) -> Ingest {
    let mut settings = pipeline_harness::ingest_settings(env);
    if let Some((rate_per_sec, burst)) = room {
        settings.waiting_room.enabled = true;
        settings.waiting_room.rate_per_sec = rate_per_sec;
        settings.waiting_room.burst = burst;
    }
    // The burst comes from one test client: its members, not its address, are limited.
    settings.limits.member_requests_per_sec = 50;
    settings.limits.member_burst = 50;
    let app = ingest::Application::build(settings).await.expect("ingest builds");
    let urls = Ingest { base_url: app.base_url(), ops_url: app.ops_url() };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = app.run_until_stopped(stop).await {
            panic!("ingest stopped with an error: {error}");
        }
    });
    urls
}

/// The dashboard API's snapshot of `event_id`.
async fn api_snapshot(http: &reqwest::Client, ingest: &Ingest, event_id: &str) -> Value {
    http.get(format!("{}/ops/api/events/{event_id}", ingest.ops_url))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("snapshot")
        .json()
        .await
        .expect("snapshot JSON")
}

/// A figure of a dashboard table row (`table` id, the row's first cell).
async fn row(client: &Client, table: &str, key: &str, column: usize) -> Option<String> {
    let cell =
        client.find(Locator::Css(&format!("#{table} td[data-key='{key}'] ~ td:nth-child({column})"))).await.ok()?;
    cell.text().await.ok()
}

#[tokio::test]
async fn a_member_and_an_operator_see_the_event_through_the_browser() {
    testkit::init_logs("browser-tests");
    let env = TestEnv::new().await;
    let crowd: Crowd = seed_crowd(&env, 30, 1).await;
    // 6 units, 1 held back: 5 for sale.
    let event_id = open_event(&env, &crowd, 6, 1).await;
    // A provider slow enough (2.5 s a gift) for the page to see "won" before "sent".
    let faults = provider_sim::Faults { latency_ms: 2_500, ..Default::default() };
    let topology = Topology { ingest_instances: 0, faults, provider_timeout_ms: 6_000, ..Default::default() };
    let pipeline = Pipeline::start(&env, topology).await;
    let shutdown = CancellationToken::new();
    let ingest = start_ingest(&env, &shutdown, None).await;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let driver = Driver::start().await;

    // 1. A member at phone width: won, then sent.
    let phone = driver.browser(390, 844).await;
    let first = &crowd.eligible[0];
    submit_through_page(&phone, &ingest.base_url, &event_id, first).await;
    wait_status(&phone, "sent", Some("accepted"), "sent").await;
    let states = phone.execute("return window.__states || [];", vec![]).await.expect("states");
    let states: Vec<String> = serde_json::from_value(states).expect("a list");
    let order: Vec<&str> =
        states.iter().map(String::as_str).filter(|s| ["pending", "won", "sent"].contains(s)).collect();
    assert_eq!(order, ["pending", "won", "sent"], "the page showed pending, won, then sent: {states:?}");
    let entry = text(&phone, "#entry").await;
    let entry_id = entry.rsplit(' ').next().unwrap_or_default().to_string();
    assert!(uuid::Uuid::parse_str(&entry_id).is_ok(), "the page names the entry: {entry}");
    let status: Value = http
        .get(format!("{}/api/entries/{entry_id}", ingest.base_url))
        .bearer_auth(member_token(first))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "sent", "the API agrees with the page: {status}");
    screenshot(&phone, "page-sent").await;

    // 2. The same member again: already entered, with the entry's status.
    submit_through_page(&phone, &ingest.base_url, &event_id, first).await;
    wait_status(&phone, "sent", Some("already_entered"), "already entered").await;
    assert!(text(&phone, "#status").await.contains("already entered"));
    screenshot(&phone, "page-already-entered").await;

    // 3. A non-buyer: not eligible.
    submit_through_page(&phone, &ingest.base_url, &event_id, &crowd.ineligible[0]).await;
    wait_status(&phone, "refused", Some("not_eligible"), "not eligible").await;
    screenshot(&phone, "page-not-eligible").await;

    // 4. The operator's dashboard, live, during a burst of the other members.
    let desk = driver.browser(1280, 1000).await;
    desk.goto(&format!("{}/dashboard?event={event_id}", ingest.ops_url)).await.expect("the dashboard loads");
    desk.find(Locator::Css("#op-token")).await.expect("token field").send_keys(OPERATOR).await.expect("typed");
    desk.find(Locator::Css("#connect")).await.expect("connect").click().await.expect("clicked");
    testkit::wait_for("the dashboard live with the first winner's unit gone", DEADLINE, || async {
        text(&desk, "#d-stock").await == "4"
    })
    .await;
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (desk, seen, watching) = (desk.clone(), seen.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                let figures = (text(&desk, "#d-stock").await, text(&desk, "#d-decided").await);
                {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&figures) {
                        seen.push(figures);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Everyone else but one (kept for the sold-out check), at once.
    let (burst, kept) = crowd.eligible[1..].split_at(crowd.eligible.len() - 2);
    let answers = futures::future::join_all(burst.iter().map(|member| {
        http.post(format!("{}/api/events/{event_id}/entries", ingest.base_url))
            .bearer_auth(member_token(member))
            .json(&json!({ "answers": { "satisfaction": "4", "recommend": "yes" } }))
            .send()
    }))
    .await;
    let mut accepted = 0;
    let mut sold_out = 0;
    for answer in answers {
        match answer.expect("answered").status().as_u16() {
            202 => accepted += 1,
            410 => sold_out += 1,
            other => panic!("a burst entry answered {other}"),
        }
    }
    assert!(accepted >= 4, "at least the units left were accepted: {accepted}");

    // The pipeline drains: every unit for sale sent, every entry decided.
    let db = platform::db::pool(&env.cli().database).expect("pool");
    testkit::wait_for("every gift sent and every entry decided", DEADLINE, || async {
        let client = db.get().await.expect("db");
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM gift_dispatches WHERE event_id = $1 AND status = 'SENT'),
                        (SELECT count(*) FROM event_entries WHERE event_id = $1 AND status IN ('pending', 'won'))",
                &[&event_id],
            )
            .await
            .expect("counts");
        row.get::<_, i64>(0) == 5 && row.get::<_, i64>(1) == 0
    })
    .await;
    testkit::wait_for("the dashboard shows the sell-out and the gifts", DEADLINE, || async {
        text(&desk, "#d-stock").await == "0" && text(&desk, "#d-sent").await == "5"
    })
    .await;
    watching.store(false, Ordering::SeqCst);
    watcher.await.expect("watcher");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "the figures moved during the burst: {seen:?}");
    assert_eq!(seen.first().map(|s| s.0.as_str()), Some("4"));
    assert_eq!(seen.last().map(|s| s.0.as_str()), Some("0"));

    // The page, the API and the database tell the same story.
    let snapshot = api_snapshot(&http, &ingest, &event_id).await;
    let client = db.get().await.expect("db");
    let won: i64 = client
        .query_one("SELECT count(*) FROM event_entries WHERE event_id = $1 AND outcome = 'WON'", &[&event_id])
        .await
        .unwrap()
        .get(0);
    let lost: i64 = client
        .query_one("SELECT count(*) FROM event_entries WHERE event_id = $1 AND status = 'lost'", &[&event_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(won, 5);
    assert_eq!(snapshot["decisions"]["WON"], won, "{snapshot}");
    assert_eq!(snapshot["entries"]["lost"].as_i64().unwrap_or(0), lost);
    assert_eq!(snapshot["dispatch"]["sent"], 5);
    assert_eq!(snapshot["stock_remaining"], 0);
    assert_eq!(snapshot["answers"]["accepted"], accepted + 1, "the first member and the burst's 202s");
    assert_eq!(snapshot["answers"]["sold_out"].as_i64().unwrap_or(0), sold_out);
    testkit::wait_for("the dashboard's tables agree with the API", DEADLINE, || async {
        row(&desk, "t-decisions", "WON", 2).await.as_deref() == Some("5")
            && row(&desk, "t-dispatch", "sent", 2).await.as_deref() == Some("5")
            && row(&desk, "t-answers", "accepted", 3).await == Some((accepted + 1).to_string())
    })
    .await;
    let lag_rows = desk.find_all(Locator::Css("#t-lag tbody tr")).await.expect("lag rows").len();
    assert_eq!(lag_rows, snapshot["lag"].as_array().unwrap().len(), "a lag row per group and partition");
    screenshot(&desk, "dashboard").await;

    // 5. After the sell-out: sold out.
    submit_through_page(&phone, &ingest.base_url, &event_id, &kept[0]).await;
    wait_status(&phone, "refused", Some("sold_out"), "sold out").await;
    screenshot(&phone, "page-sold-out").await;

    // 6. Closing is the operator's (`firstcome event close`, its own
    // credentials): the button says so, and the event is not closed.
    desk.find(Locator::Css("#close-event")).await.expect("close button").click().await.expect("clicked");
    desk.accept_alert().await.expect("confirmed");
    testkit::wait_for("the button names the operator's command", DEADLINE, || async {
        text(&desk, "#close-result").await.contains("firstcome event close")
    })
    .await;
    let status: String = db
        .get()
        .await
        .expect("db")
        .query_one("SELECT status FROM events WHERE event_id = $1", &[&event_id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(status, "closed");

    let _ = phone.close().await;
    let _ = desk.close().await;
    shutdown.cancel();
    pipeline.stop().await;
}

#[tokio::test]
async fn past_the_rate_the_page_shows_the_place_in_line_and_enters_on_its_turn() {
    testkit::init_logs("browser-tests");
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 6, 0).await;
    let event_id = open_event(&env, &crowd, 10, 0).await;
    let shutdown = CancellationToken::new();
    // One member through per second, one at once.
    let ingest = start_ingest(&env, &shutdown, Some((1, 1))).await;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let driver = Driver::start().await;

    // Five members take the first tickets (the first passes, the others wait).
    for member in &crowd.eligible[..5] {
        let _ = http
            .post(format!("{}/api/events/{event_id}/entries", ingest.base_url))
            .bearer_auth(member_token(member))
            .json(&json!({ "answers": { "satisfaction": "4", "recommend": "yes" } }))
            .send()
            .await
            .expect("answered");
    }
    let phone = driver.browser(390, 844).await;
    submit_through_page(&phone, &ingest.base_url, &event_id, &crowd.eligible[5]).await;
    wait_status(&phone, "waiting", Some("waiting"), "in line").await;
    let shown = text(&phone, "#status").await;
    assert!(shown.contains("position"), "{shown}");
    screenshot(&phone, "page-waiting").await;
    // Nobody consumes the entries here: the page shows pending once admitted.
    wait_status(&phone, "pending", Some("accepted"), "admitted on its turn").await;
    // Its place in line, never an outcome before the stock stage decided.
    let shown = text(&phone, "#status").await;
    assert!(shown.contains("in line") && shown.contains('#'), "{shown}");
    let _ = phone.close().await;
    shutdown.cancel();
}

#[tokio::test]
async fn before_the_opening_the_page_counts_down_in_korean_and_enters_from_the_pre_queue() {
    testkit::init_logs("browser-tests");
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 3, 0).await;
    let now = chrono::Utc::now();
    let new = NewEvent {
        event_id: format!("ev-{}", uuid::Uuid::new_v4()),
        name: "opening soon".into(),
        product_id: crowd.product.clone(),
        total_stock: 10,
        safety_stock: 0,
        open_at: now + chrono::Duration::seconds(20),
        close_at: now + chrono::Duration::hours(1),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
    };
    event::create(&env.cli(), &new).await.expect("event created");
    let shutdown = CancellationToken::new();
    let ingest = start_ingest(&env, &shutdown, Some((5, 5))).await;
    let driver = Driver::start().await;
    let phone = driver.browser(390, 844).await;
    let member = &crowd.eligible[0];

    phone.goto(&format!("{}/?event={}", ingest.base_url, new.event_id)).await.expect("the page loads");
    phone
        .find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(&member_token(member))
        .await
        .expect("typed");
    phone.find(Locator::Css("#signin-button")).await.expect("sign in").click().await.expect("clicked");
    testkit::wait_for("the countdown", DEADLINE, || async {
        attr(&phone, "#event-state", "data-status").await.as_deref() == Some("upcoming")
            && text(&phone, "#countdown").await.contains(':')
    })
    .await;

    // Korean, by the toggle (the default follows Accept-Language).
    phone.find(Locator::Css("#lang-toggle")).await.expect("toggle").click().await.expect("clicked");
    assert_eq!(attr(&phone, "html", "lang").await.as_deref(), Some("ko"));
    assert!(text(&phone, "#event-state").await.contains("시작"), "{}", text(&phone, "#event-state").await);

    // Keyboard only: type the answers and press Enter in the last field.
    let enter = char::from(fantoccini::key::Key::Enter).to_string();
    phone.find(Locator::Css("#q-0")).await.expect("first answer").send_keys("4").await.expect("typed");
    phone
        .find(Locator::Css("#q-1"))
        .await
        .expect("second answer")
        .send_keys(&format!("yes{enter}"))
        .await
        .expect("typed");
    wait_status(&phone, "waiting", Some("pre_queue"), "pre-queue").await;
    assert!(text(&phone, "#status").await.contains("사전 대기열"), "{}", text(&phone, "#status").await);
    screenshot(&phone, "page-pre-queue-ko").await;

    // At the opening the page asks again by itself and is let through.
    wait_status(&phone, "pending", Some("accepted"), "entered at the opening").await;
    assert!(text(&phone, "#status").await.contains("접수"), "{}", text(&phone, "#status").await);
    let _ = phone.close().await;
    shutdown.cancel();
}
