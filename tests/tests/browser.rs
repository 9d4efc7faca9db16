//! The survey page and the operations dashboard in a real browser: Debian's
//! Chromium driven by its chromedriver (installed by `scripts/lib.sh`
//! `ensure_browser`), headless, against the whole pipeline running in this
//! process on the real stack (the e2e harness).
//!
//! - before sign-in the page shows the event (name, gift, units left, the
//!   countdown); the member's token arrives in the URL fragment or from the
//!   host app (`postMessage`), never typed;
//! - a member answers with the controls (a 1–5 scale, yes/no; by keyboard
//!   too), submits and sees won, then sent, with their place in line;
//! - axe-core audits the page (WCAG 2.x A/AA and best practices) in English
//!   and in Korean, before sign-in, with the questions and with a result;
//! - the same member again sees "already entered" with the entry's status;
//! - a non-buyer sees "not eligible"; after the sell-out a member sees "sold out";
//! - past the waiting room's rate a member sees their place in line, and the
//!   page enters by itself when the turn comes;
//! - during a burst the dashboard's figures move, and at the end they agree
//!   with the dashboard API and with the database.
//!
//! Screenshots go to `target/browser-artifacts/` (docs/img/ holds copies).
//! axe-core is fetched once from the npm registry (pinned version, checked
//! against its SHA-512) into `target/axe-core-<version>/`.

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

use helpers::TestEnv;
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

/// Whether the radio button or checkbox at `css` is checked (the property:
/// WebDriver's attribute read does not follow it).
async fn checked(client: &Client, css: &str) -> bool {
    let script = "var e = document.querySelector(arguments[0]); return !!(e && e.checked);";
    client.execute(script, vec![json!(css)]).await.ok().and_then(|v| v.as_bool()).unwrap_or(false)
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

/// Opens the page of `event_id` signed in as `member`, as the shop's login
/// sends a member there: the token in the URL fragment.
async fn open_signed_in(client: &Client, base_url: &str, event_id: &str, member: &str) {
    let token = member_token(member);
    client.goto(&format!("{base_url}/?event={event_id}")).await.expect("the page loads");
    // A fresh tab state: the token is kept per tab (sessionStorage).
    client.execute("sessionStorage.clear(); return true;", vec![]).await.expect("storage cleared");
    client.goto(&format!("{base_url}/?event={event_id}#token={token}")).await.expect("the page loads");
    wait_questions(client).await;
    let url = client.current_url().await.expect("url");
    assert_eq!(url.fragment(), None, "the token is taken out of the address bar: {url}");
}

/// Waits for the two questions, each a radio group named by its legend.
async fn wait_questions(client: &Client) {
    testkit::wait_for("the questions", DEADLINE, || async {
        client.find_all(Locator::Css("#questions fieldset")).await.map(|sets| sets.len() == 2).unwrap_or(false)
    })
    .await;
    for i in 0..2 {
        assert!(!text(client, &format!("#q-{i} legend")).await.is_empty(), "question {i} has a legend");
    }
    let scale = client.find_all(Locator::Css("#q-0 input[type=radio]")).await.expect("scale").len();
    let yes_no = client.find_all(Locator::Css("#q-1 input[type=radio]")).await.expect("yes/no").len();
    assert_eq!((scale, yes_no), (5, 2), "a 1–5 scale and yes/no");
}

/// Signs `member` in on the page of `event_id`, answers and submits.
async fn submit_through_page(client: &Client, base_url: &str, event_id: &str, member: &str) {
    open_signed_in(client, base_url, event_id, member).await;
    // A tap lands on the (transparent) radio button over its label.
    for choice in ["q-0-5", "q-1-yes"] {
        client.find(Locator::Css(&format!("#{choice}"))).await.expect("a choice").click().await.expect("clicked");
        assert!(checked(client, &format!("#{choice}")).await, "{choice} chosen");
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

/// axe-core from the npm registry: this version, this tarball's SHA-512
/// (the registry's `dist.integrity`, in hex). MPL-2.0; fetched, not vendored.
const AXE_VERSION: &str = "4.14.1";
const AXE_SHA512: &str = "1477dafa598d8d065f273d6af302aa203c02e83131707b7fa648cd41bd3d6b734f8c22a0dab86ee6a6f64b8afbe804b214d36db85a2826965edfb3a0b9d546b5";

/// `axe.min.js`, from the cache under the target dir or the npm registry.
async fn axe_source() -> String {
    let dir = artifacts().join(format!("../axe-core-{AXE_VERSION}"));
    let script = dir.join("axe.min.js");
    if let Ok(source) = std::fs::read_to_string(&script) {
        return source;
    }
    std::fs::create_dir_all(&dir).expect("axe-core cache folder");
    let url = format!("https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz");
    let tarball = reqwest::get(&url).await.and_then(|r| r.error_for_status()).unwrap_or_else(|e| panic!("{url}: {e}"));
    let bytes = tarball.bytes().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let archive = dir.join("axe-core.tgz");
    std::fs::write(&archive, &bytes).expect("tarball written");
    let sum = Command::new("sha512sum").arg(&archive).output().expect("sha512sum runs");
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert!(sum.starts_with(AXE_SHA512), "{url} is not the pinned axe-core: sha512 {sum}");
    let unpacked = Command::new("tar").arg("-xzOf").arg(&archive).arg("package/axe.min.js").output().expect("tar runs");
    assert!(unpacked.status.success() && !unpacked.stdout.is_empty(), "axe.min.js unpacked from {url}");
    let partial = dir.join("axe.min.js.part");
    std::fs::write(&partial, &unpacked.stdout).expect("axe.min.js written");
    std::fs::rename(&partial, &script).expect("axe.min.js in place");
    String::from_utf8(unpacked.stdout).expect("axe.min.js is UTF-8")
}

/// Runs axe-core on the page as it is (WCAG 2.0–2.2 A and AA, and axe's
/// best practices) and fails with every violation found, named by rule and
/// element. `what` names the page's state in the message.
async fn accessibility_audit(client: &Client, what: &str) {
    let source = axe_source().await;
    // Injected through WebDriver, which the page's CSP (script-src 'self') does not stop.
    client.execute(&format!("{source}\n;return typeof axe;"), vec![]).await.expect("axe-core injected");
    let violations = client
        .execute_async(
            "var done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
                                 resultTypes: ['violations'] })
               .then(function (r) {
                 done(r.violations.map(function (v) {
                   return { rule: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(function (n) { return n.target.join(' ') + ': ' + n.failureSummary; }) };
                 }));
               }, function (e) { done([{ rule: 'axe-error', help: String(e) }]); });",
            vec![],
        )
        .await
        .expect("axe ran");
    let violations = violations.as_array().cloned().unwrap_or_default();
    if !violations.is_empty() {
        screenshot(client, &format!("failed-a11y-{}", what.replace(' ', "-"))).await;
    }
    assert!(
        violations.is_empty(),
        "axe-core found {} violation(s) on the page {what}:\n{}",
        violations.len(),
        serde_json::to_string_pretty(&violations).unwrap_or_default()
    );
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
    let pipeline = Pipeline::start(&env, topology).await.expect("pipeline started");
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
    assert!(
        text(&phone, "#status").await.contains("#1 in line"),
        "the member's place: {}",
        text(&phone, "#status").await
    );
    // The 202's signed receipt, when ingest signs one, is the member's to keep.
    if attr(&phone, "#receipt-box", "hidden").await.is_none() {
        phone.find(Locator::Css("#receipt-box summary")).await.expect("receipt").click().await.expect("opened");
        assert!(text(&phone, "#receipt").await.contains(&entry_id), "the receipt names the entry");
    }
    accessibility_audit(&phone, "with a gift sent (English)").await;
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
    let db = platform::db::pool(&env.admin_database()).expect("pool");
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

    // 5. After the sell-out: the page says so before the member answers
    // anything, and there is nothing to submit.
    open_signed_in(&phone, &ingest.base_url, &event_id, &kept[0]).await;
    wait_status(&phone, "refused", Some("sold_out"), "sold out").await;
    assert_eq!(text(&phone, "#units-left").await, "0");
    let submit = phone.find(Locator::Css("#submit")).await.expect("submit");
    assert!(!submit.is_enabled().await.expect("enabled?"), "nothing to submit after the sell-out");
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
    let mut new = firstcome_lab::pipeline::new_event(&crowd, 10, 0);
    new.name = "opening soon".into();
    new.open_at = now + chrono::Duration::seconds(20);
    firstcome_lab::pipeline::create_event(&env, &new).await.expect("event created");
    let shutdown = CancellationToken::new();
    let ingest = start_ingest(&env, &shutdown, Some((5, 5))).await;
    let driver = Driver::start().await;
    let phone = driver.browser(390, 844).await;
    let member = &crowd.eligible[0];

    // Before sign-in: the event as a member would want to see it, and no
    // box to paste a token into.
    phone.goto(&format!("{}/?event={}", ingest.base_url, new.event_id)).await.expect("the page loads");
    testkit::wait_for("the event and its countdown before sign-in", DEADLINE, || async {
        attr(&phone, "#event-state", "data-status").await.as_deref() == Some("upcoming")
            && text(&phone, "#countdown").await.contains(':')
    })
    .await;
    assert_eq!(text(&phone, "#event-name").await, "opening soon");
    assert!(text(&phone, "#gift").await.contains("coffee gifticon"), "{}", text(&phone, "#gift").await);
    assert_eq!(text(&phone, "#units-left").await, "10");
    assert!(phone.find(Locator::Css("#signin")).await.expect("sign-in note").is_displayed().await.expect("shown"));
    assert!(phone.find(Locator::Css("textarea, #token")).await.is_err(), "no token to paste");
    accessibility_audit(&phone, "before sign-in (English)").await;
    screenshot(&phone, "page-before-signin").await;

    // The host app posts the member's token into the page.
    phone
        .execute(
            "window.postMessage({ type: 'firstcome:token', token: arguments[0] }, location.origin); return true;",
            vec![json!(member_token(member))],
        )
        .await
        .expect("token posted");
    wait_questions(&phone).await;
    assert!(text(&phone, "#who").await.contains(member.as_str()), "{}", text(&phone, "#who").await);
    accessibility_audit(&phone, "with the questions (English)").await;

    // Korean, by the toggle (the default follows Accept-Language).
    phone.find(Locator::Css("#lang-toggle")).await.expect("toggle").click().await.expect("clicked");
    assert_eq!(attr(&phone, "html", "lang").await.as_deref(), Some("ko"));
    assert!(text(&phone, "#event-state").await.contains("시작"), "{}", text(&phone, "#event-state").await);
    assert!(text(&phone, "#q-1").await.contains("아니오"), "{}", text(&phone, "#q-1").await);
    accessibility_audit(&phone, "with the questions (Korean)").await;
    screenshot(&phone, "page-questions-ko").await;

    // Keyboard only: arrows move along the scale, space picks yes, Enter on
    // the focused button submits.
    let key = |k: fantoccini::key::Key| char::from(k).to_string();
    let right = key(fantoccini::key::Key::Right);
    phone
        .find(Locator::Css("#q-0-1"))
        .await
        .expect("the scale")
        .send_keys(&format!("{right}{right}{right}"))
        .await
        .expect("arrows");
    let chosen = phone
        .execute(
            "var c = document.querySelector('#q-0 input:checked'); return [c ? c.value : null, document.activeElement.id];",
            vec![],
        )
        .await
        .expect("chosen");
    assert_eq!(chosen, json!(["4", "q-0-4"]), "4 chosen by arrows, and focused");
    phone.find(Locator::Css("#q-1-yes")).await.expect("yes").send_keys(" ").await.expect("space");
    assert!(checked(&phone, "#q-1-yes").await, "yes chosen by space");
    phone
        .find(Locator::Css("#submit"))
        .await
        .expect("submit")
        .send_keys(&key(fantoccini::key::Key::Enter))
        .await
        .expect("enter");
    wait_status(&phone, "waiting", Some("pre_queue"), "pre-queue").await;
    assert!(text(&phone, "#status").await.contains("사전 대기열"), "{}", text(&phone, "#status").await);
    screenshot(&phone, "page-pre-queue-ko").await;

    // At the opening the page asks again by itself and is let through.
    wait_status(&phone, "pending", Some("accepted"), "entered at the opening").await;
    assert!(text(&phone, "#status").await.contains("접수"), "{}", text(&phone, "#status").await);
    accessibility_audit(&phone, "with the entry received (Korean)").await;
    let _ = phone.close().await;
    shutdown.cancel();
}
