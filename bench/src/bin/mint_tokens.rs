//! Member tokens for wrk: `mint_tokens --prefix m --from 0 --count 100000 > tokens.txt`
//! writes `member token` per line (member ids as `firstcome members seed`
//! makes them: prefix + 7 digits), signed with the development secret or
//! `FIRSTCOME_AUTH__TOKEN_SECRET`, valid for an hour.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "m")]
    prefix: String,
    #[arg(long, default_value_t = 0)]
    from: usize,
    #[arg(long)]
    count: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::env::var("FIRSTCOME_AUTH__TOKEN_SECRET")
        .map(SecretString::from)
        .unwrap_or_else(|_| SecretString::from(ingest::auth::DEV_SECRET));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for n in args.from..args.from + args.count {
        let member = format!("{}{n:07}", args.prefix);
        let token = ingest::auth::mint(&secret, &member, Duration::from_secs(3600))?;
        writeln!(out, "{member} {token}")?;
    }
    out.flush()?;
    Ok(())
}
