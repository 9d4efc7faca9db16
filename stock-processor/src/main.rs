//! The `stock-processor` binary: settings, telemetry, build, run.

use anyhow::Context;
use stock_processor::{Application, Settings};

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::load_layered().context("Failed to load settings")?;
    platform::telemetry::init("stock-processor", &settings.telemetry);
    let shutdown = platform::shutdown::on_signal();
    let application = Application::build(settings).await.context("Failed to build the stock processor")?;
    application.run_until_stopped(shutdown).await.context("The stock processor failed")?;
    // The spans still in the export batch leave before the process does.
    platform::telemetry::shutdown();
    Ok(())
}
