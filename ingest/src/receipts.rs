//! Receipts: every 202 carries a signed statement that the entry was accepted
//! and its place in line, which the member can show if they are not paid.
//!
//! A receipt signs five facts (event, entry id, member, ticket, accept time
//! on Redis' clock) in **canonical bytes** anyone can rebuild without our
//! code (docs/api.md "Receipts"):
//!
//! ```text
//! firstcome-receipt/v1\n
//! event_id=<event id>\n
//! entry_id=<entry id, a hyphenated lower-case UUID>\n
//! member=<member id>\n
//! ticket=<decimal>\n
//! accepted_at_ms=<decimal, Unix milliseconds>\n
//! ```
//!
//! with Ed25519 (RFC 8032, deterministic: the same entry always gets the same
//! signature, so a resumed entry's receipt is the first one). The ids are
//! the ones every consumer accepts (`schemas::check_identity`: no white
//! space), so a line break can never be smuggled into a field. The key is the
//! operator's (`receipts.signing_key`, PKCS#8 PEM); its public half is served
//! at `GET /api/receipts/key` (SPKI PEM, so `openssl pkeyutl -verify` checks
//! a receipt too) and named in every receipt by its id (the first 8 bytes of
//! SHA-256 of the raw public key, hex), so a rotated key is told apart.
//!
//! Signing is AWS-LC's Ed25519 (already in the build as rustls' provider):
//! its assembly field arithmetic signs in a third of ed25519-dalek's time on
//! x86-64 (10 µs against 31 µs, ingest/benches/receipts.rs), and every 202
//! pays for one signature.
//! Ed25519 is deterministic, so the bytes are the very signature dalek
//! gives (tested below); dalek keeps the keys' PEM forms and the
//! verification, which `firstcome receipt verify` uses.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, SigningKey, Verifier as _, VerifyingKey};
use platform::settings::{Environment, SettingsError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line of a receipt's canonical bytes: the format and its version.
pub const RECEIPT_FORMAT: &str = "firstcome-receipt/v1";

/// The development signing key (local only; ingest refuses it elsewhere,
/// like the development token secret). Published here, so it proves nothing.
pub const DEV_SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAP7/BFtK97F570DxSYyyoK63j0mhtlCHYsj65FMAvut
-----END PRIVATE KEY-----
";

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipts.signing_key is not an Ed25519 PKCS#8 PEM private key: {0}")]
    SigningKey(String),
    #[error("not an Ed25519 public key (SPKI PEM, or 32 bytes in base64): {0}")]
    PublicKey(String),
    #[error("receipt field {0}")]
    Field(String),
    #[error("receipt format {0:?} is not {RECEIPT_FORMAT}")]
    Format(String),
    #[error("receipt was signed with key {receipt} but the key given is {given}")]
    KeyId { receipt: String, given: String },
    #[error("receipt signature is not base64 of 64 bytes")]
    SignatureEncoding,
    #[error("receipt signature does not verify: the receipt was altered or not signed by this key")]
    BadSignature,
    #[error("the signing library refused the key or the message")]
    Signing,
}

/// The facts a receipt signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFacts {
    pub event_id: String,
    pub entry_id: String,
    pub member: String,
    /// The member's place in line (0: an entry that came without one).
    pub ticket: i64,
    /// When the admit script accepted the entry, on Redis' clock.
    pub accepted_at_ms: i64,
}

impl ReceiptFacts {
    /// The bytes that are signed (see the module's documentation); refused
    /// when an id is not one any consumer accepts.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let mut bytes = Vec::with_capacity(CANONICAL_CAPACITY);
        self.write_canonical(&mut bytes)?;
        Ok(bytes)
    }

    /// Writes the canonical bytes into `out` (cleared first): the signer
    /// reuses one buffer per thread.
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        use std::io::Write as _;
        let identity =
            schemas::check_identity(&self.event_id, &self.entry_id, &self.member).map_err(ReceiptError::Field)?;
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{RECEIPT_FORMAT}\nevent_id={}\nentry_id={}\nmember={}\nticket={}\naccepted_at_ms={}\n",
            identity.event_id,
            identity.entry_id.hyphenated(),
            identity.user_id,
            self.ticket,
            self.accepted_at_ms
        );
        Ok(())
    }
}

/// A signed receipt, as the 202 carries it and `firstcome receipt verify`
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`RECEIPT_FORMAT`].
    pub format: String,
    #[serde(flatten)]
    pub facts: ReceiptFacts,
    /// Which key signed it ([`PublicKey::key_id`]).
    pub key_id: String,
    /// Ed25519 over the canonical bytes, standard base64 (64 bytes).
    pub signature: String,
}

/// Room for a receipt's canonical bytes with ids of ordinary length.
const CANONICAL_CAPACITY: usize = 256;

/// The operator's signing key (built once at start).
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    /// The same key in AWS-LC, which signs (see the module's documentation);
    /// `None` only if AWS-LC refused a key dalek took (never seen for a
    /// 32-byte seed), and dalek signs instead: the same signature, slower.
    fast: Option<aws_lc_rs::signature::Ed25519KeyPair>,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.public.key_id).finish_non_exhaustive()
    }
}

impl Signer {
    /// The key in `pem` (PKCS#8, `-----BEGIN PRIVATE KEY-----`, what
    /// `openssl genpkey -algorithm ed25519` and `firstcome receipt keygen` write).
    pub fn from_pem(pem: &str) -> Result<Self, ReceiptError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| ReceiptError::SigningKey(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    pub fn from_key(key: SigningKey) -> Self {
        let public = PublicKey::new(key.verifying_key());
        // Checked against dalek's public key: AWS-LC signs for the key we publish.
        let fast =
            aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(key.as_bytes(), public.key.as_bytes())
                .inspect_err(|error| tracing::warn!(%error, "AWS-LC refused the receipt key: dalek signs"))
                .ok();
        Self { key, fast, public }
    }

    /// The key everyone checks receipts with.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `facts`.
    pub fn sign(&self, facts: ReceiptFacts) -> Result<Receipt, ReceiptError> {
        thread_local! {
            static CANONICAL: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(CANONICAL_CAPACITY));
        }
        let signature = CANONICAL.with_borrow_mut(|bytes| {
            facts.write_canonical(bytes)?;
            match &self.fast {
                Some(fast) => {
                    fast.try_sign(bytes).map(|s| BASE64.encode(s.as_ref())).map_err(|_| ReceiptError::Signing)
                }
                None => Ok(BASE64.encode(ed25519_dalek::Signer::sign(&self.key, bytes).to_bytes())),
            }
        })?;
        Ok(Receipt { format: RECEIPT_FORMAT.to_string(), facts, key_id: self.public.key_id.clone(), signature })
    }
}

/// The public half of the signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self { key, key_id: hex::encode(&digest[..8]) }
    }

    /// Reads an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or the raw 32 bytes in
    /// standard base64 (the `public_key` of `GET /api/receipts/key`).
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text).map_err(|e| ReceiptError::PublicKey(e.to_string()))?
        } else {
            let bytes = BASE64.decode(text).map_err(|e| ReceiptError::PublicKey(e.to_string()))?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| ReceiptError::PublicKey("not 32 bytes".to_string()))?;
            VerifyingKey::from_bytes(&bytes).map_err(|e| ReceiptError::PublicKey(e.to_string()))?
        };
        Ok(Self::new(key))
    }

    /// The first 8 bytes of SHA-256 of the raw key, hex: what a receipt names.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte key, standard base64.
    pub fn base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    /// SPKI PEM, for openssl and other tools.
    pub fn pem(&self) -> String {
        // Encoding 32 known-good bytes cannot fail; an empty string would
        // only make a checker's parse fail loudly.
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Whether `receipt` was signed by this key over exactly its facts.
    /// Strict verification (RFC 8032 with the small-order and malleability
    /// checks), so one receipt has one valid signature.
    pub fn verify(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        if receipt.format != RECEIPT_FORMAT {
            return Err(ReceiptError::Format(receipt.format.clone()));
        }
        if receipt.key_id != self.key_id {
            return Err(ReceiptError::KeyId { receipt: receipt.key_id.clone(), given: self.key_id.clone() });
        }
        let bytes = BASE64.decode(&receipt.signature).map_err(|_| ReceiptError::SignatureEncoding)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| ReceiptError::SignatureEncoding)?;
        let signature = Signature::from_bytes(&bytes);
        self.key
            .verify_strict(&receipt.facts.canonical_bytes()?, &signature)
            .map_err(|_| ReceiptError::BadSignature)?;
        // `verify_strict` and `verify` agree on every honest signature;
        // the plain one also runs so a checker on either rule agrees with us.
        self.key.verify(&receipt.facts.canonical_bytes()?, &signature).map_err(|_| ReceiptError::BadSignature)
    }
}

/// `receipts.*` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiptSettings {
    /// The Ed25519 private key in PKCS#8 PEM (`FIRSTCOME_RECEIPTS__SIGNING_KEY`).
    /// Outside local it must not be the development key.
    #[serde(serialize_with = "platform::settings::secret::expose")]
    pub signing_key: SecretString,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Self { signing_key: SecretString::from(DEV_SIGNING_KEY_PEM) }
    }
}

impl ReceiptSettings {
    /// The signer of these settings; outside local, never the development key.
    pub fn signer(&self, environment: Environment) -> Result<Signer, SettingsError> {
        let signer =
            Signer::from_pem(self.signing_key.expose_secret()).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        if environment != Environment::Local {
            let dev = Signer::from_pem(DEV_SIGNING_KEY_PEM).map_err(|e| SettingsError::Invalid(e.to_string()))?;
            if dev.public_key() == signer.public_key() {
                return Err(SettingsError::Invalid(
                    "receipts.signing_key is the development key (environment = production)".into(),
                ));
            }
        }
        Ok(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ReceiptFacts {
        ReceiptFacts {
            event_id: "ev-1".into(),
            entry_id: "0190f2a4-7b1c-7d2e-8f00-0123456789ab".into(),
            member: "m-42".into(),
            ticket: 812,
            accepted_at_ms: 1_767_225_600_123,
        }
    }

    fn dev() -> Signer {
        Signer::from_pem(DEV_SIGNING_KEY_PEM).unwrap()
    }

    #[test]
    fn the_canonical_bytes_are_the_documented_lines() {
        let text = String::from_utf8(facts().canonical_bytes().unwrap()).unwrap();
        assert_eq!(
            text,
            "firstcome-receipt/v1\nevent_id=ev-1\nentry_id=0190f2a4-7b1c-7d2e-8f00-0123456789ab\n\
             member=m-42\nticket=812\naccepted_at_ms=1767225600123\n"
        );
    }

    #[test]
    fn a_signed_receipt_verifies_with_the_published_key_in_either_encoding() {
        let signer = dev();
        let receipt = signer.sign(facts()).unwrap();
        PublicKey::parse(&signer.public_key().pem()).unwrap().verify(&receipt).unwrap();
        PublicKey::parse(&signer.public_key().base64()).unwrap().verify(&receipt).unwrap();
        // Deterministic: a resumed entry gets the very same receipt.
        assert_eq!(signer.sign(facts()).unwrap(), receipt);
    }

    #[test]
    fn any_altered_fact_breaks_the_signature() {
        let signer = dev();
        let receipt = signer.sign(facts()).unwrap();
        let mut earlier = receipt.clone();
        earlier.facts.ticket = 1;
        let mut other = receipt.clone();
        other.facts.member = "m-43".into();
        let mut sooner = receipt.clone();
        sooner.facts.accepted_at_ms -= 1;
        for altered in [earlier, other, sooner] {
            assert!(matches!(signer.public_key().verify(&altered), Err(ReceiptError::BadSignature)));
        }
    }

    #[test]
    fn the_signature_is_the_one_ed25519_dalek_gives_for_the_same_key() {
        use ed25519_dalek::Signer as _;
        let dalek = SigningKey::from_pkcs8_pem(DEV_SIGNING_KEY_PEM).unwrap();
        for (seed, ticket) in [(None, 812), (Some([7; 32]), 1), (Some([0xa5; 32]), i64::MAX)] {
            let key = seed.map(|s| SigningKey::from_bytes(&s)).unwrap_or_else(|| dalek.clone());
            let signer = Signer::from_key(key.clone());
            assert!(signer.fast.is_some(), "AWS-LC signs");
            let facts = ReceiptFacts { ticket, ..facts() };
            let expected = key.sign(&facts.canonical_bytes().unwrap());
            let receipt = signer.sign(facts).unwrap();
            assert_eq!(receipt.signature, BASE64.encode(expected.to_bytes()));
        }
    }

    #[test]
    fn a_long_id_still_gets_its_whole_canonical_bytes() {
        let signer = dev();
        // The longest ids a consumer accepts: past the buffer's first capacity.
        let long = ReceiptFacts { event_id: "e".repeat(128), member: "m".repeat(128), ..facts() };
        assert!(long.canonical_bytes().unwrap().len() > CANONICAL_CAPACITY);
        let receipt = signer.sign(long.clone()).unwrap();
        signer.public_key().verify(&receipt).unwrap();
        // The thread's buffer grew for it; a short receipt after it is still its own.
        let short = signer.sign(facts()).unwrap();
        signer.public_key().verify(&short).unwrap();
        assert_ne!(receipt.signature, short.signature);
    }

    #[test]
    fn another_key_is_named_not_silently_failed() {
        let receipt = dev().sign(facts()).unwrap();
        let other = Signer::from_key(SigningKey::from_bytes(&[7; 32]));
        assert!(matches!(other.public_key().verify(&receipt), Err(ReceiptError::KeyId { .. })));
    }

    #[test]
    fn a_field_with_a_line_break_is_never_signed() {
        let mut smuggled = facts();
        smuggled.member = "m-1\nticket=1".into();
        assert!(matches!(dev().sign(smuggled), Err(ReceiptError::Field(_))));
    }

    #[test]
    fn production_refuses_the_development_key() {
        let settings = ReceiptSettings::default();
        assert!(settings.signer(Environment::Local).is_ok());
        assert!(settings.signer(Environment::Production).is_err());
        let garbage = ReceiptSettings { signing_key: SecretString::from("not a key") };
        assert!(garbage.signer(Environment::Local).is_err());
    }
}
