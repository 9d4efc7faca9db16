//! Running Kafka's own Java code from a test: single-file programs under
//! `tests/java/`, started with the stack's Kafka classpath (`stack/bin/stack
//! kafka-run`, which resolves it with Maven when missing).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The repository root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the single-file Java program `source` (relative to the repository
/// root) on the Kafka classpath with `args`, feeding it `stdin`; its stdout.
/// Panics with its stderr when it fails.
pub fn run_with_kafka_classpath(source: &str, args: &[&str], stdin: &str) -> String {
    let root = repo_root();
    let mut child = Command::new(root.join("stack/bin/stack"))
        .arg("kafka-run")
        .arg(root.join(source))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("stack/bin/stack kafka-run {source} started: {e}"));
    child.stdin.take().expect("stdin is piped").write_all(stdin.as_bytes()).expect("keys written to the Java program");
    let output = child.wait_with_output().expect("the Java program ran");
    assert!(
        output.status.success(),
        "{source} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}
