//! Secrets written out in the clear, for one use only: a service's defaults
//! serialized as the first settings layer ([`super::load_layered`]). The
//! defaults are in this repository anyway; never serialize loaded settings
//! into a log or an answer.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

/// `#[serde(serialize_with = "platform::settings::secret::expose")]`
pub fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// [`expose`] of an optional secret.
pub fn expose_option<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose_secret()),
        None => serializer.serialize_none(),
    }
}
