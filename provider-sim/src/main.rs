//! `provider-sim`: the gift provider sandbox on its own port (8090 by default).

use anyhow::Context;
use provider_sim::{Application, Settings};

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::load_layered().context("Failed to load settings")?;
    platform::telemetry::init("provider-sim", &settings.telemetry);
    let shutdown = platform::shutdown::on_signal();
    let application = Application::build(settings).await.context("Failed to start the provider simulator")?;
    application.run_until_stopped(shutdown).await.context("The provider simulator failed")?;
    // The spans still in the export batch leave before the process does.
    platform::telemetry::shutdown();
    Ok(())
}
