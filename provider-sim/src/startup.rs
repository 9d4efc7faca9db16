//! Building and running the simulator (the zero2prod shape: build binds the
//! listener, so tests ask for port 0 and read the real one back).

use std::sync::Arc;

use platform::ops::{self, Health};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::routes::{router, SimState};
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error(transparent)]
    Bind(#[from] platform::settings::BindError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

pub struct Application {
    listener: TcpListener,
    port: u16,
    host: String,
    state: Arc<SimState>,
    api_key: secrecy::SecretString,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate().map_err(|e| Error::InvalidSettings(e.to_string()))?;
        platform::metrics::describe(crate::routes::METRICS);
        let seed = settings.seed.unwrap_or_else(rand::random);
        let (listener, port) = settings.http.bind().await?;
        tracing::info!(port, seed, faults = ?settings.faults.for_logs(), "provider simulator listening");
        Ok(Self {
            listener,
            port,
            host: settings.http.host,
            state: Arc::new(SimState::new(settings.faults, seed)),
            api_key: settings.api_key,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL clients use, e.g. the sender's `provider.base_url`.
    pub fn base_url(&self) -> String {
        let host = match self.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            host => host,
        };
        format!("http://{host}:{}", self.port)
    }

    /// Serves until `shutdown` is cancelled; held responses are released then.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let stopping = self.state.stopping.clone();
        // The sandbox has no dependencies: /healthz answers as long as it serves.
        let app = router(self.state, self.api_key).merge(ops::router(Health::new()));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                stopping.cancel();
            })
            .await
            .map_err(Error::Serve)?;
        tracing::info!("provider simulator stopped");
        Ok(())
    }
}
