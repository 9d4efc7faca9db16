//! One TLS stack where the crates allow it: rustls with aws-lc-rs
//! for every Rust-side TLS client (reqwest, the registry client), no
//! native-tls, no `openssl` bindings. (`ring` is in Cargo.lock only as an
//! optional dependency of quinn/webpki that nothing enables: `cargo tree -i
//! ring --target all` prints nothing.)
//! The one exception is librdkafka (C), whose SASL/SCRAM login needs OpenSSL
//! (rdkafka's `ssl` feature): `openssl-sys` may be linked by `rdkafka-sys`
//! and by nothing else.

fn lock_packages() -> Vec<String> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).expect("Cargo.lock");
    lock.split("[[package]]").map(str::to_string).collect()
}

fn name_of(package: &str) -> Option<&str> {
    package.lines().find_map(|l| l.trim().strip_prefix("name = \"")).map(|n| n.trim_end_matches('"'))
}

#[test]
fn rust_tls_is_rustls_only() {
    let packages = lock_packages();
    for banned in ["native-tls", "tokio-native-tls", "hyper-tls", "openssl"] {
        assert!(packages.iter().all(|p| name_of(p) != Some(banned)), "{banned} is in Cargo.lock: a second TLS stack");
    }
    assert!(packages.iter().any(|p| name_of(p) == Some("rustls")));
}

#[test]
fn only_librdkafka_links_openssl_for_its_scram_login() {
    let packages = lock_packages();
    let users: Vec<&str> = packages
        .iter()
        .filter(|p| p.lines().any(|l| l.trim().trim_end_matches(',') == "\"openssl-sys\""))
        .filter_map(|p| name_of(p))
        .collect();
    assert_eq!(users, ["rdkafka-sys"], "who links OpenSSL");
}
