//! The sender refuses to start with settings whose batches could outlast
//! `max.poll.interval.ms`, before it connects to anything.

use sender::{Application, Error, Settings};

#[tokio::test]
async fn the_sender_refuses_to_start_when_a_batch_could_outlast_the_poll_interval() {
    // The example: 500 WONs in a batch, 32 in flight, a slow provider.
    let mut settings = Settings::default();
    settings.kafka.batch_max_records = 500;
    settings.dispatch.batch_max_records = 500;
    settings.provider.concurrency = 32;
    settings.provider.timeout_ms = 10_000;
    let Err(error) = Application::build(settings).await else {
        panic!("the sender started with batches that can outlast max.poll.interval.ms");
    };
    assert!(matches!(error, Error::Settings(_)), "{error}");
    eprintln!("{error}");
    assert!(error.to_string().contains("dispatch.batch_max_records"), "the message says what to change: {error}");
}
