//! What a receipt costs each 202: signing the canonical bytes (Ed25519) and
//! the JSON the answer carries it in; and, for the checker's side, one
//! verification. `receipt_sign` is the signer as ingest runs it (AWS-LC);
//! `receipt_sign_dalek` the same signature by ed25519-dalek, which signed
//! before; `receipt_canonical_bytes` the message alone.
//!
//! `cargo bench -p ingest --bench receipts -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer as _;
use ingest::receipts::{ReceiptFacts, Signer, DEV_SIGNING_KEY_PEM};

fn facts(ticket: i64) -> ReceiptFacts {
    ReceiptFacts {
        event_id: "coffee-2026-01".into(),
        entry_id: "0190f2a4-7b1c-7d2e-8f00-0123456789ab".into(),
        member: "m0000001".into(),
        ticket,
        accepted_at_ms: 1_767_225_600_123,
    }
}

fn receipts(c: &mut Criterion) {
    let signer = Signer::from_pem(DEV_SIGNING_KEY_PEM).expect("the development key parses");
    c.bench_function("ingest/receipt_canonical_bytes", |b| {
        b.iter(|| black_box(facts(812)).canonical_bytes().expect("valid ids"))
    });
    c.bench_function("ingest/receipt_sign", |b| b.iter(|| signer.sign(black_box(facts(812))).expect("signs")));
    let dalek = ed25519_dalek::SigningKey::from_pkcs8_pem(DEV_SIGNING_KEY_PEM).expect("the development key parses");
    c.bench_function("ingest/receipt_sign_dalek", |b| {
        b.iter(|| dalek.sign(&black_box(facts(812)).canonical_bytes().expect("valid ids")))
    });
    c.bench_function("ingest/receipt_sign_and_json", |b| {
        b.iter(|| serde_json::to_vec(&signer.sign(black_box(facts(812))).expect("signs")).expect("serializes"))
    });
    let receipt = signer.sign(facts(812)).expect("signs");
    let public = signer.public_key().clone();
    c.bench_function("ingest/receipt_verify", |b| b.iter(|| public.verify(black_box(&receipt)).expect("valid")));
}

criterion_group!(benches, receipts);
criterion_main!(benches);
