//! Logs and exported spans.

use serde::{Deserialize, Serialize};

/// Logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// `pretty` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive for the spans exported over OTLP
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`), apart from the log filter.
    pub trace_filter: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_filter: "info,rdkafka=warn".into(),
            log_format: LogFormat::Pretty,
            trace_filter: "info,rdkafka=off".into(),
        }
    }
}
