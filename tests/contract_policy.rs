//! Contract settings of `kafkabox serve`: `customer.events.on.invalid = reject` fails the
//! produce with Kafka's INVALID_RECORD, and `customer.events.schema` replaces the shipped
//! schema.

mod common;

use std::time::Duration;

use common::BrokerProcess;
use kafkabox_storage::{Store, StoreConfig};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

const VALID: &str = r#"{"source":"crm","customer_id":"7","event_type":"kyc_update","timestamp":"2024-01-15T10:30:00Z"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_fails_the_produce_with_invalid_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &["--set", "customer.events.on.invalid=reject"]);
    let p = common::producer(
        broker.addr,
        &[("acks", "all"), ("message.timeout.ms", "10000")],
    );
    let ok = p
        .send(
            FutureRecord::<(), _>::to("customer-events").payload(VALID),
            Duration::from_secs(30),
        )
        .await
        .expect("a valid event is accepted");
    assert_eq!(ok.offset, 0);
    let bad = p
        .send(
            FutureRecord::<(), _>::to("customer-events")
                .payload(r#"{"source":"crm","event_type":"kyc_update"}"#),
            Duration::from_secs(30),
        )
        .await;
    match bad {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {}
        other => panic!("expected INVALID_RECORD, got {other:?}"),
    }
    assert!(
        broker
            .log_text()
            .contains("breaks the customer-events contract"),
        "{}",
        broker.log_text()
    );
    assert_eq!(broker.terminate().code(), Some(0));
    let store = Store::open(StoreConfig::new(&data)).unwrap();
    let t = store.topic("customer-events").unwrap();
    assert_eq!(
        store.offsets(&t.partitions[0]).log_end,
        1,
        "only the valid event was stored"
    );
    let dlq = store.topic("customer-events.dlq").unwrap();
    assert_eq!(store.offsets(&dlq.partitions[0]).log_end, 0);
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_schema_is_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The shipped schema plus a required "channel" field.
    let shipped: serde_json::Value =
        serde_json::from_str(kafkabox::contract::DEFAULT_SCHEMA).unwrap();
    let mut schema = shipped.clone();
    schema["required"]
        .as_array_mut()
        .unwrap()
        .push("channel".into());
    let path = dir.path().join("events.schema.json");
    std::fs::write(&path, schema.to_string()).unwrap();
    let mut broker = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            &format!("customer.events.schema={}", path.display()),
        ],
    );
    let p = common::producer(broker.addr, &[("acks", "all")]);
    let with_channel = VALID.replace('}', r#","channel":"web"}"#);
    for v in [VALID, with_channel.as_str()] {
        p.send(
            FutureRecord::<(), _>::to("customer-events").payload(v),
            Duration::from_secs(30),
        )
        .await
        .expect("acknowledged (dlq policy)");
    }
    // Let the dead-letter stage catch up, then stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !broker.log_text().contains("invalid event") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broker.terminate().code(), Some(0));
    let store = Store::open(StoreConfig::new(&data)).unwrap();
    let dlq = store.topic("customer-events.dlq").unwrap();
    let mut buf = bytes::BytesMut::new();
    store
        .read(&dlq.partitions[0], 0, 1 << 20, true, &mut buf)
        .unwrap()
        .unwrap();
    let (_, recs) = kafkabox_protocol::batch::decode_batch(&buf, 1 << 20).unwrap();
    assert_eq!(recs.len(), 1, "only the event without a channel");
    assert_eq!(recs[0].value.as_deref(), Some(VALID.as_bytes()));
    let reason = recs[0]
        .headers
        .iter()
        .find(|(k, _)| &k[..] == b"kafkabox.dlq.reason")
        .and_then(|(_, v)| v.clone())
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reason).contains("channel"),
        "{reason:?}"
    );
    store.close().unwrap();
}
