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
    let _watchdog = common::watchdog("reject_policy_fails_the_produce_with_invalid_record");
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
    let _watchdog = common::watchdog("a_replaced_schema_is_the_contract");
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

/// The contract runs over partitions added to `customer-events` after the start and over the
/// topic when it is deleted and created again: invalid events there reach the dead-letter
/// topic too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_follows_new_partitions_and_a_recreated_topic() {
    let _watchdog = common::watchdog("the_contract_follows_new_partitions_and_a_recreated_topic");
    use rdkafka::admin::{AdminOptions, NewPartitions};
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), &["--set", "num.partitions=1"]);
    let admin = common::admin(broker.addr);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let grown = admin
        .create_partitions(&[NewPartitions::new("customer-events", 3)], &opts)
        .await
        .unwrap();
    assert!(grown.iter().all(|r| r.is_ok()), "{grown:?}");
    let p = common::producer(broker.addr, &[("acks", "all")]);
    let send = |partition: i32, v: &'static str| {
        let p = p.clone();
        async move {
            p.send(
                FutureRecord::<(), _>::to("customer-events")
                    .partition(partition)
                    .payload(v),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
    };
    send(2, "not json, on a partition added at runtime").await;
    send(1, VALID).await;
    let dead = common::consume(
        broker.addr,
        "customer-events.dlq",
        0,
        0,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "{}", broker.log_text());
    assert_eq!(
        common::payload(&dead[0]),
        Some(&b"not json, on a partition added at runtime"[..])
    );
    assert_eq!(
        common::header(&dead[0], "kafkabox.dlq.partition").as_deref(),
        Some("2")
    );

    let deleted = admin
        .delete_topics(&["customer-events"], &opts)
        .await
        .unwrap();
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    common::create_topic(broker.addr, "customer-events", 2).await;
    send(1, "not json, on the topic created again").await;
    let dead = common::consume(
        broker.addr,
        "customer-events.dlq",
        0,
        0,
        2,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 2, "{}", broker.log_text());
    assert_eq!(
        common::payload(&dead[1]),
        Some(&b"not json, on the topic created again"[..])
    );
    assert!(broker.terminate().success());
}
