//! The `ingest` binary: settings, telemetry, build, run until a signal.

use anyhow::Context;
use ingest::{Application, Settings};

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::load_layered().context("Failed to load settings")?;
    platform::telemetry::init("ingest", &settings.telemetry);
    let shutdown = platform::shutdown::on_signal();
    let application = Application::build(settings).await.context("Failed to build ingest")?;
    application.run_until_stopped(shutdown).await.context("ingest stopped with an error")?;
    // The spans still in the export batch leave before the process does.
    platform::telemetry::shutdown();
    Ok(())
}
