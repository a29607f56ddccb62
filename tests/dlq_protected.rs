//! A dead-letter topic is written only by kafkabox (issue 9): a Kafka producer gets
//! TOPIC_AUTHORIZATION_FAILED and HTTP produce 403, and nothing is stored; its own topic stays
//! writable.

mod common;

use std::time::Duration;

use common::{http, BrokerProcess};
use rdkafka::producer::FutureRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_kafkabox_writes_a_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let h = broker.http_addr();
    let p = common::producer(
        broker.addr,
        &[("message.timeout.ms", "5000"), ("retries", "0")],
    );
    let err = p
        .send(
            FutureRecord::<(), _>::to("customer-events.dlq").payload("forged"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a forged dead letter");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed),
        "{err:?}"
    );
    let r = http(
        h,
        "POST",
        "/api/topics/customer-events.dlq/records",
        None,
        Some(r#"{"records":[{"value":{"forged":true}}]}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["offsets"][0]["error_code"], 29, "{}", r.body);
    let t = http(h, "GET", "/api/topics/customer-events.dlq", None, None).json();
    assert_eq!(
        t["partitions"][0]["log_end_offset"], 0,
        "nothing stored: {t}"
    );
    // The topic itself takes records as ever.
    p.send(
        FutureRecord::<(), _>::to("customer-events").payload("{}"),
        Duration::from_secs(10),
    )
    .await
    .expect("produce to customer-events");
}
