//! `firstcome-lab`: the lab's command (load, chaos, demo, the drill, clean-up, the
//! provider simulator). Thin: parse, load settings, call the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use firstcome_cli::exit::{classify, Exit};
use firstcome_cli::CliSettings;
use firstcome_lab::output::{self, Format, Output};
use firstcome_lab::{chaos, cleanup, demo, drill, rush, CheckFailed};

#[derive(Parser)]
#[command(name = "firstcome-lab", version, about = "firstcome's lab: rush, chaos, demo, drill on the local stack")]
struct Cli {
    /// Log more on stderr: -v info, -vv debug (quiet by default: warnings and errors).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// What goes to stdout: lines for people (text), or one JSON document, the
    /// command's report (json; the progress then goes to stderr).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fire an opening rush at running ingest instances: the drill's open-loop load generator
    /// (loopback; stops by itself). With --drain-secs it reports on the pipeline too.
    Rush(rush::command::RushArgs),
    /// The chaos suite: a rush on the three-broker Kafka and the Sentinel-managed Redis while
    /// processes, brokers and stores fail at the seed's moments; then every invariant checked.
    /// Run with the settings of `stack env kafka3 redis-sentinel` (scripts/chaos.sh).
    Chaos(chaos::ChaosArgs),
    /// The opening rush on the local stack: seed, create an event, start every service, fire, drain, check.
    Demo(demo::DemoArgs),
    /// The opening-rush drill's rush (scripts/drill.sh runs it after the baselines): seed, start
    /// every service as its own process, create the event, fire, drain, write report.json and
    /// rush.png into --out with each service's peak RSS, stop every service.
    Drill(drill::DrillArgs),
    /// Remove what test runs left on this stack: t_* databases, t-* topics and subjects.
    /// Refused outside the local environment.
    CleanupTests,
    /// Run the gift provider's local simulator (contract: provider-sim/CONTRACT.md).
    /// Settings: FIRSTCOME_HTTP__PORT (8090), FIRSTCOME_FAULTS__…, or a FIRSTCOME_CONFIG file.
    ProviderSim,
}

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings: CliSettings = match firstcome_cli::app::load_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("firstcome-lab: {error:#}");
            return Exit::Usage.into();
        }
    };
    settings.telemetry.log_filter = firstcome_cli::app::log_filter(&settings.telemetry.log_filter, cli.verbose);
    platform::telemetry::init("firstcome-lab", &settings.telemetry);
    output::set_format(cli.format);
    let exit = match run(cli.command, &settings, cli.format).await {
        Ok(output) => {
            print!("{}", output.as_ref().map(|o| o.render(cli.format)).unwrap_or_default());
            match output.and_then(|o| o.failed) {
                // The statuses of firstcome's (docs/operations.md): a broken invariant is 1.
                Some(why) => {
                    eprintln!("firstcome-lab: {why}");
                    Exit::CheckFailed
                }
                None => Exit::Ok,
            }
        }
        // The statuses of firstcome's (docs/operations.md): a broken invariant is 1.
        Err(error) if error.downcast_ref::<CheckFailed>().is_some() => {
            eprintln!("firstcome-lab: {error}");
            Exit::CheckFailed
        }
        Err(error) => {
            let (exit, message) = classify(&error, &settings);
            eprintln!("firstcome-lab: {message}");
            exit
        }
    };
    platform::telemetry::shutdown();
    exit.into()
}

/// What the command found (none for a server, which says its address when it listens).
async fn run(command: Command, settings: &CliSettings, format: Format) -> anyhow::Result<Option<Output>> {
    match command {
        Command::Rush(args) => rush::command::run(settings, args, format).await.map(Some),
        Command::Chaos(args) => chaos::command(settings, args).await.map(Some),
        Command::Demo(args) => demo::command(settings, args).await.map(Some),
        Command::Drill(args) => drill::command(settings, args, format).await.map(Some),
        Command::CleanupTests => {
            let cleaned = cleanup::run(settings).await?;
            let text = format!(
                "removed {} databases, {} member schemas, {} topics, {} subjects, {} ACLs",
                cleaned.databases, cleaned.member_schemas, cleaned.topics, cleaned.subjects, cleaned.acls
            );
            Ok(Some(Output::new(text, &cleaned)))
        }
        Command::ProviderSim => {
            let sim_settings: provider_sim::Settings =
                platform::settings::load().context("Failed to load provider-sim settings")?;
            let app = provider_sim::Application::build(sim_settings).await?;
            // Said when it listens, not when it stops: the output is the address.
            let listening = Output::new(
                format!("provider simulator on {}", app.base_url()),
                &serde_json::json!({
                    "base_url": app.base_url(),
                }),
            );
            print!("{}", listening.render(format));
            app.run_until_stopped(platform::shutdown::on_signal()).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_accepted_anywhere_on_the_line_and_only_text_or_json() {
        let cli = Cli::try_parse_from(["firstcome-lab", "rush", "ev-1", "--format", "json"]).expect("parsed");
        assert_eq!(cli.format, Format::Json);
        let cli = Cli::try_parse_from(["firstcome-lab", "--format", "json", "chaos", "--seed", "3"]).expect("parsed");
        assert_eq!(cli.format, Format::Json);
        assert_eq!(Cli::try_parse_from(["firstcome-lab", "demo"]).expect("parsed").format, Format::Text);
        assert!(Cli::try_parse_from(["firstcome-lab", "demo", "--format", "yaml"]).is_err());
        assert!(Cli::try_parse_from(["firstcome-lab", "rush", "ev-1", "--json"]).is_err(), "--format json replaced it");
        let cli =
            Cli::try_parse_from(["firstcome-lab", "drill", "--members", "20000", "--format", "json"]).expect("parsed");
        assert_eq!(cli.format, Format::Json);
    }

    #[test]
    fn the_drill_takes_the_scripts_options_with_the_scripts_defaults() {
        let Command::Drill(args) = Cli::try_parse_from(["firstcome-lab", "drill"]).expect("parsed").command else {
            panic!("not the drill");
        };
        assert_eq!((args.members, args.stock, args.connections), (880_000, 10_000, 512));
        assert_eq!((args.peak_rate, args.max_wait_secs, args.out.to_str()), (20_000.0, 60, Some("docs/drill")));
        assert!(!args.waiting_room.enabled);
        let line = [
            "firstcome-lab",
            "drill",
            "--members",
            "20000",
            "--stock",
            "1000",
            "--peak-rate",
            "2000",
            "--connections",
            "64",
            "--waiting-room",
            "--waiting-room-rate",
            "500",
            "--waiting-room-burst",
            "100",
            "--pre-queue",
            "fifo",
            "--max-wait-secs",
            "30",
            "--out",
            "/tmp/drill",
        ];
        let Command::Drill(args) = Cli::try_parse_from(line).expect("parsed").command else {
            panic!("not the drill");
        };
        assert_eq!((args.members, args.stock, args.peak_rate, args.connections), (20_000, 1_000, 2_000.0, 64));
        let room = &args.waiting_room;
        assert_eq!((room.enabled, room.rate_per_sec, room.burst), (true, Some(500), Some(100)));
        assert_eq!((args.max_wait_secs, args.out.to_str()), (30, Some("/tmp/drill")));
        assert!(Cli::try_parse_from(["firstcome-lab", "drill", "--pre-queue", "random"]).is_err());
    }
}
