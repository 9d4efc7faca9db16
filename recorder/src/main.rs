//! `recorder`: the `recording` consumer group as a process.

use anyhow::Context;

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: recorder::Settings = platform::settings::load_layered().context("Failed to load settings")?;
    platform::telemetry::init("recorder", &settings.telemetry);
    let shutdown = platform::shutdown::on_signal();
    let application = recorder::Application::build(settings).await.context("Failed to start the recorder")?;
    application.run_until_stopped(shutdown).await.context("The recorder stopped with an error")?;
    // The spans still in the export batch leave before the process does.
    platform::telemetry::shutdown();
    Ok(())
}
