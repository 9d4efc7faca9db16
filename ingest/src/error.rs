//! Every non-2xx answer of the API, as one enum: the variant decides the
//! status, the JSON body `{"error": code, "message": …}` and the extra headers.
//! Handlers return `Result<_, ApiError>`; the request middleware reads the
//! [`Outcome`] extension for metrics and logs.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The metrics/log label of a finished request (bounded set of values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("the event opens in {0:?}")]
    TooEarly(Duration),
    #[error("the event is closed")]
    Closed,
    #[error("the event is sold out")]
    SoldOut,
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("body over the limit")]
    PayloadTooLarge,
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("not eligible")]
    NotEligible,
    #[error("already entered")]
    AlreadyEntered { entry_id: String },
    #[error("entry in progress")]
    EntryInProgress { entry_id: String, retry_after: Duration },
    /// The member made more requests than `limits.member_*` allow.
    #[error("too many requests from this member, retry later")]
    RateLimited(Duration),
    /// The client's address spent its budget of costly refusals (bad tokens,
    /// unknown events): refused before any of that work is done again.
    #[error("too many refused requests from this address, retry later")]
    TooManyRefusals(Duration),
    /// The body did not arrive whole within `limits.body_read_timeout_ms`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Every entry slot is taken (`limits.max_in_flight`): shed at once.
    #[error("too many requests in flight, retry shortly")]
    Overloaded,
    /// The waiting room: not this member's turn yet (429, their place in line).
    #[error("waiting in line at position {}", .0.position)]
    Waiting(crate::waiting_room::Place),
    /// The waiting room before the opening: in the pre-queue (425, with the place).
    #[error("the event opens in {opens_in:?}; waiting in the pre-queue")]
    PreQueued { opens_in: Duration, place: crate::waiting_room::Place },
    /// A dependency (Redis, Kafka, the registry, PostgreSQL) failed.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Duration },
}

impl ApiError {
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        ApiError::Unavailable { reason: reason.to_string(), retry_after: Duration::from_secs(1) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::TooEarly(_) | ApiError::PreQueued { .. } => StatusCode::TOO_EARLY,
            ApiError::Closed | ApiError::SoldOut => StatusCode::GONE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotEligible => StatusCode::FORBIDDEN,
            ApiError::AlreadyEntered { .. } | ApiError::EntryInProgress { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited(_) | ApiError::TooManyRefusals(_) | ApiError::Waiting(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded | ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::TooEarly(_) | ApiError::PreQueued { .. } => "too_early",
            ApiError::Closed => "closed",
            ApiError::SoldOut => "sold_out",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Invalid { .. } => "invalid",
            ApiError::NotEligible => "not_eligible",
            ApiError::AlreadyEntered { .. } => "already_entered",
            ApiError::EntryInProgress { .. } => "entry_in_progress",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::TooManyRefusals(_) => "too_many_refusals",
            ApiError::Waiting(_) => "waiting",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::TooEarly(d) | ApiError::RateLimited(d) | ApiError::TooManyRefusals(d) => Some(*d),
            ApiError::PreQueued { opens_in, .. } => Some(*opens_in),
            ApiError::Waiting(place) => Some(place.retry_after),
            ApiError::Overloaded => Some(Duration::from_secs(1)),
            ApiError::EntryInProgress { retry_after, .. } | ApiError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// What the member is told; dependency failures stay in the logs.
    fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable { .. } => "temporarily unavailable, retry later".into(),
            other => other.to_string(),
        }
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` invites a hot loop).
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable { reason, .. } = &self {
            tracing::warn!(%reason, "dependency unavailable");
        }
        let mut body = json!({ "error": self.code(), "message": self.public_message() });
        match &self {
            ApiError::AlreadyEntered { entry_id } | ApiError::EntryInProgress { entry_id, .. } => {
                body["entry_id"] = json!(entry_id);
                body["status_url"] = json!(crate::routes::status_url(entry_id));
            }
            ApiError::Invalid { field, .. } => body["field"] = json!(field),
            ApiError::Waiting(place) | ApiError::PreQueued { place, .. } => {
                body["line"] = json!(place);
                body["retry_after_ms"] = json!(place.retry_after.as_millis() as u64);
            }
            _ => {}
        }
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::BodyTimeout) {
            // The rest of the body may still come: never read it as a next request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        response.extensions_mut().insert(Outcome(self.code()));
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest { code: "malformed_json", message },
            JsonRejection::JsonDataError(_) => ApiError::Invalid { field: data_error_field(&message), message },
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType { message },
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::BadRequest { code: "bad_body", message },
        }
    }
}

/// The JSON path serde names in a data error (`answers: invalid type…`), or `body`.
fn data_error_field(message: &str) -> String {
    // axum formats it as "Failed to deserialize the JSON body into the target type: <path>: <error>".
    message
        .split(": ")
        .nth(1)
        .filter(|path| !path.contains(' ') && !path.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "body".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(0)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn the_field_of_a_data_error_is_named() {
        let msg = "Failed to deserialize the JSON body into the target type: answers: invalid type: integer `5`, expected a string at line 1 column 20";
        assert_eq!(data_error_field(msg), "answers");
        assert_eq!(
            data_error_field(
                "Failed to deserialize the JSON body into the target type: missing field `answers` at line 1 column 2"
            ),
            "body"
        );
    }

    #[test]
    fn closed_and_sold_out_are_both_gone() {
        assert_eq!(ApiError::Closed.status(), StatusCode::GONE);
        assert_eq!(ApiError::SoldOut.code(), "sold_out");
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let response = ApiError::RateLimited(Duration::from_millis(1_500)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
    }

    #[test]
    fn overloaded_is_503_with_retry_after_one_second() {
        let response = ApiError::Overloaded.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(response.extensions().get::<Outcome>(), Some(&Outcome("overloaded")));
    }
}
