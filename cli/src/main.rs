//! `firstcome`: the operator's command. Thin: parse, load settings, call the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use firstcome_cli::commands::{db, dlq, event, gifts, members, rebuild, reconcile, schemas, topics};
use firstcome_cli::CliSettings;
use platform::kafka::admin::Layout;

/// The longest `token --ttl-secs`: ingest's default maximum token lifetime.
const MAX_TOKEN_TTL_SECS: u64 = ingest::auth::DEFAULT_MAX_LIFETIME.as_secs();

#[derive(Parser)]
#[command(name = "firstcome", version, about = "First-come-first-served reward events on Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Database schema.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Avro schemas in the registry.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// The shop's member database: `seed` writes its primary (playing the shop) and waits for the replica.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Reward events.
    Event {
        #[command(subcommand)]
        command: EventCommand,
    },
    /// Mint a member bearer token (signed with auth.token_secret, for ingest's audience).
    Token {
        member_id: String,
        /// Lifetime; at most ingest's default auth.max_token_lifetime_secs (3600), which refuses longer ones.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
        ttl_secs: u64,
    },
    /// Check the invariants; with --repair, set the Redis counter back to what its decision log says.
    Reconcile {
        event_id: String,
        /// The gift provider, to compare its records too.
        #[arg(long)]
        provider_url: Option<String>,
        #[arg(long)]
        repair: bool,
    },
    /// Rebuild a store from the Kafka log: an event's Redis stock state, or the PostgreSQL projections.
    Rebuild {
        #[command(subcommand)]
        command: RebuildCommand,
    },
    /// Dead letters of a topic: list them, or replay them to their source topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Gifts the sender has not settled yet.
    Gifts {
        #[command(subcommand)]
        command: GiftsCommand,
    },
}

#[derive(Subcommand)]
enum RebuildCommand {
    /// Rebuild one event's stock state in Redis from survey-submitted, stock-decided and
    /// stock-released (read_committed) and swap it in atomically.
    Redis { event_id: String },
    /// Rebuild the PostgreSQL projections from Kafka into fresh tables and compare them
    /// with the live ones.
    Projections,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters of a source topic (e.g. survey-submitted).
    Show {
        topic: String,
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Produce the dead letters not replayed before back to their source topic.
    Replay {
        topic: String,
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
    },
}

#[derive(Subcommand)]
enum GiftsCommand {
    /// Gifts parked because the provider's answers settle nothing: each keeps its claim and is
    /// retried by the sender with backoff (docs/provider.md). Exit status 0 whether or not any are.
    Parked {
        /// Only this event's.
        #[arg(long)]
        event: Option<String>,
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations.
    Migrate,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the pipeline's topics and their dead-letter topics (idempotent).
    Create {
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        #[arg(long, default_value_t = 3)]
        dlq_partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Print the topology: each topic, who produces it, which groups consume it, its dead letters.
    Show,
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Register the schemas under their subjects with BACKWARD compatibility (idempotent).
    Register,
    /// Fail if the schemas (built in, or the .avsc files of --dir) are incompatible with the registry.
    Check {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Seed N members, a share of whom bought the product.
    Seed {
        count: usize,
        #[arg(long, default_value = "m")]
        prefix: String,
        #[arg(long, default_value = "coffee-beans-1kg")]
        product: String,
        #[arg(long, default_value_t = 0.9)]
        eligible_ratio: f64,
    },
}

#[derive(Subcommand)]
enum EventCommand {
    /// Create an event and load its eligible members into Redis.
    Create {
        /// Event id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "Survey reward: ₩10,000 coffee")]
        name: String,
        #[arg(long, default_value = "coffee-beans-1kg")]
        product: String,
        #[arg(long)]
        total: i32,
        #[arg(long, default_value_t = 0)]
        safety: i32,
        /// now, +10m, or RFC 3339
        #[arg(long, default_value = "now")]
        open_at: String,
        #[arg(long, default_value = "+1h")]
        close_at: String,
        /// Required question ids, comma separated.
        #[arg(long, value_delimiter = ',', default_values_t = event::DEFAULT_QUESTIONS.map(String::from))]
        questions: Vec<String>,
    },
    /// Show an event across PostgreSQL and Redis.
    Show { event_id: String },
    /// Close an event now.
    Close { event_id: String },
}

/// mimalloc: glibc malloc/free was a quarter of ingest's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: CliSettings = platform::settings::load().context("Failed to load settings")?;
    settings.validate().context("Invalid settings")?;
    let settings = settings.with_local_credentials();
    platform::telemetry::init("firstcome", &settings.telemetry);
    match cli.command {
        Command::Db { command: DbCommand::Migrate } => {
            let applied = db::migrate(&settings.database).await?;
            println!("{applied} migration(s) applied");
        }
        Command::Topics { command: TopicsCommand::Create { partitions, dlq_partitions, replication } } => {
            let layout = Layout { partitions, dlq_partitions, replication };
            for line in topics::create(&settings.kafka, layout).await? {
                println!("{line}");
            }
        }
        Command::Topics { command: TopicsCommand::Show } => {
            print!("{}", topics::show(&settings.kafka));
        }
        Command::Schemas { command } => match command {
            SchemasCommand::Register => {
                for registered in schemas::register(&settings.registry, &settings.kafka).await? {
                    println!("{:<40} id {}", registered.subject, registered.id);
                }
            }
            SchemasCommand::Check { dir } => {
                let verdicts = schemas::check(&settings.registry, &settings.kafka, dir.as_deref()).await?;
                for v in &verdicts {
                    let verdict = match v.compatible {
                        Some(true) => "compatible",
                        Some(false) => "INCOMPATIBLE",
                        None => "new subject",
                    };
                    println!("{:<40} {verdict}", v.subject);
                }
                if !schemas::all_compatible(&verdicts) {
                    anyhow::bail!("incompatible schema change");
                }
            }
        },
        Command::Members { command: MembersCommand::Seed { count, prefix, product, eligible_ratio } } => {
            let plan = members::SeedPlan { count, id_prefix: prefix, product_id: product, eligible_ratio };
            let report = members::seed(&settings.member_primary, &settings.replica, &plan).await?;
            println!(
                "{} members, {} bought {} (on the member primary; the replica replayed in {} ms)",
                report.members.len(),
                report.eligible.len(),
                plan.product_id,
                report.replayed_in.as_millis()
            );
        }
        Command::Event { command } => match command {
            EventCommand::Create { id, name, product, total, safety, open_at, close_at, questions } => {
                let now = chrono::Utc::now();
                let new = event::NewEvent {
                    event_id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    name,
                    product_id: product,
                    total_stock: total,
                    safety_stock: safety,
                    open_at: event::parse_time(&open_at, now)?,
                    close_at: event::parse_time(&close_at, now)?,
                    questions,
                };
                let eligible = event::create(&settings, &new).await?;
                println!("event {} created: {} for sale, {eligible} eligible members", new.event_id, new.for_sale());
            }
            EventCommand::Show { event_id } => {
                let view = event::show(&settings, &event_id).await?;
                println!("{}", serde_json::to_string_pretty(&view)?);
            }
            EventCommand::Close { event_id } => {
                event::close(&settings, &event_id).await?;
                println!("event {event_id} closed");
            }
        },
        Command::Token { member_id, ttl_secs } => {
            let token = ingest::auth::mint(&settings.auth.token_secret, &member_id, std::time::Duration::from_secs(ttl_secs))?;
            println!("{token}");
        }
        Command::Reconcile { event_id, provider_url, repair } => {
            let outcome = reconcile::run(&settings, &event_id, provider_url.as_deref(), repair).await?;
            reconcile::print(&settings, &event_id, &outcome);
            if !outcome.report.all_hold() {
                anyhow::bail!("invariants do not hold (a lagging pipeline settles by itself; --repair rebuilds Redis from the log)");
            }
        }
        Command::Rebuild { command } => match command {
            RebuildCommand::Redis { event_id } => rebuild::redis::run(&settings, &event_id).await?,
            RebuildCommand::Projections => rebuild::projections::run(&settings).await?,
        },
        Command::Dlq { command } => match command {
            DlqCommand::Show { topic, max } => {
                let topic = format!("{}{topic}", settings.kafka.topic_prefix);
                for dead in dlq::show(&settings.kafka, &topic, max).await? {
                    println!("{}", serde_json::to_string(&dead)?);
                }
            }
            DlqCommand::Replay { topic, max } => {
                let topic = format!("{}{topic}", settings.kafka.topic_prefix);
                let done = dlq::replay(&settings.kafka, &topic, max).await?;
                println!("replayed {} dead letters to {topic}", done.replayed);
            }
        },
        Command::Gifts { command: GiftsCommand::Parked { event, json } } => {
            let parked = gifts::parked(&settings, event.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&parked)?);
            } else {
                gifts::print(&parked);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_gifts_are_listed_for_all_events_or_one() {
        assert!(Cli::try_parse_from(["firstcome", "gifts", "parked"]).is_ok());
        assert!(Cli::try_parse_from(["firstcome", "gifts", "parked", "--event", "ev-1", "--json"]).is_ok());
    }

    #[test]
    fn token_ttl_is_capped_at_the_maximum_lifetime() {
        assert!(Cli::try_parse_from(["firstcome", "token", "m-1", "--ttl-secs", "3600"]).is_ok());
        assert!(Cli::try_parse_from(["firstcome", "token", "m-1"]).is_ok());
        for refused in ["3601", "86400", "0"] {
            assert!(Cli::try_parse_from(["firstcome", "token", "m-1", "--ttl-secs", refused]).is_err(), "{refused}");
        }
    }
}
