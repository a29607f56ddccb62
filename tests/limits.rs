//! `max.partitions` bounds the partitions of all topics together (issue 9): CreateTopics and
//! CreatePartitions past it get POLICY_VIOLATION, through the real binary.

mod common;

use common::BrokerProcess;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_beyond_max_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &["--set", "max.partitions=5"]);
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .create()
        .unwrap();
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
