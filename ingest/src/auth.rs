//! Member bearer tokens: HS256 JWTs with `sub` = member id, `iss`, `aud`,
//! `iat`, `exp`.
//!
//! The shop's login service mints them (here: `firstcome token`, which calls
//! [`mint`]); ingest only verifies. Only HS256 is accepted, so a token cannot
//! pick a weaker algorithm (or `none`) for itself. The audience names ingest,
//! so a token the login service signs for another of its services (with the
//! same secret) is refused here. A leaked token is worth little because
//! what it may still live is bounded from ingest's clock, not only from its
//! own claims: a token whose lifetime (`exp − iat`) is over the configured
//! maximum is refused, and so is one issued in the future (`iat` beyond the
//! clock-skew leeway), one not valid yet (`nbf`), and one that would live
//! longer than the maximum from now (`exp − now`). Without the last two, a
//! token stamped `iat` = ten years ahead with `exp` = `iat` + 1 h passed the
//! lifetime rule and stayed good for ten years.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The secret of the local stack; production configures its own (and
/// refuses to start on this one: `platform::settings::Environment`).
pub const DEV_SECRET: &str = platform::settings::DEV_TOKEN_SECRET;
/// The issuer ingest expects unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "firstcome";
/// The audience ingest expects unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "firstcome-ingest";
/// The longest lifetime (`exp − iat`) accepted unless configured otherwise.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3_600);
/// Clock skew tolerated between the minting service and ingest.
const LEEWAY_SECS: u64 = 5;
/// The longest `Authorization` header looked at. A token ingest accepts is a
/// few hundred bytes; a longer header is refused before it is decoded or its
/// HMAC computed, so a forger cannot make each refusal cost more by padding.
pub const MAX_AUTHORIZATION_BYTES: usize = 4_096;

/// Why a token was refused. Every variant answers 401; the variant is logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("authorization header over {MAX_AUTHORIZATION_BYTES} bytes")]
    Oversized,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("invalid member id in token")]
    BadSubject,
    #[error("token lifetime {0} s is over the maximum {1} s")]
    TooLong(i64, u64),
    #[error("token issued {0} s in the future")]
    IssuedInFuture(i64),
    #[error("token expires in {0} s, over the maximum lifetime {1} s")]
    ExpiresTooLate(i64, u64),
    #[error("could not sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// A verified member id (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

impl MemberId {
    /// Accepts what every consumer accepts as a `user_id` ([`crate::ids`]):
    /// a token whose subject a consumer would refuse is refused here (401).
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        match crate::ids::is_valid_id(value) {
            true => Ok(Self(value.to_string())),
            false => Err(AuthError::BadSubject),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// Not before: optional; when present it must not be in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
}

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub max_lifetime: Duration,
}

impl Default for Expected<'static> {
    fn default() -> Self {
        Self { issuer: DEFAULT_ISSUER, audience: DEFAULT_AUDIENCE, max_lifetime: DEFAULT_MAX_LIFETIME }
    }
}

/// Mints a token for `member_id` from the default issuer for ingest's
/// default audience, valid for `ttl`.
pub fn mint(secret: &SecretString, member_id: &str, ttl: Duration) -> Result<String, AuthError> {
    mint_with_issuer(secret, DEFAULT_ISSUER, member_id, ttl)
}

/// Mints a token for `member_id` from `issuer` (default audience), valid for `ttl`.
pub fn mint_with_issuer(
    secret: &SecretString,
    issuer: &str,
    member_id: &str,
    ttl: Duration,
) -> Result<String, AuthError> {
    mint_for(secret, issuer, DEFAULT_AUDIENCE, member_id, ttl)
}

/// Mints a token for `member_id` from `issuer` for `audience`, valid for `ttl`.
pub fn mint_for(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    member_id: &str,
    ttl: Duration,
) -> Result<String, AuthError> {
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    sign(secret, issuer, audience, member_id, now, now.saturating_add(ttl))
}

fn sign(
    secret: &SecretString,
    issuer: &str,
    audience: &str,
    member_id: &str,
    iat: i64,
    exp: i64,
) -> Result<String, AuthError> {
    MemberId::parse(member_id)?;
    let claims =
        Claims { sub: member_id.to_string(), iss: issuer.to_string(), aud: audience.to_string(), iat, exp, nbf: None };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(AuthError::Sign)
}

/// Verifies a token against the defaults ([`Expected::default`]).
pub fn verify(secret: &SecretString, token: &str) -> Result<MemberId, AuthError> {
    verify_expected(secret, &Expected::default(), token)
}

/// Verifies a token from `issuer` with the default audience and lifetime.
pub fn verify_with_issuer(secret: &SecretString, issuer: &str, token: &str) -> Result<MemberId, AuthError> {
    verify_expected(secret, &Expected { issuer, ..Expected::default() }, token)
}

/// Verifies signature, algorithm, `exp`, `iss`, `aud` and the lifetime
/// (`exp − iat` at most `max_lifetime`); returns the member.
pub fn verify_expected(secret: &SecretString, expected: &Expected<'_>, token: &str) -> Result<MemberId, AuthError> {
    Verifier::new(secret, expected).verify(token)
}

/// A token verifier, built once per process from the secret and the
/// expectations: the decoding key and the validation rules allocate, and
/// building them per request was a measurable share of ingest's CPU at tens
/// of thousands of requests a second.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is the secret: never printed.
        f.debug_struct("Verifier").field("max_lifetime_secs", &self.max_lifetime_secs).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(secret: &SecretString, expected: &Expected<'_>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[expected.issuer]);
        validation.set_audience(&[expected.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS;
        // `nbf` is optional, but when a token carries it, it holds.
        validation.validate_nbf = true;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            max_lifetime_secs: expected.max_lifetime.as_secs(),
        }
    }

    /// Verifies signature, algorithm, `exp`, `nbf`, `iss`, `aud` and the
    /// lifetime; returns the member.
    pub fn verify(&self, token: &str) -> Result<MemberId, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        self.check_lifetime(&data.claims, chrono::Utc::now().timestamp())?;
        MemberId::parse(&data.claims.sub)
    }

    /// The lifetime rules on the clock of ingest (`now`, Unix seconds): the
    /// claims alone cannot be trusted to bound how long a token lives.
    fn check_lifetime(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let max = self.max_lifetime_secs;
        let max_secs = i64::try_from(max).unwrap_or(i64::MAX);
        let leeway = LEEWAY_SECS as i64;
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > max_secs {
            return Err(AuthError::TooLong(lifetime, max));
        }
        let ahead = claims.iat.saturating_sub(now);
        if ahead > leeway {
            return Err(AuthError::IssuedInFuture(ahead));
        }
        // Implied by the two rules above; kept so that the bound this whole
        // function exists for is stated once, on its own.
        let remaining = claims.exp.saturating_sub(now);
        if remaining > max_secs.saturating_add(leeway) {
            return Err(AuthError::ExpiresTooLate(remaining, max));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` header value (refused,
/// without looking further, when over [`MAX_AUTHORIZATION_BYTES`]).
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::Oversized);
    }
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    match scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        true => Ok(token.trim()),
        false => Err(AuthError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("test-secret")
    }

    #[test]
    fn a_minted_token_verifies_to_its_member() {
        let token = mint(&secret(), "m-1", Duration::from_secs(60)).unwrap();
        assert_eq!(verify(&secret(), &token).unwrap().as_str(), "m-1");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = mint(&SecretString::from("other"), "m-1", Duration::from_secs(60)).unwrap();
        assert!(verify(&secret(), &token).is_err());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = mint(&secret(), "m-1", Duration::from_secs(60)).unwrap();
        let other = mint(&secret(), "m-2", Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
        assert!(verify(&secret(), &forged).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let token = sign(&secret(), DEFAULT_ISSUER, DEFAULT_AUDIENCE, "m-1", now - 3_000, now - 60).unwrap();
        assert!(verify(&secret(), &token).is_err());
    }

    #[test]
    fn a_token_for_another_audience_or_none_is_refused() {
        let other = mint_for(&secret(), DEFAULT_ISSUER, "shop-web", "m-1", Duration::from_secs(60)).unwrap();
        assert!(verify(&secret(), &other).is_err());
        let expected = Expected { audience: "shop-web", ..Expected::default() };
        assert!(verify_expected(&secret(), &expected, &other).is_ok());
        // Signed with the right secret and issuer but no `aud` at all.
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({ "sub": "m-1", "iss": DEFAULT_ISSUER, "iat": now, "exp": now + 60 });
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"test-secret"))
                .unwrap();
        assert!(verify(&secret(), &token).is_err());
    }

    #[test]
    fn a_lifetime_over_the_maximum_is_refused() {
        let day = mint(&secret(), "m-1", Duration::from_secs(86_400)).unwrap();
        assert!(matches!(verify(&secret(), &day), Err(AuthError::TooLong(86_400, 3_600))));
        let hour = mint(&secret(), "m-1", DEFAULT_MAX_LIFETIME).unwrap();
        assert!(verify(&secret(), &hour).is_ok());
        let expected = Expected { max_lifetime: Duration::from_secs(600), ..Expected::default() };
        assert!(verify_expected(&secret(), &expected, &hour).is_err());
    }

    /// Signs arbitrary claims with the test secret (what a holder of the
    /// login service's key could mint).
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"test-secret"))
            .unwrap()
    }

    fn claims(iat: i64, exp: i64) -> serde_json::Value {
        serde_json::json!({ "sub": "m-1", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "iat": iat, "exp": exp })
    }

    #[test]
    fn a_token_issued_years_ahead_with_a_short_lifetime_is_refused() {
        // exp − iat is one hour, within the maximum; it would live ten years.
        let now = chrono::Utc::now().timestamp();
        let iat = now + 10 * 365 * 86_400;
        let token = signed(claims(iat, iat + 3_600));
        assert!(matches!(verify(&secret(), &token), Err(AuthError::IssuedInFuture(_))));
    }

    #[test]
    fn a_token_issued_in_the_future_beyond_the_leeway_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let ahead = signed(claims(now + 120, now + 600));
        assert!(matches!(verify(&secret(), &ahead), Err(AuthError::IssuedInFuture(_))));
        // A login service's clock a little ahead is tolerated.
        let skewed = signed(claims(now + 2, now + 600));
        assert!(verify(&secret(), &skewed).is_ok());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let mut later = claims(now, now + 600);
        later["nbf"] = serde_json::json!(now + 300);
        assert!(verify(&secret(), &signed(later)).is_err());
        let mut valid = claims(now, now + 600);
        valid["nbf"] = serde_json::json!(now - 1);
        assert!(verify(&secret(), &signed(valid)).is_ok());
    }

    #[test]
    fn a_token_without_iat_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let token = signed(
            serde_json::json!({ "sub": "m-1", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": now + 60 }),
        );
        assert!(verify(&secret(), &token).is_err());
    }

    #[test]
    fn the_lifetime_rules_hold_on_the_verifiers_clock() {
        let verifier = Verifier::new(&secret(), &Expected::default());
        let now = 1_000_000;
        let at = |iat, exp| Claims {
            sub: "m-1".into(),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            iat,
            exp,
            nbf: None,
        };
        assert!(verifier.check_lifetime(&at(now, now + 3_600), now).is_ok());
        assert!(verifier.check_lifetime(&at(now + 5, now + 3_605), now).is_ok(), "within the leeway");
        assert!(matches!(verifier.check_lifetime(&at(now + 6, now + 600), now), Err(AuthError::IssuedInFuture(6))));
        assert!(matches!(
            verifier.check_lifetime(&at(now - 100, now + 3_600), now),
            Err(AuthError::TooLong(3_700, 3_600))
        ));
        assert!(verifier.check_lifetime(&at(i64::MIN, i64::MAX), now).is_err(), "no overflow");
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        let token = mint_with_issuer(&secret(), "someone-else", "m-1", Duration::from_secs(60)).unwrap();
        assert!(verify(&secret(), &token).is_err());
        assert!(verify_with_issuer(&secret(), "someone-else", &token).is_ok());
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtLTEifQ."] {
            assert!(verify(&secret(), garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn an_unsigned_none_token_is_refused() {
        use base64_free::encode;
        let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
        let exp = chrono::Utc::now().timestamp() + 600;
        let payload = encode(
            format!(r#"{{"sub":"m-1","iss":"firstcome","aud":"firstcome-ingest","iat":{},"exp":{exp}}}"#, exp - 60)
                .as_bytes(),
        );
        assert!(verify(&secret(), &format!("{header}.{payload}.")).is_err());
    }

    #[test]
    fn member_ids_with_spaces_or_controls_are_refused() {
        assert!(MemberId::parse("").is_err());
        assert!(MemberId::parse("a b").is_err());
        assert!(MemberId::parse("a\nb").is_err());
        assert!(MemberId::parse(&"x".repeat(129)).is_err());
        assert!(MemberId::parse("member-42@shop").is_ok());
    }

    #[test]
    fn member_ids_consumers_would_refuse_are_refused() {
        for sub in ["m|1", "m{1}", "{m}"] {
            assert!(MemberId::parse(sub).is_err(), "{sub}");
        }
    }

    #[test]
    fn a_validly_signed_token_with_a_bad_subject_is_refused() {
        // `mint` refuses such a subject, so sign the claims by hand.
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "m|1".into(),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            iat: now,
            exp: now + 600,
            nbf: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"test-secret"))
                .unwrap();
        assert!(matches!(verify(&secret(), &token), Err(AuthError::BadSubject)));
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
        assert!(bearer(None).is_err());
    }

    #[test]
    fn an_oversized_authorization_header_is_refused_before_decoding() {
        let padded = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        assert!(matches!(bearer(Some(&padded)), Err(AuthError::Oversized)));
        let at_limit = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES - 7));
        assert!(bearer(Some(&at_limit)).is_ok());
    }

    /// URL-safe base64 without padding, enough to build a hostile token by hand.
    mod base64_free {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                let chars = chunk.len() + 1;
                for i in 0..chars {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
