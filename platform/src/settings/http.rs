//! An HTTP listener.

use serde::{Deserialize, Serialize};

/// An HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self { host: "127.0.0.1".into(), port }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Binds the listener; returns it with the real port (port 0 picks one).
    pub async fn bind(&self) -> Result<(tokio::net::TcpListener, u16), BindError> {
        let address = self.address();
        let bound = async {
            let listener = tokio::net::TcpListener::bind(&address).await?;
            let port = listener.local_addr()?.port();
            Ok((listener, port))
        };
        bound.await.map_err(|source| BindError { address, source })
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind {address}: {source}")]
pub struct BindError {
    pub address: String,
    #[source]
    pub source: std::io::Error,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self::on_port(0)
    }
}
