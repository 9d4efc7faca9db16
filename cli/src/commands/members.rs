//! `firstcome members seed N`: a realistic shop member database for demos
//! and tests.
//!
//! It plays the shop: it writes on the member database's primary
//! (`member_primary.*`), then waits until the streaming replica firstcome
//! reads (`replica.*`) has replayed the writes. Members get a Korean mobile
//! number; a share of them bought the event's product (the eligibility
//! source). Idempotent: existing rows are kept. The command is an operator
//! action, recorded in `operator_actions` (`crate::audit_trail`) before it
//! runs; [`seed`] itself (the tests', the lab's) is not.

use std::time::Duration;

use platform::settings::{MemberPrimarySettings, ReplicaSettings};

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// How long `seed` waits for the replica to replay its writes.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    pub count: usize,
    /// Member ids are `<prefix><7 digits>` (tests use a unique prefix).
    pub id_prefix: String,
    pub product_id: String,
    /// Share of members who bought `product_id` (0.0..=1.0).
    pub eligible_ratio: f64,
}

impl Default for SeedPlan {
    fn default() -> Self {
        Self { count: 1_000, id_prefix: "m".into(), product_id: "coffee-beans-1kg".into(), eligible_ratio: 0.9 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub members: Vec<String>,
    /// The members who bought the product.
    pub eligible: Vec<String>,
    /// How long the replica took to replay the writes after the last one.
    pub replayed_in: Duration,
}

/// The member id of the `n`th seeded member.
pub fn member_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:07}")
}

/// A deterministic, valid-looking mobile number for member `n`.
pub fn phone(n: usize) -> String {
    format!("010-{:04}-{:04}", (n / 10_000) % 10_000, n % 10_000)
}

/// Whether member `n` bought the product: spread evenly, deterministic.
fn bought(n: usize, ratio: f64) -> bool {
    let ratio = ratio.clamp(0.0, 1.0);
    ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor()
}

/// Inserts the members and their purchases on the primary, in chunks, then
/// waits until the replica has replayed them.
pub async fn seed(
    primary: &MemberPrimarySettings,
    replica: &ReplicaSettings,
    plan: &SeedPlan,
) -> anyhow::Result<SeedReport> {
    let pool = platform::member_db::primary_pool(primary)?;
    platform::member_db::prepare(&pool, &primary.schema).await?;
    let client = pool.get().await?;
    let mut report =
        SeedReport { members: Vec::with_capacity(plan.count), eligible: Vec::new(), replayed_in: Duration::ZERO };
    const CHUNK: usize = 5_000;
    for start in (0..plan.count).step_by(CHUNK) {
        let end = (start + CHUNK).min(plan.count);
        let ids: Vec<String> = (start..end).map(|n| member_id(&plan.id_prefix, n)).collect();
        let names: Vec<String> = (start..end).map(|n| format!("Member {n}")).collect();
        let phones: Vec<String> = (start..end).map(phone).collect();
        let buyers: Vec<String> =
            (start..end).filter(|&n| bought(n, plan.eligible_ratio)).map(|n| member_id(&plan.id_prefix, n)).collect();
        client
            .execute(
                "INSERT INTO members (member_id, name, phone)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (member_id) DO NOTHING",
                &[&ids, &names, &phones],
            )
            .await?;
        client
            .execute(
                "INSERT INTO purchases (member_id, product_id)
                 SELECT m, $2 FROM UNNEST($1::text[]) AS m
                 WHERE NOT EXISTS (SELECT 1 FROM purchases p WHERE p.member_id = m AND p.product_id = $2)",
                &[&buyers, &plan.product_id],
            )
            .await?;
        report.members.extend(ids);
        report.eligible.extend(buyers);
    }
    drop(client);
    report.replayed_in = wait_replayed(&pool, replica).await?;
    Ok(report)
}

/// Waits until the replica has replayed what the primary `pool` wrote so far.
pub async fn wait_replayed(primary: &deadpool_postgres::Pool, replica: &ReplicaSettings) -> anyhow::Result<Duration> {
    let replica_pool = platform::member_db::replica_pool(replica)?;
    Ok(platform::member_db::wait_replayed(primary, &replica_pool, REPLAY_TIMEOUT).await?)
}

/// Changes a member's phone on the primary (the shop's side) and waits for
/// the replica, like [`seed`].
pub async fn set_phone(
    primary: &MemberPrimarySettings,
    replica: &ReplicaSettings,
    member_id: &str,
    phone: &str,
) -> anyhow::Result<Duration> {
    let pool = platform::member_db::primary_pool(primary)?;
    let updated =
        pool.get().await?.execute("UPDATE members SET phone = $2 WHERE member_id = $1", &[&member_id, &phone]).await?;
    anyhow::ensure!(updated == 1, "no member {member_id} on the member primary");
    wait_replayed(&pool, replica).await
}

/// The members who bought `product_id`, read on the replica.
pub async fn eligible(replica: &ReplicaSettings, product_id: &str) -> anyhow::Result<Vec<String>> {
    let pool = platform::member_db::replica_pool(replica)?;
    Ok(stock_processor::restore::eligible_members(&pool, product_id).await?)
}

/// `firstcome members …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MembersCommand {
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

impl MembersCommand {
    pub fn needs(&self) -> &'static [Need] {
        // The database: seeding is an operator action, recorded in operator_actions.
        &[Need::MemberPrimary, Need::Replica, Need::Database]
    }
}

pub async fn command(settings: &CliSettings, command: MembersCommand) -> anyhow::Result<Output> {
    let MembersCommand::Seed { count, prefix, product, eligible_ratio } = command;
    let plan = SeedPlan { count, id_prefix: prefix, product_id: product, eligible_ratio };
    let detail = serde_json::json!({
        "count": plan.count, "prefix": plan.id_prefix, "product": plan.product_id,
        "eligible_ratio": plan.eligible_ratio, "schema": settings.member_primary.schema,
    });
    let action = crate::audit_trail::Action::new("members seed", None, detail);
    let report =
        crate::audit_trail::audited(settings, action, seed(&settings.member_primary, &settings.replica, &plan)).await?;
    let text = format!(
        "{} members, {} bought {} (on the member primary; the replica replayed in {} ms)",
        report.members.len(),
        report.eligible.len(),
        plan.product_id,
        report.replayed_in.as_millis()
    );
    let json = serde_json::json!({
        "members": report.members.len(),
        "eligible": report.eligible.len(),
        "product": plan.product_id,
        "replayed_in_ms": report.replayed_in.as_millis() as u64,
    });
    Ok(Output::new(text, &json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eligible_share_is_close_to_the_ratio() {
        let eligible = (0..1000).filter(|&n| bought(n, 0.9)).count();
        assert_eq!(eligible, 900);
        assert_eq!((0..10).filter(|&n| bought(n, 0.0)).count(), 0);
        assert_eq!((0..10).filter(|&n| bought(n, 1.0)).count(), 10);
    }

    #[test]
    fn phones_look_like_korean_mobiles() {
        assert_eq!(phone(12_345), "010-0001-2345");
    }
}
