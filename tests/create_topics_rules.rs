//! CreateTopics refuses what Kafka refuses (manual assignments with gaps or repeats, repeated
//! config keys, `min.cleanable.dirty.ratio` outside 0..1 or NaN), and auto-creation through
//! Metadata has a budget per second (`auto.create.topics.per.second`): one client naming many
//! unknown topics cannot create them all at once. Through the real binary, raw requests.

mod common;

use common::{BrokerProcess, Conn};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn assignment(partition: i32, brokers: &[i32]) -> CreatableReplicaAssignment {
    CreatableReplicaAssignment::default()
        .with_partition_index(partition)
        .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
}

fn config(k: &str, v: &str) -> CreatableTopicConfig {
    CreatableTopicConfig::default()
        .with_name(StrBytes::from_string(k.to_string()))
        .with_value(Some(StrBytes::from_string(v.to_string())))
}

/// Creates `t` with CreateTopics v5; returns its error code and message.
async fn create(c: &mut Conn, t: CreatableTopic) -> (i16, String) {
    let r: CreateTopicsResponse = c
        .call(
            ApiKey::CreateTopics,
            5,
            &CreateTopicsRequest::default()
                .with_topics(vec![t])
                .with_timeout_ms(5_000),
        )
        .await;
    let t = &r.topics[0];
    (
        t.error_code,
        t.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_refuses_what_kafka_refuses() {
    let _watchdog = common::watchdog("create_topics_refuses_what_kafka_refuses");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let mut c = Conn::open(broker.addr).await;
    const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    const INVALID_CONFIG: i16 = 40;
    const INVALID_REQUEST: i16 = 42;
    let manual = |n: &str, parts: &[(i32, &[i32])]| {
        CreatableTopic::default()
            .with_name(name(n))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(parts.iter().map(|(p, b)| assignment(*p, b)).collect())
    };
    // Partitions 0 and 5: a gap.
    let (code, msg) = create(&mut c, manual("gapped", &[(0, &[0]), (5, &[0])])).await;
    assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "{msg}");
    assert!(msg.contains("consecutive"), "{msg}");
    // Partition 0 twice.
    let (code, msg) = create(&mut c, manual("twice", &[(0, &[0]), (0, &[0])])).await;
    assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "{msg}");
    // Broker 0 twice in one replica list.
    let (code, msg) = create(&mut c, manual("dup-broker", &[(0, &[0, 0])])).await;
    assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "{msg}");
    // Assignments and a partition count at once.
    let (code, msg) = create(&mut c, manual("both", &[(0, &[0])]).with_num_partitions(1)).await;
    assert_eq!(code, INVALID_REQUEST, "{msg}");
    // A consecutive assignment is fine: 2 partitions.
    let (code, msg) = create(&mut c, manual("manual-ok", &[(1, &[0]), (0, &[0])])).await;
    assert_eq!(code, 0, "{msg}");
    let plain = |n: &str| {
        CreatableTopic::default()
            .with_name(name(n))
            .with_num_partitions(1)
            .with_replication_factor(1)
    };
    let (code, msg) = create(
        &mut c,
        plain("dup-config").with_configs(vec![
            config("retention.ms", "1000"),
            config("retention.ms", "2000"),
        ]),
    )
    .await;
    assert_eq!(code, INVALID_CONFIG, "{msg}");
    assert!(msg.contains("Duplicate config key"), "{msg}");
    for bad in ["NaN", "5", "-0.1"] {
        let (code, msg) = create(
            &mut c,
            plain("ratio").with_configs(vec![config("min.cleanable.dirty.ratio", bad)]),
        )
        .await;
        assert_eq!(code, INVALID_CONFIG, "ratio {bad}: {msg}");
    }
    let (code, msg) = create(
        &mut c,
        plain("ratio").with_configs(vec![config("min.cleanable.dirty.ratio", "0.3")]),
    )
    .await;
    assert_eq!(code, 0, "{msg}");
    // Nothing refused was created.
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    let mut names: Vec<String> = md
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    assert!(
        names.contains(&"manual-ok".to_string()) && names.contains(&"ratio".to_string()),
        "{names:?}"
    );
    for refused in ["gapped", "twice", "dup-broker", "both", "dup-config"] {
        assert!(
            !names.contains(&refused.to_string()),
            "{refused}: {names:?}"
        );
    }
    let ok = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "manual-ok"))
        .unwrap();
    assert_eq!(ok.partitions.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_creation_has_a_budget_per_second() {
    let _watchdog = common::watchdog("auto_creation_has_a_budget_per_second");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &["--set", "auto.create.topics.per.second=5"],
    );
    let mut c = Conn::open(broker.addr).await;
    let ask = |names: Vec<String>| {
        MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(
                names
                    .into_iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(name(&n))))
                    .collect(),
            ))
    };
    const LEADER_NOT_AVAILABLE: i16 = 5;
    // One request naming 200 unknown topics creates one second's budget of them.
    let many: Vec<String> = (0..200).map(|i| format!("auto-{i}")).collect();
    let md: MetadataResponse = c.call(ApiKey::Metadata, 9, &ask(many.clone())).await;
    let created = md.topics.iter().filter(|t| t.error_code == 0).count();
    let waiting = md
        .topics
        .iter()
        .filter(|t| t.error_code == LEADER_NOT_AVAILABLE)
        .count();
    assert_eq!(
        created,
        5,
        "{:?}",
        md.topics.iter().map(|t| t.error_code).collect::<Vec<_>>()
    );
    assert_eq!(waiting, 195);
    // The client asks again a second later: the budget has grown back.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let md: MetadataResponse = c.call(ApiKey::Metadata, 9, &ask(many)).await;
    let created = md.topics.iter().filter(|t| t.error_code == 0).count();
    assert!((10..=11).contains(&created), "{created}");
}
