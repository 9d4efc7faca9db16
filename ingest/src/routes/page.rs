//! The survey page: plain HTML, CSS and JS compiled into the binary
//! (`ingest/static/`, no build step). `GET /` serves the page in the
//! language the browser prefers (Accept-Language: Korean or English; the
//! page has a toggle), `GET /static/{file}` its script and style sheet.
//!
//! The page uses only the public API: `GET /api/events/{id}` (server time,
//! open_at, questions), `POST /api/events/{id}/entries`, and
//! `GET /api/entries/{id}` with the member's token (polled with backoff).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const APP_CSS: &str = include_str!("../../static/app.css");
pub(crate) const DASHBOARD_HTML: &str = include_str!("../../static/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../../static/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../static/dashboard.css");

/// Scripts and styles from this origin only; no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `ko` when the browser's first supported preference is Korean, else `en`.
pub fn language(headers: &HeaderMap) -> &'static str {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    for part in accept.split(',') {
        let tag = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if tag.starts_with("ko") {
            return "ko";
        }
        if tag.starts_with("en") {
            return "en";
        }
    }
    "en"
}

pub async fn index(headers: HeaderMap) -> Response {
    html(INDEX.replace("{{lang}}", language(&headers)))
}

pub(crate) fn html(body: String) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    secure(&mut response);
    response
}

fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "dashboard.css" => (DASHBOARD_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    secure(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn korean_browsers_get_the_korean_page_and_others_english() {
        assert_eq!(language(&accept("ko-KR,ko;q=0.9,en-US;q=0.8")), "ko");
        assert_eq!(language(&accept("en-US,en;q=0.9,ko;q=0.8")), "en");
        assert_eq!(language(&accept("fr-FR, ko;q=0.5")), "ko");
        assert_eq!(language(&HeaderMap::new()), "en");
    }

    #[test]
    fn every_text_of_the_page_exists_in_both_languages() {
        // The keys of a language's table: each identifier before `: "`.
        let keys = |lang: &str| -> Vec<String> {
            let start = APP_JS.find(&format!("    {lang}: {{")).expect("language table") + lang.len() + 7;
            let block = &APP_JS[start..];
            let block = &block[..block.find("\n    }").expect("end of table")];
            let pieces: Vec<&str> = block.split(": \"").collect();
            pieces[..pieces.len() - 1]
                .iter()
                .map(|piece| {
                    let tail: String =
                        piece.chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    tail.chars().rev().collect::<String>()
                })
                .filter(|key| !key.is_empty())
                .collect()
        };
        let (en, ko) = (keys("en"), keys("ko"));
        assert!(en.len() > 30, "{en:?}");
        for key in &en {
            assert!(ko.contains(key), "{key} has no Korean text");
        }
        for i18n in INDEX.split("data-i18n=\"").skip(1) {
            let key = &i18n[..i18n.find('"').unwrap()];
            assert!(en.iter().any(|k| k == key), "{key} of index.html has no text");
        }
    }
}
