//! Limits through the real binary (issue 9): `max.partitions` bounds the partitions of all
//! topics together (CreateTopics and CreatePartitions past it get POLICY_VIOLATION), and a
//! client beyond `max.connections` is closed at once and counted.

mod common;

use common::BrokerProcess;
use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_beyond_max_partitions_are_refused() {
    let _watchdog = common::watchdog("partitions_beyond_max_partitions_are_refused");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &["--set", "max.partitions=5"]);
    let admin = common::admin(broker.addr);
    let opts = AdminOptions::new();
    // customer-events and its .dlq take two; three more fit.
    let r = admin
        .create_topics(
            &[NewTopic::new("three", 3, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let r = admin
        .create_topics(
            &[NewTopic::new("one-more", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        r[0],
        Err(("one-more".to_string(), RDKafkaErrorCode::PolicyViolation)),
        "{r:?}"
    );
    let r = admin
        .create_partitions(&[NewPartitions::new("three", 4)], &opts)
        .await
        .unwrap();
    assert_eq!(
        r[0],
        Err(("three".to_string(), RDKafkaErrorCode::PolicyViolation)),
        "{r:?}"
    );
    // Deleting a topic frees its partitions.
    admin.delete_topics(&["three"], &opts).await.unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new("one-more", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_max_connections_is_closed_and_counted() {
    let _watchdog = common::watchdog("a_client_beyond_max_connections_is_closed_and_counted");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &["--set", "max.connections=1"]);
    // ApiVersions v0, correlation id 7.
    let api_versions: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0];
    let mut first = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    first.write_all(&api_versions).await.unwrap();
    let mut head = [0u8; 8];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[4..], &[0, 0, 0, 7]);
    let mut second = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let _ = second.write_all(&api_versions).await;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let metrics = common::http(broker.http_addr(), "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("kafkabox_connections_refused_total 1"),
        "{metrics}"
    );
    assert!(broker.log_text().contains("max.connections reached"));
}
