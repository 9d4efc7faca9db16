//! `firstcome token <member>`: a member bearer token, signed with
//! `auth.token_secret` for ingest's audience (for trying the API by hand).

use std::time::Duration;

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// The longest `--ttl-secs`: ingest's default maximum token lifetime.
const MAX_TOKEN_TTL_SECS: u64 = ingest::auth::DEFAULT_MAX_LIFETIME.as_secs();

/// `firstcome token`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    member_id: String,
    /// Lifetime; at most ingest's default auth.max_token_lifetime_secs (3600), which refuses longer ones.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
    ttl_secs: u64,
}

impl TokenArgs {
    pub fn needs(&self) -> &'static [Need] {
        &[]
    }
}

pub fn command(settings: &CliSettings, args: TokenArgs) -> anyhow::Result<Output> {
    let token = ingest::auth::mint(&settings.auth.token_secret, &args.member_id, Duration::from_secs(args.ttl_secs))?;
    let json = serde_json::json!({ "member_id": args.member_id, "ttl_secs": args.ttl_secs, "token": token });
    Ok(Output::new(token, &json))
}
