//! The command line: global flags, the commands, and one run from parsed
//! arguments to an exit status. Each command's arguments and work are its
//! module's (`commands/`); this file only routes.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::commands::{
    db, dlq, event, gifts, groups, members, rebuild, receipt, reconcile, schemas, token, topics, verify,
};
use crate::exit::{classify, Exit};
use crate::output::{Format, Output};
use crate::reach::{self, Need};
use crate::settings::CliSettings;

#[derive(Debug, Parser)]
#[command(
    name = "firstcome",
    version,
    about = "Operate firstcome: first-come-first-served reward events on Kafka",
    after_help = "Exit status: 0 done, 1 a check does not hold, 2 bad usage, 3 a service unreachable, 4 other failure (docs/operations.md)."
)]
pub struct Cli {
    /// How to print the result: text for people, json for scripts (one document on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Log more on stderr: -v info, -vv debug, -vvv trace (quiet by default: warnings and errors).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Who runs the command, recorded with every operator action (default: the OS user).
    #[arg(long, global = true, env = "FIRSTCOME_OPERATOR_NAME")]
    pub operator: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Database schema.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Kafka topics: create them, show the topology, describe the live cluster beside it.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Consumer groups: state, members and lag per partition.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Avro schemas in the registry.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// The shop's member database: `seed` writes its primary (playing the shop) and waits for the replica.
    #[command(subcommand)]
    Members(members::MembersCommand),
    /// Reward events.
    #[command(subcommand)]
    Event(event::EventCommand),
    /// Mint a member bearer token (signed with auth.token_secret, for ingest's audience).
    Token(token::TokenArgs),
    /// Check the invariants (exit 1 when one does not hold); with --repair, rebuild the
    /// event's Redis state from the Kafka log first.
    Reconcile(reconcile::ReconcileArgs),
    /// Rebuild a store from the Kafka log: an event's Redis stock state, or the PostgreSQL projections.
    #[command(subcommand)]
    Rebuild(rebuild::RebuildCommand),
    /// Dead letters of a topic: list them, or replay them to their source topic.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Gifts the sender has not settled yet.
    #[command(subcommand)]
    Gifts(gifts::GiftsCommand),
    /// Receipts of accepted entries: verify one (signature, Merkle proof), make a signing key.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Replay what anyone may check: the waiting room's pre-queue shuffle.
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
}

impl Command {
    /// The stores the command cannot work without, probed before it runs.
    fn needs(&self) -> &'static [Need] {
        match self {
            Command::Db(c) => c.needs(),
            Command::Topics(c) => c.needs(),
            Command::Groups(c) => c.needs(),
            Command::Schemas(c) => c.needs(),
            Command::Members(c) => c.needs(),
            Command::Event(c) => c.needs(),
            Command::Token(a) => a.needs(),
            Command::Reconcile(a) => a.needs(),
            Command::Rebuild(c) => c.needs(),
            Command::Dlq(c) => c.needs(),
            Command::Gifts(c) => c.needs(),
            Command::Receipt(c) => c.needs(),
            Command::Verify(c) => c.needs(),
        }
    }

    async fn execute(self, settings: &CliSettings) -> anyhow::Result<Output> {
        match self {
            Command::Db(c) => db::command(settings, c).await,
            Command::Topics(c) => topics::command(settings, c).await,
            Command::Groups(c) => groups::command(settings, c).await,
            Command::Schemas(c) => schemas::command(settings, c).await,
            Command::Members(c) => members::command(settings, c).await,
            Command::Event(c) => event::command(settings, c).await,
            Command::Token(a) => token::command(settings, a),
            Command::Reconcile(a) => reconcile::command(settings, a).await,
            Command::Rebuild(c) => rebuild::command(settings, c).await,
            Command::Dlq(c) => dlq::command(settings, c).await,
            Command::Gifts(c) => gifts::command(settings, c).await,
            Command::Receipt(c) => receipt::command(c).await,
            Command::Verify(c) => verify::command(settings, c).await,
        }
    }
}

impl Cli {
    /// `--format`, or JSON when the command asks for it itself (`gifts parked --json`).
    fn output_format(&self) -> Format {
        match &self.command {
            Command::Gifts(c) if c.wants_json() => Format::Json,
            _ => self.format,
        }
    }
}

/// The settings from the environment (`FIRSTCOME_…`, `FIRSTCOME_CONFIG`),
/// validated, as the operator: the database owner locally.
pub fn load_settings() -> anyhow::Result<CliSettings> {
    let settings: CliSettings = platform::settings::load().context("Failed to load settings")?;
    settings.validate().context("Invalid settings")?;
    Ok(settings.with_local_credentials())
}

/// The log filter for `-v` count, unless the settings name one (and
/// `RUST_LOG` wins over both): quiet by default, so nothing comes before a
/// command's output but warnings, errors and the audit lines of operator
/// actions (`audit_trail`).
pub fn log_filter(configured: &str, verbose: u8) -> String {
    let default = platform::settings::TelemetrySettings::default().log_filter;
    if configured != default {
        return configured.to_string();
    }
    match verbose {
        0 => "warn,operator_audit=info",
        1 => "info,rdkafka=warn",
        2 => "debug,rdkafka=info",
        _ => "trace",
    }
    .to_string()
}

/// Runs the parsed command line: probes the stores it needs, runs it,
/// prints its output in the format asked, and says how it ended.
pub async fn run(cli: Cli) -> ExitCode {
    let mut settings = match load_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("firstcome: {error:#}");
            return Exit::Usage.into();
        }
    };
    settings.telemetry.log_filter = log_filter(&settings.telemetry.log_filter, cli.verbose);
    settings.operator = cli.operator.clone();
    platform::telemetry::init("firstcome", &settings.telemetry);
    let format = cli.output_format();
    let command = cli.command;
    let result = async {
        reach::check(&settings, command.needs()).await?;
        command.execute(&settings).await
    }
    .await;
    let exit = match result {
        Ok(output) => {
            print!("{}", output.render(format));
            match output.failed {
                Some(why) => {
                    eprintln!("firstcome: {why}");
                    Exit::CheckFailed
                }
                None => Exit::Ok,
            }
        }
        Err(error) => {
            let (exit, message) = classify(&error, &settings);
            eprintln!("firstcome: {message}");
            exit
        }
    };
    platform::telemetry::shutdown();
    exit.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_gifts_are_listed_for_all_events_or_one() {
        assert!(Cli::try_parse_from(["firstcome", "gifts", "parked"]).is_ok());
        let cli = Cli::try_parse_from(["firstcome", "gifts", "parked", "--event", "ev-1", "--json"]).expect("parsed");
        assert_eq!(cli.output_format(), Format::Json);
    }

    #[test]
    fn token_ttl_is_capped_at_the_maximum_lifetime() {
        assert!(Cli::try_parse_from(["firstcome", "token", "m-1", "--ttl-secs", "3600"]).is_ok());
        assert!(Cli::try_parse_from(["firstcome", "token", "m-1"]).is_ok());
        for refused in ["3601", "86400", "0"] {
            assert!(Cli::try_parse_from(["firstcome", "token", "m-1", "--ttl-secs", refused]).is_err(), "{refused}");
        }
    }

    #[test]
    fn format_and_verbosity_are_accepted_anywhere_on_the_line() {
        let cli = Cli::try_parse_from(["firstcome", "topics", "describe", "--format", "json", "-vv"]).expect("parsed");
        assert_eq!((cli.format, cli.verbose), (Format::Json, 2));
        let cli = Cli::try_parse_from(["firstcome", "--format", "json", "groups", "describe", "--group", "stock"])
            .expect("parsed");
        assert_eq!(cli.format, Format::Json);
        assert!(Cli::try_parse_from(["firstcome", "topics", "show", "--format", "yaml"]).is_err());
    }

    #[test]
    fn quiet_by_default_and_more_with_each_v_unless_the_settings_name_a_filter() {
        let default = platform::settings::TelemetrySettings::default().log_filter;
        assert_eq!(log_filter(&default, 0), "warn,operator_audit=info");
        assert!(log_filter(&default, 1).starts_with("info"));
        assert_eq!(log_filter("debug,sqlx=warn", 0), "debug,sqlx=warn");
    }

    #[test]
    fn the_lab_commands_are_not_the_operators() {
        for lab in ["rush", "chaos", "demo", "cleanup-tests", "provider-sim"] {
            assert!(Cli::try_parse_from(["firstcome", lab]).is_err(), "{lab}");
        }
    }
}
