//! `firstcome schemas register | check`: schema governance.
//!
//! `register` sets BACKWARD_TRANSITIVE compatibility on each of the topics'
//! value subjects (TopicNameStrategy), then puts the Avro schemas of
//! `schemas/avro/` under them: the one place that registers (services only
//! look their schemas up and stop at start when one is missing). `check`
//! asks the registry whether a schema set (the built-in one, or the `.avsc`
//! files of a folder being edited) may be registered next, and fails if not.
//! `register` is an operator action, recorded in `operator_actions`
//! (`crate::audit_trail`) before it runs; `check` changes nothing.

use std::path::Path;

use anyhow::Context;
use schemas::events::all_schemas;
use schemas::registry::{Registered, Verdict};
use schemas::{RegistryAdmin, Topics};

use platform::settings::{KafkaSettings, RegistrySettings};

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// With the registry's credentials (`registry.username`/`registry.password`).
fn admin(registry: &RegistrySettings) -> anyhow::Result<RegistryAdmin> {
    Ok(registry.admin()?)
}

/// Registers every schema; idempotent.
pub async fn register(registry: &RegistrySettings, kafka: &KafkaSettings) -> anyhow::Result<Vec<Registered>> {
    Ok(admin(registry)?.register_all(&kafka.topics()).await?)
}

/// `survey_submitted.avsc` for `dev.firstcome.events.SurveySubmitted`.
pub fn file_name(record_name: &str) -> String {
    let short = record_name.rsplit('.').next().unwrap_or(record_name);
    let mut out = String::new();
    for (i, c) in short.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    format!("{out}.avsc")
}

/// Checks the built-in schemas, or those in `dir` (files named as in
/// `schemas/avro/`; a missing file keeps the built-in one).
pub async fn check(
    registry: &RegistrySettings,
    kafka: &KafkaSettings,
    dir: Option<&Path>,
) -> anyhow::Result<Vec<Verdict>> {
    let admin = admin(registry)?;
    let topics = kafka.topics();
    let mut verdicts = Vec::new();
    for (topic, name, builtin) in all_schemas(&topics) {
        let text = match dir.map(|d| d.join(file_name(name))) {
            Some(path) if path.exists() => {
                std::fs::read_to_string(&path).with_context(|| format!("Failed to read {}", path.display()))?
            }
            _ => builtin.to_string(),
        };
        verdicts.push(admin.check(&Topics::value_subject(topic), name, &text).await?);
    }
    Ok(verdicts)
}

/// Whether every verdict allows the change.
pub fn all_compatible(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.compatible != Some(false))
}

/// `firstcome schemas …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SchemasCommand {
    /// Set BACKWARD_TRANSITIVE on each subject, then register the schemas under them (idempotent).
    Register,
    /// Fail (exit 1) if the schemas (built in, or the .avsc files of --dir) are incompatible with the registry.
    Check {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

impl SchemasCommand {
    pub fn needs(&self) -> &'static [Need] {
        match self {
            // The database: `register` is an operator action, recorded in operator_actions.
            SchemasCommand::Register => &[Need::Registry, Need::Database],
            SchemasCommand::Check { .. } => &[Need::Registry],
        }
    }
}

pub async fn command(settings: &CliSettings, command: SchemasCommand) -> anyhow::Result<Output> {
    match command {
        SchemasCommand::Register => {
            let detail = serde_json::json!({ "topic_prefix": settings.kafka.topic_prefix });
            let action = crate::audit_trail::Action::new("schemas register", None, detail);
            let registered =
                crate::audit_trail::audited(settings, action, register(&settings.registry, &settings.kafka)).await?;
            let text: String = registered.iter().map(|r| format!("{:<40} id {}\n", r.subject, r.id)).collect();
            let json: Vec<_> =
                registered.iter().map(|r| serde_json::json!({ "subject": r.subject, "id": r.id })).collect();
            Ok(Output::new(text, &json))
        }
        SchemasCommand::Check { dir } => {
            let verdicts = check(&settings.registry, &settings.kafka, dir.as_deref()).await?;
            let verdict = |v: &Verdict| match v.compatible {
                Some(true) => "compatible",
                Some(false) => "INCOMPATIBLE",
                None => "new subject",
            };
            let text: String = verdicts.iter().map(|v| format!("{:<40} {}\n", v.subject, verdict(v))).collect();
            let json: Vec<_> = verdicts
                .iter()
                .map(|v| serde_json::json!({ "subject": v.subject, "compatible": v.compatible, "verdict": verdict(v) }))
                .collect();
            Ok(Output::new(text, &json).failed_if(!all_compatible(&verdicts), "incompatible schema change"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_the_record_names() {
        assert_eq!(file_name("dev.firstcome.events.SurveySubmitted"), "survey_submitted.avsc");
        assert_eq!(file_name("dev.firstcome.events.StockDecision"), "stock_decision.avsc");
        for (_, name, _) in all_schemas(&Topics::default()) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/avro").join(file_name(name));
            assert!(path.exists(), "{}", path.display());
        }
    }
}
