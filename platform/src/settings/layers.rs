//! The layers settings are read from: defaults, file, environment.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::SettingsError;

/// The variable naming the optional TOML file layered over the defaults.
const CONFIG_FILE_ENV: &str = "FIRSTCOME_CONFIG";

/// Loads a service's settings `S`: its defaults, the optional file, the
/// environment, each layer changing only the fields it names.
pub fn load_layered<S: Serialize + DeserializeOwned + Default>() -> Result<S, SettingsError> {
    Ok(layered(&S::default(), environment())?.try_deserialize()?)
}

/// Loads `S` from the optional file and the environment, a section's
/// missing fields taken from the section *type's* `Default`. Only for
/// settings whose sections all keep their types' defaults (the CLI's, the
/// test kit's); a service's settings use [`load_layered`].
pub fn load<S: DeserializeOwned>() -> Result<S, SettingsError> {
    Ok(with_file(config::Config::builder())?.add_source(environment()).build()?.try_deserialize()?)
}

/// `defaults` (serialized: the first layer, so that a section named in a
/// later layer keeps the fields it does not name), then the optional file,
/// then `environment`. Tests hand an environment of their own
/// (`environment().source(…)`) to read a deployment's variables as a service would.
pub fn layered<S: Serialize>(defaults: &S, environment: config::Environment) -> Result<config::Config, SettingsError> {
    let builder = config::Config::builder().add_source(config::Config::try_from(defaults)?);
    Ok(with_file(builder)?.add_source(environment).build()?)
}

fn with_file(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, SettingsError> {
    Ok(match std::env::var(CONFIG_FILE_ENV) {
        Ok(path) => builder.add_source(config::File::with_name(&path).required(true)),
        Err(_) => builder,
    })
}

/// Whether the settings file or the environment names `environment`
/// (rather than the services' default, local): see
/// [`Environment::check_listener`](super::Environment::check_listener).
pub(crate) fn environment_is_explicit() -> bool {
    with_file(config::Config::builder())
        .and_then(|builder| Ok(builder.add_source(environment()).build()?))
        .is_ok_and(|layers| layers.get_string("environment").is_ok())
}

/// The `FIRSTCOME_…__…` variables as a settings source (`FIRSTCOME_KAFKA__BROKERS`
/// is `kafka.brokers`). Tests hand it a map of their own
/// (`config::Environment::source`) to read a deployment's variables as a service would.
pub fn environment() -> config::Environment {
    config::Environment::with_prefix("FIRSTCOME").prefix_separator("_").separator("__").try_parsing(true)
}

/// Whether one variable changes one field of `S` under `defaults`: one
/// field of every section (a number, else a flag, else a text) is set from
/// the environment at once, and every other field of `S` must keep its
/// default. Each service's settings tests call it; the error names the
/// fields that moved.
pub fn check_layering<S: Serialize + DeserializeOwned>(defaults: &S) -> Result<(), String> {
    let json = |s: &S| serde_json::to_value(s).map_err(|e| format!("settings as JSON: {e}"));
    let mut expected = json(defaults)?;
    let mut variables = config::Map::new();
    let Value::Object(sections) = &mut expected else { return Err("settings are not a table".into()) };
    for (section, fields) in sections.iter_mut() {
        let Value::Object(fields) = fields else { continue };
        let Some((field, value, text)) = changed_field(fields) else { continue };
        variables.insert(format!("FIRSTCOME_{}__{}", section.to_uppercase(), field.to_uppercase()), text);
        fields.insert(field, value);
    }
    if variables.is_empty() {
        return Err("no section with a number, flag or text field".into());
    }
    let loaded: S = layered(defaults, environment().source(Some(variables.clone())))
        .and_then(|c| Ok(c.try_deserialize()?))
        .map_err(|e| format!("settings from {variables:?}: {e}"))?;
    let mut moved = Vec::new();
    differences("", &expected, &json(&loaded)?, &mut moved);
    match moved.is_empty() {
        true => Ok(()),
        false => Err(format!("setting {:?} moved {moved:?}", variables.keys().collect::<Vec<_>>())),
    }
}

/// A field of a section to change and its new value, as JSON and as a variable's text.
fn changed_field(fields: &serde_json::Map<String, Value>) -> Option<(String, Value, String)> {
    let number = fields.iter().find_map(|(k, v)| {
        let n = v.as_u64()?.checked_add(1)?;
        Some((k.clone(), Value::from(n), n.to_string()))
    });
    let flag = || fields.iter().find_map(|(k, v)| v.as_bool().map(|b| (k.clone(), Value::from(!b), (!b).to_string())));
    // Texts last: an enum's text changed would not parse.
    let text = || {
        fields.iter().find_map(|(k, v)| {
            let s = format!("{}-layered", v.as_str()?);
            Some((k.clone(), Value::from(s.clone()), s))
        })
    };
    number.or_else(flag).or_else(text)
}

/// The paths where `expected` and `actual` differ.
fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for key in e.keys().chain(a.keys().filter(|k| !e.contains_key(*k))) {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                differences(&at, e.get(key).unwrap_or(&Value::Null), a.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (e, a) if e != a => out.push(format!("{path}: {e} → {a}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::settings::{
        DatabaseSettings, Environment, HttpSettings, KafkaSettings, RedisSettings, RegistrySettings, ReplicaSettings,
        TelemetrySettings,
    };

    /// Every platform section, with defaults of its own that differ from
    /// the section types' (as a service's do).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(default)]
    struct Sections {
        environment: Environment,
        kafka: KafkaSettings,
        registry: RegistrySettings,
        database: DatabaseSettings,
        replica: ReplicaSettings,
        redis: RedisSettings,
        http: HttpSettings,
        telemetry: TelemetrySettings,
    }

    impl Default for Sections {
        fn default() -> Self {
            Self {
                environment: Environment::Local,
                kafka: KafkaSettings { batch_max_records: 64, linger_ms: 9, ..Default::default() },
                registry: RegistrySettings { timeout_ms: 1_234, ..Default::default() },
                database: DatabaseSettings { max_connections: 2, timeout_ms: 2_000, ..Default::default() },
                replica: ReplicaSettings { max_connections: 3, statement_timeout_ms: 4_000, ..Default::default() },
                redis: RedisSettings { connect_timeout_ms: 300, response_timeout_ms: 700, ..Default::default() },
                http: HttpSettings::on_port(9_999),
                telemetry: TelemetrySettings { trace_filter: "debug".into(), ..Default::default() },
            }
        }
    }

    #[test]
    fn one_variable_changes_one_field_and_the_section_keeps_the_rest() {
        check_layering(&Sections::default()).unwrap();
    }

    #[test]
    fn a_variable_overrides_a_service_default() {
        let variables = config::Map::from([
            ("FIRSTCOME_HTTP__HOST".to_string(), "0.0.0.0".to_string()),
            ("FIRSTCOME_KAFKA__PASSWORD".to_string(), "pw".to_string()),
        ]);
        let loaded: Sections =
            layered(&Sections::default(), environment().source(Some(variables))).unwrap().try_deserialize().unwrap();
        assert_eq!(loaded.http.address(), "0.0.0.0:9999", "the port is the service's, not the type's 0");
        assert_eq!(loaded.kafka.batch_max_records, 64);
        assert!(loaded.kafka.password.is_some() && loaded.database.password.is_none());
    }

    #[test]
    fn without_the_defaults_layer_a_named_section_takes_its_types_defaults() {
        // What loading without the defaults layer does: a named section takes
        // the rest of its fields from the section type's `Default`.
        let variables = config::Map::from([("FIRSTCOME_HTTP__HOST".to_string(), "0.0.0.0".to_string())]);
        let unlayered: Sections = config::Config::builder()
            .add_source(environment().source(Some(variables)))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(unlayered.http.port, 0, "the bug this module's layering prevents");
    }
}
