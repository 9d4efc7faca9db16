//! `ingest`: the HTTP front of firstcome (docs/DESIGN.md "Flow" step 1).
//!
//! Members submit entries with a bearer token; ingest answers from memory
//! whatever it can (unknown, not open yet, closed, sold out), admits the rest
//! with one Redis script, and answers 202 only after Kafka acknowledged the
//! `SurveySubmitted` record. It also serves entry status and event state.
//!
//! - [`settings`]: `Settings` and its validation.
//! - [`auth`]: member tokens (`mint` for the CLI, `verify` for requests).
//! - [`state`]: the in-memory event state and what keeps it current.
//! - [`admission`]: the first-entry Redis scripts.
//! - [`submission`]: the request body and its validation.
//! - [`ids`]: the event and member id rules shared with the consumers.
//! - [`routes`]: the handlers; [`request_context`]: span, correlation id, metrics.
//! - [`rate_limit`]: requests per member, in bounded memory.
//! - [`server`]: the HTTP/1 listener with a header-read timeout and a cap on connections.
//! - [`ops`]: `/healthz` (cached, collapsed) and `/metrics` on the internal ops listener.
//! - [`waiting_room`]: admission control — a rate-paced line and a pre-queue in Redis.
//! - [`operations`]: operator actions (closing an event), shared with the CLI.
//! - [`dashboard`]: the operations dashboard (ops listener, operator token, SSE).
//! - [`receipts`]: the signed receipt every 202 carries, and its public key.
//! - [`merkle`], [`shuffle`]: the report's tree of winners' receipts; the verifiable pre-queue draw.
//! - [`startup`]: `Application::build` / `run_until_stopped`.

pub mod admission;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod holes;
pub mod ids;
pub mod merkle;
pub mod metrics;
pub mod operations;
pub mod ops;
pub mod rate_limit;
pub mod receipts;
pub mod report;
pub mod request_context;
pub mod routes;
pub mod server;
pub mod settings;
pub mod shuffle;
pub mod startup;
pub mod state;
pub mod submission;
pub mod waiting_room;

pub use auth::{mint, verify, AuthError, MemberId};
pub use settings::{AuthSettings, Limits, Settings};
pub use startup::{Application, Error};
