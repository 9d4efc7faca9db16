//! How to reach the schema registry: its URL, a deadline per call, and the
//! basic-auth credentials a hosted registry asks for. The codec and the
//! admin client both build their HTTP calls from one [`RegistryConnection`],
//! so a credential set once reaches every call.

use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::SrSettings;

use crate::codec::CodecError;

/// Basic-auth credentials (a hosted registry's API key and secret).
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"[redacted]").finish()
    }
}

/// The registry's Confluent-compatible API and how to call it.
#[derive(Debug, Clone)]
pub struct RegistryConnection {
    /// Base URL of the Confluent API (Apicurio: `…/apis/ccompat/v7`).
    pub url: String,
    pub timeout: Duration,
    pub basic_auth: Option<BasicAuth>,
}

impl RegistryConnection {
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self { url: url.trim_end_matches('/').to_string(), timeout, basic_auth: None }
    }

    pub fn with_basic_auth(mut self, username: &str, password: &str) -> Self {
        self.basic_auth = Some(BasicAuth { username: username.into(), password: password.into() });
        self
    }

    /// The registry client's settings (the decoder and `post_schema`).
    pub fn sr_settings(&self) -> Result<SrSettings, CodecError> {
        let mut builder = SrSettings::new_builder(self.url.clone());
        builder.set_timeout(self.timeout).no_proxy();
        if let Some(auth) = &self.basic_auth {
            builder.set_basic_authorization(&auth.username, Some(&auth.password));
        }
        builder.build().map_err(|e| CodecError::Unavailable(e.to_string()))
    }

    /// A client for the calls the registry client library does not make.
    pub(crate) fn http(&self) -> Result<reqwest::Client, CodecError> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .no_proxy()
            .build()
            .map_err(|e| CodecError::Unavailable(e.to_string()))
    }

    /// A request to `path` under the API's base URL, with the credentials.
    pub(crate) fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = http
            .request(method, format!("{}{path}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json");
        match &self.basic_auth {
            Some(auth) => request.basic_auth(&auth.username, Some(&auth.password)),
            None => request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_not_in_debug_output() {
        let connection = RegistryConnection::new("https://registry.example/", Duration::from_secs(1))
            .with_basic_auth("api-key", "s3cret");
        let debug = format!("{connection:?}");
        assert!(debug.contains("api-key") && !debug.contains("s3cret"), "{debug}");
        assert_eq!(connection.url, "https://registry.example");
    }

    #[test]
    fn every_call_carries_the_basic_auth_credentials() {
        let connection = RegistryConnection::new("https://registry.example/api", Duration::from_secs(1))
            .with_basic_auth("api-key", "s3cret");
        let http = connection.http().expect("client");
        let request = connection.request(&http, reqwest::Method::POST, "/subjects/s-value").build().expect("request");
        assert_eq!(request.url().as_str(), "https://registry.example/api/subjects/s-value");
        // base64("api-key:s3cret")
        let authorization = request.headers().get("authorization").map(|v| v.to_str().unwrap_or_default().to_string());
        assert_eq!(authorization.as_deref(), Some("Basic YXBpLWtleTpzM2NyZXQ="));
        let anonymous = RegistryConnection::new("https://registry.example/api", Duration::from_secs(1));
        let request = anonymous.request(&http, reqwest::Method::GET, "/config").build().expect("request");
        assert!(request.headers().get("authorization").is_none());
    }
}
