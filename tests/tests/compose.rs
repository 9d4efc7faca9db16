//! compose/ agrees with the code. There is no container engine
//! here, so the compose file is read, not run:
//!
//! - every `FIRSTCOME_*` variable set on a firstcome service is read by that
//!   service's settings: the variables are handed to the service's own
//!   `Settings` type through `platform::settings::environment()` (the source
//!   `load` uses) and nothing may be left unread (`serde_ignored`); every
//!   `OTEL_*` variable is one `platform::telemetry` reads
//!   (`OTEL_ENV`); no other variable is set on them;
//! - ports: Prometheus scrapes each service's ops port as the service is
//!   configured; the brokers, the registry, PostgreSQL, Redis, the provider
//!   and Jaeger are addressed where compose runs them;
//! - topics and groups: the dashboard's per-topic and per-group queries
//!   name exactly the topics and consumer groups of `schemas::topology`;
//! - every metric a dashboard query names is one the services export (the
//!   names in the code's `metrics::counter!/gauge!/histogram!` calls).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The compose file with its `<<` merge keys applied.
fn compose() -> Value {
    let mut value: Value = serde_norway::from_str(&read("compose/docker-compose.yml")).expect("compose YAML");
    value.apply_merge().expect("merge keys");
    // Merges nested under services (`environment: {<<: *kafka-env}`) too.
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().expect("merge keys");
            if let Some(env) = service.get_mut("environment") {
                env.apply_merge().expect("merge keys");
            }
        }
    }
    value
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v.clone()))
        .collect()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let Some(env) = service.get("environment").and_then(Value::as_mapping) else { return BTreeMap::new() };
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).expect("scalar").trim().to_string(),
            };
            (k.as_str().expect("variable name").to_string(), value)
        })
        .collect()
}

/// The service's command as words (`sh -c "…"` stays one word).
fn command(service: &Value) -> Vec<String> {
    match service.get("command") {
        Some(Value::Sequence(words)) => words.iter().filter_map(|w| w.as_str().map(str::to_string)).collect(),
        Some(Value::String(line)) => line.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Reads `env`'s `FIRSTCOME_*` variables into `S` as `platform::settings::load`
/// would; returns the settings and the keys `S` does not have.
fn read_settings<S: DeserializeOwned>(env: &BTreeMap<String, String>) -> (S, Vec<String>) {
    let firstcome: config::Map<String, String> =
        env.iter().filter(|(k, _)| k.starts_with("FIRSTCOME_")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let config = config::Config::builder()
        .add_source(platform::settings::environment().source(Some(firstcome)))
        .build()
        .expect("settings source");
    let mut unread = Vec::new();
    let settings = serde_ignored::deserialize(config, |path| unread.push(path.to_string()))
        .unwrap_or_else(|e| panic!("settings from {env:?}: {e}"));
    (settings, unread)
}

/// `host:port` of a URL (`scheme://user:pass@host:port/path`).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map(|(_, a)| a).unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':').unwrap_or_else(|| panic!("no port in {url}"));
    (host.to_string(), port.parse().unwrap_or_else(|_| panic!("port of {url}")))
}

/// The container side of a published port (`"8081:8080"` → 8080).
fn container_ports(service: &Value) -> Vec<u16> {
    service
        .get("ports")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str()?.rsplit(':').next()?.parse().ok())
        .collect()
}

/// The firstcome services of the compose file: service name → what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Ingest,
    Stock,
    Recorder,
    Sender,
    ProviderSim,
    Cli,
}

fn binary(service: &Value) -> Option<Binary> {
    let words = command(service);
    let first = words.first()?.as_str();
    match first {
        "ingest" => Some(Binary::Ingest),
        "stock-processor" => Some(Binary::Stock),
        "recorder" => Some(Binary::Recorder),
        "sender" => Some(Binary::Sender),
        "provider-sim" => Some(Binary::ProviderSim),
        "firstcome" => Some(Binary::Cli),
        "sh" if words.iter().any(|w| w.starts_with("firstcome ")) => Some(Binary::Cli),
        _ => None,
    }
}

/// What one firstcome service is configured with, as its settings read it.
struct Configured {
    /// The port `/metrics` is served on (ingest: the ops listener).
    ops_port: Option<u16>,
    /// The API port, if the service has one apart from its ops port.
    api_port: Option<u16>,
    addresses: Vec<(&'static str, String)>,
}

fn configured(binary: Binary, env: &BTreeMap<String, String>) -> (Configured, Vec<String>) {
    use secrecy::ExposeSecret;
    match binary {
        Binary::Ingest => {
            let (s, unread): (ingest::Settings, _) = read_settings(env);
            let addresses = vec![
                ("kafka", s.kafka.brokers.clone()),
                ("registry", s.registry.url.clone()),
                ("database", s.database.url.expose_secret().to_string()),
                ("redis", s.redis.url.clone()),
            ];
            (Configured { ops_port: Some(s.ops.port), api_port: Some(s.http.port), addresses }, unread)
        }
        Binary::Stock => {
            let (s, unread): (stock_processor::Settings, _) = read_settings(env);
            let addresses = vec![
                ("kafka", s.kafka.brokers.clone()),
                ("registry", s.registry.url.clone()),
                ("redis", s.redis.url.clone()),
                ("database", s.database.url.expose_secret().to_string()),
                ("replica", s.replica.url.expose_secret().to_string()),
            ];
            (Configured { ops_port: Some(s.http.port), api_port: None, addresses }, unread)
        }
        Binary::Recorder => {
            let (s, unread): (recorder::Settings, _) = read_settings(env);
            let addresses = vec![
                ("kafka", s.kafka.brokers.clone()),
                ("registry", s.registry.url.clone()),
                ("database", s.database.url.expose_secret().to_string()),
            ];
            (Configured { ops_port: Some(s.http.port), api_port: None, addresses }, unread)
        }
        Binary::Sender => {
            let (s, unread): (sender::Settings, _) = read_settings(env);
            let addresses = vec![
                ("kafka", s.kafka.brokers.clone()),
                ("registry", s.registry.url.clone()),
                ("database", s.database.url.expose_secret().to_string()),
                ("replica", s.replica.url.expose_secret().to_string()),
                ("provider", s.provider.base_url.clone()),
            ];
            (Configured { ops_port: Some(s.http.port), api_port: None, addresses }, unread)
        }
        Binary::ProviderSim => {
            let (s, unread): (provider_sim::Settings, _) = read_settings(env);
            (Configured { ops_port: Some(s.http.port), api_port: Some(s.http.port), addresses: Vec::new() }, unread)
        }
        Binary::Cli => {
            // `firstcome`'s settings, which the lab reads as its own.
            let (s, unread): (firstcome_lab::Settings, _) = read_settings(env);
            let addresses = vec![
                ("kafka", s.kafka.brokers.clone()),
                ("registry", s.registry.url.clone()),
                ("database", s.database.url.expose_secret().to_string()),
                ("redis", s.redis.url.clone()),
                ("replica", s.replica.url.expose_secret().to_string()),
            ];
            (Configured { ops_port: None, api_port: None, addresses }, unread)
        }
    }
}

#[test]
fn every_variable_set_on_a_firstcome_service_is_one_its_settings_read() {
    let compose = compose();
    let mut checked = BTreeSet::new();
    for (name, service) in services(&compose) {
        let Some(binary) = binary(&service) else { continue };
        let env = environment(&service);
        for key in env.keys() {
            assert!(
                key.starts_with("FIRSTCOME_") || platform::telemetry::OTEL_ENV.contains(&key.as_str()),
                "{name}: {key} is read by no firstcome code (FIRSTCOME_* settings, or one of {:?})",
                platform::telemetry::OTEL_ENV
            );
        }
        let (_, unread) = configured(binary, &env);
        assert!(unread.is_empty(), "{name} ({binary:?}) does not read {unread:?}");
        checked.insert(name);
    }
    let expected: BTreeSet<String> =
        ["ingest", "stock-processor", "recorder", "sender", "provider-sim", "setup"].map(String::from).into();
    assert_eq!(checked, expected, "the firstcome services of the compose file");
}

#[test]
fn a_variable_no_setting_reads_is_caught() {
    // The check above can fail: a misspelt key is left unread.
    let env = BTreeMap::from([
        ("FIRSTCOME_KAFKA__BROKERS".to_string(), "kafka-1:9092".to_string()),
        ("FIRSTCOME_KAFKA__BROKER".to_string(), "kafka-1:9092".to_string()),
        ("FIRSTCOME_HTTP__PORTS".to_string(), "9102".to_string()),
    ]);
    let (_, mut unread) = configured(Binary::Stock, &env);
    unread.sort();
    assert_eq!(unread, ["http.ports", "kafka.broker"]);
}

#[test]
fn ports_and_addresses_agree_with_the_services_compose_runs() {
    let compose = compose();
    let services = services(&compose);

    // The brokers: three KRaft nodes (broker + controller), one quorum.
    let brokers: BTreeMap<String, u16> = services
        .iter()
        .filter(|(_, s)| environment(s).contains_key("KAFKA_NODE_ID"))
        .map(|(name, s)| {
            let env = environment(s);
            assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller", "{name} runs KRaft");
            assert_eq!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(',').count(), 3, "{name}: three voters");
            let advertised = env["KAFKA_ADVERTISED_LISTENERS"].clone();
            let (host, port) = host_port(&advertised);
            assert_eq!(&host, name, "{name} advertises itself");
            (name.clone(), port)
        })
        .collect();
    assert_eq!(brokers.len(), 3, "three Kafka brokers");

    let published = |name: &str| container_ports(&services[name]);
    let env_of = |name: &str| environment(&services[name]);
    let registry_path = {
        let default = platform::settings::RegistrySettings::default().url;
        let rest = default.split_once("://").map(|(_, r)| r).unwrap_or(&default).to_string();
        rest[rest.find('/').expect("a path")..].to_string()
    };

    let mut scrape_targets = BTreeSet::new();
    for (name, service) in &services {
        let Some(binary) = binary(service) else { continue };
        let (this, _) = configured(binary, &environment(service));
        if let Some(port) = this.ops_port {
            scrape_targets.insert(format!("{name}:{port}"));
        }
        if let (Some(api), false) = (this.api_port, published(name).is_empty()) {
            assert!(published(name).contains(&api), "{name} publishes its API port {api}");
        }
        for (what, address) in &this.addresses {
            match *what {
                "kafka" => {
                    let named: BTreeMap<String, u16> = address.split(',').map(host_port).collect();
                    assert_eq!(named, brokers, "{name}: kafka.brokers are the three brokers at their listeners");
                }
                "registry" => {
                    assert_eq!(host_port(address), ("registry".into(), 8080), "{name}: the registry's port");
                    assert!(published("registry").contains(&8080));
                    assert!(address.ends_with(&registry_path), "{name}: the registry's Confluent API {registry_path}");
                }
                "database" => {
                    assert_eq!(host_port(address), ("postgres".into(), 5432), "{name}: {what}");
                    let db = address.rsplit('/').next().unwrap_or_default();
                    assert_eq!(db, env_of("postgres")["POSTGRES_DB"], "{name}: {what} database");
                }
                // The shop's member database beside it (on the stack: its own servers).
                "replica" => {
                    assert_eq!(host_port(address), ("postgres".into(), 5432), "{name}: {what}");
                    let db = address.rsplit('/').next().unwrap_or_default();
                    let init = read("compose/postgres/init.sql");
                    assert!(init.contains(&format!("CREATE DATABASE {db} OWNER")), "{name}: init.sql creates {db}");
                }
                "redis" => assert_eq!(host_port(address), ("redis".into(), 6379), "{name}: redis"),
                "provider" => {
                    let (sim, _) = configured(Binary::ProviderSim, &env_of("provider-sim"));
                    assert_eq!(
                        host_port(address),
                        ("provider-sim".into(), sim.api_port.unwrap_or_default()),
                        "{name}: provider"
                    );
                }
                other => panic!("unchecked address {other}"),
            }
        }
        if let Some(endpoint) = environment(service).get(platform::telemetry::OTLP_ENDPOINT_ENV) {
            assert_eq!(host_port(endpoint), ("jaeger".into(), 4318), "{name}: OTLP over HTTP to Jaeger");
        }
    }
    assert!(services.contains_key("jaeger"));

    // Redis keeps an append-only file.
    let redis = command(&services["redis"]).join(" ");
    assert!(redis.contains("--appendonly yes"), "Redis with AOF: {redis}");

    // Prometheus scrapes exactly every service's ops port.
    let prometheus: Value = serde_norway::from_str(&read("compose/prometheus/prometheus.yml")).expect("prometheus.yml");
    let targets: BTreeSet<String> = prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape configs")
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|c| c["targets"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert_eq!(targets, scrape_targets, "prometheus.yml scrapes every service's ops port");

    // Grafana reads that Prometheus.
    let datasource: Value =
        serde_norway::from_str(&read("compose/grafana/provisioning/datasources/prometheus.yml")).expect("datasource");
    let url = datasource["datasources"][0]["url"].as_str().expect("datasource url");
    assert_eq!(host_port(url), ("prometheus".into(), 9090));
    assert!(published("prometheus").contains(&9090));
}

#[test]
fn the_images_run_the_versions_the_local_stack_pins() {
    let pins: BTreeMap<String, String> = read("stack/versions.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let compose = compose();
    let services = services(&compose);
    let image = |name: &str| services[name]["image"].as_str().unwrap_or_else(|| panic!("{name} image")).to_string();
    for broker in ["kafka-1", "kafka-2", "kafka-3"] {
        assert_eq!(image(broker), format!("apache/kafka:{}", pins["KAFKA_VERSION"]), "{broker}");
    }
    assert_eq!(image("registry"), format!("apicurio/apicurio-registry:{}", pins["APICURIO_VERSION"]));
    assert_eq!(image("postgres"), format!("postgres:{}", pins["POSTGRES_MAJOR"]));
}

#[test]
fn the_setup_creates_the_topology_on_the_three_brokers_and_the_image_has_every_binary() {
    let compose = compose();
    let services = services(&compose);
    let setup = command(&services["setup"]).join(" ");
    for step in ["firstcome db migrate", "firstcome topics create --replication 3", "firstcome schemas register"] {
        assert!(setup.contains(step), "setup runs `{step}`: {setup}");
    }
    let dockerfile = read("compose/Dockerfile");
    for (name, service) in &services {
        if let Some(binary) = binary(service) {
            let program = match binary {
                Binary::Cli => "firstcome".to_string(),
                _ => command(service)[0].clone(),
            };
            assert!(dockerfile.contains(&format!("target/release/{program}")), "the image has {program} ({name})");
        }
    }
}

/// The metric names in the code: the first argument of every
/// `counter!`/`gauge!`/`histogram!` call in the services' sources, with
/// whether it is a histogram.
fn exported_metrics() -> BTreeMap<String, bool> {
    fn walk(dir: &Path, found: &mut BTreeMap<String, bool>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | "tests" | "benches" | ".stack" | ".git" | "node_modules") {
                    walk(&path, found);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (macro_name, histogram) in [("counter!(", false), ("gauge!(", false), ("histogram!(", true)] {
                    for (at, _) in text.match_indices(macro_name) {
                        let rest = text[at + macro_name.len()..].trim_start();
                        let Some(rest) = rest.strip_prefix('"') else { continue };
                        let metric: String = rest.chars().take_while(|c| *c != '"').collect();
                        if metric.starts_with("firstcome_") {
                            found.insert(metric, histogram);
                        }
                    }
                }
            }
        }
    }
    let mut found = BTreeMap::new();
    for krate in ["platform", "ingest", "stock-processor", "recorder", "sender", "provider-sim"] {
        walk(&repo().join(krate).join("src"), &mut found);
    }
    found
}

/// Every `firstcome_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in expr.match_indices("firstcome_") {
        if at > 0 && expr[..at].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        names.push(expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
    }
    names
}

/// Every target expression of the provisioned dashboard.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("compose/grafana/dashboards/firstcome.json")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a PromQL expr").to_string())
        .collect()
}

#[test]
fn every_dashboard_query_names_a_metric_the_services_export() {
    let exported = exported_metrics();
    assert!(exported.len() > 20, "metric names found in the code: {exported:?}");
    let queries = dashboard_queries();
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "a query on no firstcome metric: {expr}");
        for name in names {
            let known = exported.get(&name).is_some_and(|histogram| !histogram)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| exported.get(base) == Some(&true)));
            assert!(known, "{name} (in `{expr}`) is exported by no service");
        }
    }
    // The list is on the dashboard.
    for wanted in [
        "firstcome_ingest_requests_total",
        "firstcome_ingest_request_seconds_bucket",
        "firstcome_produce_seconds_bucket",
        "firstcome_records_total",
        "firstcome_consumer_lag",
        "firstcome_stock_remaining",
        "firstcome_sender_dispatches_total",
        "firstcome_sender_provider_retries_total",
        "firstcome_dead_letters_total",
        "firstcome_ingest_waiting_line",
    ] {
        assert!(queries.iter().any(|q| metric_names(q).iter().any(|n| n == wanted)), "the dashboard shows {wanted}");
    }
}

#[test]
fn the_dashboard_names_exactly_the_topologys_topics_and_groups() {
    let mut topics = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for expr in dashboard_queries() {
        for (label, into) in [("topic=\"", &mut topics), ("group=\"", &mut groups)] {
            for (at, _) in expr.match_indices(label) {
                into.insert(expr[at + label.len()..].chars().take_while(|c| *c != '"').collect::<String>());
            }
        }
    }
    let expected_topics: BTreeSet<String> = schemas::topology::ROUTES.iter().map(|r| r.topic.to_string()).collect();
    let expected_groups: BTreeSet<String> =
        schemas::topology::Stage::ALL.iter().filter_map(|s| s.group()).map(String::from).collect();
    assert_eq!(topics, expected_topics, "the per-topic panels cover the topology's topics");
    assert_eq!(groups, expected_groups, "the per-group panels cover the topology's consumer groups");
}

/// Every service role `migrations/grants.sql` grants to is made by compose's
/// database set-up and by the local stack (a role missing there fails
/// `firstcome db migrate`, and its service cannot log in).
#[test]
fn every_role_the_grants_name_is_created_by_compose_and_the_stack() {
    let grants = read("migrations/grants.sql");
    let roles: BTreeSet<String> = grants
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("firstcome_"))
        .map(String::from)
        .collect();
    let expected: BTreeSet<String> = platform::settings::Principal::ALL
        .iter()
        .filter(|p| **p != platform::settings::Principal::ADMIN)
        .map(|p| p.database_role())
        .collect();
    assert_eq!(roles, expected, "grants.sql names one role per service principal");
    let init = read("compose/postgres/init.sql");
    let stack = read("stack/bin/stack");
    let stack_roles =
        stack.lines().find(|l| l.starts_with("PG_SERVICE_ROLES=")).expect("PG_SERVICE_ROLES in stack/bin/stack");
    for role in &roles {
        assert!(init.contains(&format!("CREATE ROLE {role} LOGIN")), "compose/postgres/init.sql creates {role}");
        assert!(stack_roles.split(['(', ')', ' ']).any(|r| r == role), "stack/bin/stack's PG_SERVICE_ROLES has {role}");
    }
}

/// The role a PostgreSQL URL names (`postgres://user[:password]@host…`).
fn url_user(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split(['/', '?']).next()?;
    let (credentials, _) = authority.rsplit_once('@')?;
    Some(credentials.split(':').next().unwrap_or_default().to_string())
}

/// The roles `compose/postgres/init.sql` creates, each with its `CREATE ROLE` line.
fn created_roles(init: &str) -> BTreeMap<String, String> {
    init.lines()
        .filter_map(|l| l.strip_prefix("CREATE ROLE "))
        .filter_map(|l| Some((l.split_whitespace().next()?.to_string(), l.to_string())))
        .collect()
}

/// As the local stack: every service logs in to PostgreSQL as its own role
/// (the one `migrations/grants.sql` grants to), the set-up as the owner, the
/// member replica's readers as the reader; none of them, nor the registry's
/// role, is the image's bootstrap superuser or made a superuser.
#[test]
fn each_service_logs_in_to_postgres_as_its_own_role_and_none_as_a_superuser() {
    use platform::settings::Principal;
    use secrecy::ExposeSecret;
    let compose = compose();
    let services = services(&compose);
    let superuser = environment(&services["postgres"])["POSTGRES_USER"].clone();
    let init = read("compose/postgres/init.sql");
    let roles = created_roles(&init);

    // The role a database URL logs in as, as the service fills it in (local:
    // its own principal's role when the URL names none).
    let login = |settings: &platform::settings::DatabaseSettings, environment, principal| -> String {
        let settings = settings.for_principal(environment, principal);
        url_user(settings.url.expose_secret()).or(settings.user).expect("a role")
    };
    let mut logins: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, service) in &services {
        let Some(binary) = binary(service) else { continue };
        let env = environment(service);
        let (database, replica) = match binary {
            Binary::Ingest => {
                let (s, _): (ingest::Settings, _) = read_settings(&env);
                (Some(login(&s.database, s.environment, Principal::INGEST)), None)
            }
            Binary::Stock => {
                let (s, _): (stock_processor::Settings, _) = read_settings(&env);
                (Some(login(&s.database, s.environment, Principal::STOCK)), url_user(s.replica.url.expose_secret()))
            }
            Binary::Recorder => {
                let (s, _): (recorder::Settings, _) = read_settings(&env);
                (Some(login(&s.database, s.environment, Principal::RECORDER)), None)
            }
            Binary::Sender => {
                let (s, _): (sender::Settings, _) = read_settings(&env);
                (Some(login(&s.database, s.environment, Principal::SENDER)), url_user(s.replica.url.expose_secret()))
            }
            Binary::Cli => {
                let (s, _): (firstcome_lab::Settings, _) = read_settings(&env);
                let owner = url_user(s.database.url.expose_secret()).unwrap_or(Principal::ADMIN.database_role());
                (Some(owner), url_user(s.replica.url.expose_secret()))
            }
            Binary::ProviderSim => (None, None),
        };
        for role in database.into_iter().chain(replica) {
            logins.entry(name.clone()).or_default().insert(role);
        }
    }
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("ingest", vec!["firstcome_ingest"]),
        ("stock-processor", vec!["firstcome_stock", "firstcome_reader"]),
        ("recorder", vec!["firstcome_recorder"]),
        ("sender", vec!["firstcome_sender", "firstcome_reader"]),
        ("setup", vec!["firstcome", "firstcome_reader"]),
    ]
    .into_iter()
    .map(|(s, r)| (s.to_string(), r.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(logins, expected, "the PostgreSQL role each firstcome service logs in as");

    let registry = environment(&services["registry"])["APICURIO_DATASOURCE_USERNAME"].clone();
    for role in logins.values().flatten().chain([&registry]) {
        assert_ne!(role, &superuser, "{role} is the image's bootstrap superuser (POSTGRES_USER)");
        let line = roles.get(role).unwrap_or_else(|| panic!("compose/postgres/init.sql creates {role}"));
        assert!(line.contains("NOSUPERUSER") && !line.contains(" SUPERUSER"), "{role} is no superuser: {line}");
        assert!(!line.contains(" CREATEROLE") && !line.contains(" REPLICATION"), "{role}: {line}");
    }
    // The owner of firstcome's database is the owner role, not the superuser.
    assert!(init.contains(&format!(
        "ALTER DATABASE {} OWNER TO {}",
        environment(&services["postgres"])["POSTGRES_DB"],
        Principal::ADMIN.database_role()
    )));
}

/// The brokers' security is the local stack's (stack/kafka/server.properties.tmpl):
/// SASL on every listener with the same mechanisms, the standard authorizer,
/// the same super users, nothing allowed without an ACL.
#[test]
fn the_brokers_authenticate_every_client_and_authorize_by_acl_as_the_stack() {
    // The stack's broker properties, as `name=value` lines.
    let template: BTreeMap<String, String> = read("stack/kafka/server.properties.tmpl")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    // The apache/kafka image's rule: KAFKA_A_B → a.b, `__` → `_`.
    let property = |variable: &str| -> String {
        let name = variable.strip_prefix("KAFKA_").expect("a KAFKA_ variable");
        name.split("__").map(|part| part.replace('_', ".")).collect::<Vec<_>>().join("_").to_lowercase()
    };
    let compose = compose();
    let services = services(&compose);
    let mut brokers = 0;
    for (name, service) in &services {
        let env = environment(service);
        if !env.contains_key("KAFKA_NODE_ID") {
            continue;
        }
        brokers += 1;
        let properties: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("KAFKA_") && k.as_str() != "KAFKA_OPTS")
            .map(|(k, v)| (property(k), v.clone()))
            .collect();
        for key in [
            "authorizer.class.name",
            "super.users",
            "allow.everyone.if.no.acl.found",
            "sasl.enabled.mechanisms",
            "sasl.mechanism.inter.broker.protocol",
            "sasl.mechanism.controller.protocol",
            "listener.name.controller.sasl.enabled.mechanisms",
            "controller.listener.names",
            "inter.broker.listener.name",
            "listener.security.protocol.map",
        ] {
            assert_eq!(properties.get(key), template.get(key), "{name}: {key} as the stack sets it");
        }
        for listener in [&env["KAFKA_LISTENERS"], &env["KAFKA_ADVERTISED_LISTENERS"]] {
            for endpoint in listener.split(',') {
                assert!(
                    endpoint.starts_with("SASL_") || endpoint.starts_with("CONTROLLER://"),
                    "{name}: {endpoint} is no SASL listener"
                );
            }
        }
        // The logins: a JAAS file the image is told of, with the stack's static PLAIN users.
        let opts = env.get("KAFKA_OPTS").map(String::as_str).unwrap_or_default();
        let jaas = opts
            .split_whitespace()
            .find_map(|o| o.strip_prefix("-Djava.security.auth.login.config="))
            .unwrap_or_else(|| panic!("{name}: KAFKA_OPTS names no JAAS file"));
        let mounted = service["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|v| {
                let (host, container) = v.split_once(':')?;
                let container = container.trim_end_matches(":ro");
                jaas.strip_prefix(container).map(|file| format!("compose/{}{file}", host.trim_start_matches("./")))
            })
            .unwrap_or_else(|| panic!("{name}: {jaas} is mounted from compose/"));
        let jaas = read(&mounted);
        for section in ["sasl_plaintext.KafkaServer", "controller.KafkaServer"] {
            assert!(jaas.contains(section), "{mounted}: {section}");
        }
        assert!(jaas.contains("ScramLoginModule required"), "{mounted}: the SCRAM logins");
    }
    assert_eq!(brokers, 3);
}

/// Every principal has its SCRAM login (password as the stack's), made
/// before the set-up; each firstcome service logs in as its own principal,
/// and the set-up's `topics create`, as the admin, grants the ACLs.
#[test]
fn every_principal_logs_in_to_kafka_with_scram_as_itself() {
    use platform::settings::Principal;
    let compose = compose();
    let services = services(&compose);
    let (users_service, users) = services
        .iter()
        .find(|(_, s)| command(s).iter().any(|w| w.contains("--entity-type users")))
        .expect("a service that makes the SCRAM users");
    let script = command(users).join(" ");
    let listed: BTreeSet<String> = script
        .split_once("for user in ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(list, _)| list.split_whitespace().map(String::from).collect())
        .expect("for user in …;");
    let expected: BTreeSet<String> = Principal::ALL.iter().map(|p| p.kafka_user().to_string()).collect();
    assert_eq!(listed, expected, "{users_service}: a SCRAM user per principal");
    for principal in Principal::ALL {
        assert_eq!(principal.local_password(), format!("firstcome_{}", principal.kafka_user()));
    }
    assert!(script.contains("SCRAM-SHA-512=[password=firstcome_$$user]"), "{users_service}: {script}");
    assert_eq!(
        services["setup"]["depends_on"][users_service.as_str()]["condition"].as_str(),
        Some("service_completed_successfully"),
        "the set-up waits for the SCRAM users"
    );

    let sasl_user = |kafka: &platform::settings::KafkaSettings, environment, principal| -> Option<String> {
        let kafka = kafka.for_principal(environment, principal);
        let properties = kafka.security_properties();
        assert!(properties.iter().any(|(k, v)| *k == "sasl.mechanism" && v == "SCRAM-SHA-512"), "{properties:?}");
        properties.into_iter().find(|(k, _)| *k == "sasl.username").map(|(_, v)| v)
    };
    for (name, service) in &services {
        let Some(binary) = binary(service) else { continue };
        let env = environment(service);
        let (user, principal) = match binary {
            Binary::Ingest => {
                let (s, _): (ingest::Settings, _) = read_settings(&env);
                (sasl_user(&s.kafka, s.environment, Principal::INGEST), Principal::INGEST)
            }
            Binary::Stock => {
                let (s, _): (stock_processor::Settings, _) = read_settings(&env);
                (sasl_user(&s.kafka, s.environment, Principal::STOCK), Principal::STOCK)
            }
            Binary::Recorder => {
                let (s, _): (recorder::Settings, _) = read_settings(&env);
                (sasl_user(&s.kafka, s.environment, Principal::RECORDER), Principal::RECORDER)
            }
            Binary::Sender => {
                let (s, _): (sender::Settings, _) = read_settings(&env);
                (sasl_user(&s.kafka, s.environment, Principal::SENDER), Principal::SENDER)
            }
            Binary::Cli => {
                let (s, _): (firstcome_lab::Settings, _) = read_settings(&env);
                (sasl_user(&s.kafka, platform::settings::Environment::Local, Principal::ADMIN), Principal::ADMIN)
            }
            Binary::ProviderSim => continue,
        };
        assert_eq!(user.as_deref(), Some(principal.kafka_user()), "{name} logs in to Kafka as its own principal");
    }
}

/// Published ports answer on 127.0.0.1 unless FIRSTCOME_PUBLISH_HOST says
/// otherwise: the stack runs the public development secrets.
#[test]
fn every_published_port_is_bound_to_loopback_by_default() {
    const HOST: &str = "${FIRSTCOME_PUBLISH_HOST:-127.0.0.1}";
    let compose = compose();
    let mut published = 0;
    for (name, service) in services(&compose) {
        for port in service.get("ports").and_then(Value::as_sequence).into_iter().flatten() {
            let port = port.as_str().unwrap_or_else(|| panic!("{name}: a port in the short syntax: {port:?}"));
            let rest = port.strip_prefix(HOST).and_then(|r| r.strip_prefix(':'));
            let rest = rest.unwrap_or_else(|| panic!("{name}: {port} is not bound to {HOST}"));
            assert_eq!(rest.split(':').count(), 2, "{name}: {port} is host port:container port");
            published += 1;
        }
    }
    assert!(published >= 5, "the API, registry, Jaeger, Prometheus and Grafana are published");
}

/// Grafana lets nobody in without logging in, and its admin has no default
/// password: compose refuses to start without one.
#[test]
fn grafana_has_no_anonymous_access_and_no_default_admin_password() {
    let compose = compose();
    let services = services(&compose);
    let env = environment(&services["grafana"]);
    assert_eq!(env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str), Some("false"), "anonymous access off");
    assert!(!env.contains_key("GF_AUTH_ANONYMOUS_ORG_ROLE"), "no role for anonymous users");
    assert_eq!(env.get("GF_USERS_ALLOW_SIGN_UP").map(String::as_str), Some("false"));
    let password = env.get("GF_SECURITY_ADMIN_PASSWORD").expect("an admin password");
    assert!(
        password.starts_with("${") && password.contains(":?") && password.ends_with('}'),
        "the admin password is required from the environment, not written here: {password}"
    );
}
