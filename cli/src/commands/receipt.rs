//! `firstcome receipt verify | keygen`: check a member's receipt (its
//! signature, and with `--proof` that it is in the event's winners' Merkle
//! tree under the report's root), or make a signing key for
//! `receipts.signing_key`. Nothing here reads a store: a receipt is checked
//! with the public key alone, as anyone without our services would.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ingest::merkle::Proof;
use ingest::receipts::{PublicKey, Receipt, Signer};
use serde::Serialize;

use crate::exit::Usage;
use crate::output::Output;
use crate::reach::Need;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature with the operator's public key; with --proof, also that
    /// the receipt is in the event's winners' Merkle tree (exit 1 when either does not hold).
    Verify(VerifyArgs),
    /// Make a new Ed25519 signing key: the PKCS#8 PEM for receipts.signing_key, and its public key.
    Keygen,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The receipt: a JSON file holding the 202's `receipt` object or the whole 202 body (`-`: stdin).
    receipt: PathBuf,
    /// The public key: a file with the SPKI PEM, the PEM itself, or the raw key in base64
    /// (`public_key` of GET /api/receipts/key).
    #[arg(long, conflicts_with = "key_url", required_unless_present = "key_url")]
    key: Option<String>,
    /// Ingest's base URL: the key is read from its /api/receipts/key.
    #[arg(long)]
    key_url: Option<String>,
    /// The receipt's inclusion proof (JSON from /api/events/{id}/report/proofs/{entry_id}).
    #[arg(long)]
    proof: Option<PathBuf>,
    /// The Merkle root the report published (`receipts.merkle_root`); the proof must lead to it.
    #[arg(long, requires = "proof")]
    root: Option<String>,
}

impl ReceiptCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[]
    }
}

/// What `receipt verify` found.
#[derive(Debug, Serialize)]
struct Verdict {
    valid: bool,
    receipt: Receipt,
    key_id: String,
    /// `None`: the signature holds; else why not.
    signature_error: Option<String>,
    /// Whether a proof was checked, and why it failed.
    proof_checked: bool,
    proof_error: Option<String>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("Failed to read stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))
}

/// The receipt in `text`: the receipt object, or a 202 body carrying one.
fn parse_receipt(text: &str) -> Result<Receipt, Usage> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Usage(format!("receipt: not JSON: {e}")))?;
    let value = if value.get("receipt").is_some() { value["receipt"].clone() } else { value };
    serde_json::from_value(value).map_err(|e| Usage(format!("receipt: {e}")))
}

async fn public_key(args: &VerifyArgs) -> anyhow::Result<PublicKey> {
    let text = match (&args.key, &args.key_url) {
        (Some(key), _) if Path::new(key).is_file() => read(Path::new(key))?,
        (Some(key), _) => key.clone(),
        (None, Some(url)) => {
            let url = format!("{}/api/receipts/key", url.trim_end_matches('/'));
            let body: serde_json::Value = reqwest::get(&url)
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("Failed to read the key at {url}"))?
                .json()
                .await
                .with_context(|| format!("Failed to read the key at {url}"))?;
            body["public_key"].as_str().with_context(|| format!("no public_key at {url}"))?.to_string()
        }
        (None, None) => return Err(Usage("--key or --key-url".into()).into()),
    };
    Ok(PublicKey::parse(&text).map_err(|e| Usage(format!("--key: {e}")))?)
}

pub async fn command(command: ReceiptCommand) -> anyhow::Result<Output> {
    match command {
        ReceiptCommand::Verify(args) => verify(args).await,
        ReceiptCommand::Keygen => keygen(),
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<Output> {
    let receipt = parse_receipt(&read(&args.receipt)?)?;
    let key = public_key(&args).await?;
    let signature_error = key.verify(&receipt).err().map(|e| e.to_string());
    let proof_error = match &args.proof {
        None => None,
        Some(path) => {
            let proof: Proof =
                serde_json::from_str(&read(path)?).map_err(|e| Usage(format!("--proof: not a proof: {e}")))?;
            let bytes = receipt.facts.canonical_bytes()?;
            let mut error = proof.check(&bytes, args.root.as_deref()).err().map(|e| e.to_string());
            if error.is_none() && (proof.entry_id != receipt.facts.entry_id || proof.event_id != receipt.facts.event_id)
            {
                error = Some("the proof names another entry".to_string());
            }
            error
        }
    };
    let valid = signature_error.is_none() && proof_error.is_none();
    let facts = &receipt.facts;
    let mut text = format!(
        "receipt of entry {} ({} in event {}, ticket {}, accepted at {} ms), key {}\nsignature: {}",
        facts.entry_id,
        facts.member,
        facts.event_id,
        facts.ticket,
        facts.accepted_at_ms,
        key.key_id(),
        signature_error.as_deref().unwrap_or("valid"),
    );
    if args.proof.is_some() {
        text.push_str(&format!(
            "\nin the winners' tree: {}",
            proof_error.as_deref().unwrap_or(if args.root.is_some() { "yes, under the published root" } else { "yes" })
        ));
    }
    let verdict = Verdict {
        valid,
        key_id: key.key_id().to_string(),
        receipt,
        signature_error,
        proof_checked: args.proof.is_some(),
        proof_error,
    };
    Ok(Output::new(text, &verdict).failed_if(!valid, "the receipt does not verify"))
}

fn keygen() -> anyhow::Result<Output> {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let pem = key.to_pkcs8_pem(LineEnding::LF).context("Failed to encode the key")?;
    let signer = Signer::from_key(key);
    let public = signer.public_key();
    let json = serde_json::json!({
        "signing_key_pem": pem.as_str(),
        "key_id": public.key_id(),
        "public_key": public.base64(),
        "public_key_pem": public.pem(),
    });
    let text = format!("{}{}", pem.as_str(), public.pem());
    Ok(Output::new(text, &json))
}
