//! `firstcome`: the operator's command. Thin: parse the arguments (bad
//! usage exits 2 here), then run them (`app::run`).

use std::process::ExitCode;

use clap::Parser;

use firstcome_cli::app::{self, Cli};

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    app::run(Cli::parse()).await
}
