//! The request sequences of clients that cannot run here, replayed at the exact versions they
//! use (from Kafka's protocol specs and the clients' sources): the Java producer of
//! kafka-clients 3.5 (ApiVersions v3, Metadata v12, InitProducerId v4, Produce v9, idempotent,
//! acks=all), kafkajs (InitProducerId v0/v1, admin requests to the Metadata controller) and
//! kafka-python 3's first ApiVersions v4. Requests are encoded with kafka-protocol's client side.

mod common;

use common::Conn;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafkabox_protocol::batch::{encode_uncompressed, ProducerFields};

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(name: &str, batch: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kafka_clients_3_5_idempotent_producer() {
    let _watchdog = common::watchdog("java_kafka_clients_3_5_idempotent_producer");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let mut c = Conn::open(server.kafka_addr()).await;

    let av: ApiVersionsResponse = c
        .call(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("apache-kafka-java"))
                .with_client_software_version(StrBytes::from_static_str("3.5.0")),
        )
        .await;
    assert_eq!(av.error_code, 0);
    let range = |k: ApiKey| {
        av.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    assert_eq!(range(ApiKey::Produce), Some((3, 12)));
    assert_eq!(range(ApiKey::InitProducerId), Some((0, 5)));

    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic("customer-events")))
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 1);
    assert!(!md.topics[0].topic_id.is_nil());
    assert_eq!(md.controller_id.0, 0);
    assert_eq!(md.brokers[0].port, server.kafka_addr().port() as i32);
    let cluster = md.cluster_id.clone().unwrap();

    let ip: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(ip.error_code, 0);
    let pid = ip.producer_id.0;
    assert!(pid >= 0);

    let fields = |seq| ProducerFields {
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: seq,
    };
    let b0 = encode_uncompressed(
        &[(None, Some(b"{\"a\":1}")), (None, Some(b"{\"a\":2}"))],
        1_700_000_000_000,
        fields(0),
    );
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce("customer-events", b0.clone()))
        .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The retry of a batch whose response was lost: same offsets, nothing appended.
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce("customer-events", b0))
        .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER.
    let gap = encode_uncompressed(&[(None, Some(b"x"))], 1_700_000_000_000, fields(5));
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce("customer-events", gap))
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 45);
    // The next batch in sequence continues at offset 2.
    let next = encode_uncompressed(&[(None, Some(b"x"))], 1_700_000_000_000, fields(2));
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce("customer-events", next))
        .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 2));
    // A producer id this broker never issued: UNKNOWN_PRODUCER_ID.
    let alien = encode_uncompressed(
        &[(None, Some(b"x"))],
        0,
        ProducerFields {
            producer_id: pid + 1000,
            producer_epoch: 0,
            base_sequence: 0,
        },
    );
    let r: ProduceResponse = c
        .call(ApiKey::Produce, 9, &produce("customer-events", alien))
        .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 59);

    // The cluster id is stable across a restart of the same data dir.
    server.shutdown().await.unwrap();
    let server = common::start(dir.path()).await;
    let mut c = Conn::open(server.kafka_addr()).await;
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert_eq!(md.cluster_id.unwrap(), cluster);
    assert_eq!(md.topics.len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_and_kafka_python_first_requests() {
    let _watchdog = common::watchdog("kafkajs_and_kafka_python_first_requests");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let mut c = Conn::open(server.kafka_addr()).await;
    // kafka-python 3 opens with ApiVersions v4.
    let av: ApiVersionsResponse = c
        .call(
            ApiKey::ApiVersions,
            4,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("kafka-python"))
                .with_client_software_version(StrBytes::from_static_str("3.0.12")),
        )
        .await;
    assert_eq!(av.error_code, 0);
    // An invalid software name: INVALID_REQUEST, as Kafka answers.
    let bad: ApiVersionsResponse = c
        .call(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("bad name"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .await;
    assert_eq!(bad.error_code, 42);
    // kafkajs: Metadata names the controller, admin requests go there.
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            5,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )
        .await;
    assert_eq!(md.controller_id.0, md.brokers[0].node_id.0);
    assert!(
        md.topics.is_empty(),
        "an empty topic list means none from v1"
    );
    let ct: CreateTopicsResponse = c
        .call(
            ApiKey::CreateTopics,
            2,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic("js-topic"))
                    .with_num_partitions(2)
                    .with_replication_factor(1)])
                .with_timeout_ms(5_000),
        )
        .await;
    assert_eq!(ct.topics[0].error_code, 0);
    for v in [0, 1] {
        let ip: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                v,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000),
            )
            .await;
        assert_eq!(ip.error_code, 0);
        assert!(ip.producer_id.0 >= 0);
    }
    // Transactional producers: Kafka's codes for an empty id (INVALID_REQUEST) and a timeout
    // outside 1..=transaction.max.timeout.ms (INVALID_TRANSACTION_TIMEOUT); then epoch 0.
    let ip: InitProducerIdResponse = c
        .call(ApiKey::InitProducerId, 1, &InitProducerIdRequest::default())
        .await;
    assert_eq!(ip.error_code, 42);
    let tx = || {
        InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx")),
        ))
    };
    let ip: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 1, &tx()).await;
    assert_eq!(ip.error_code, 50);
    let ip: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            1,
            &tx().with_transaction_timeout_ms(900_001),
        )
        .await;
    assert_eq!(ip.error_code, 50);
    let ip: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            1,
            &tx().with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!((ip.error_code, ip.producer_epoch), (0, 0));
    assert!(ip.producer_id.0 >= 0);
    // Metadata v0 with an empty list means all topics; auto-creation refused by the request flag.
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            0,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )
        .await;
    assert_eq!(md.topics.len(), 1);
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            4,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic("not-created")))
                ]))
                .with_allow_auto_topic_creation(false),
        )
        .await;
    assert_eq!(md.topics[0].error_code, 3);
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            4,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic("bad/name")))
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    assert_eq!(md.topics[0].error_code, 17);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_setting_turns_auto_creation_off() {
    let _watchdog = common::watchdog("broker_setting_turns_auto_creation_off");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("auto.create.topics.enable", "false")]).await;
    let mut c = Conn::open(server.kafka_addr()).await;
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic("customer-events")))
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    assert_eq!(md.topics[0].error_code, 3);
    assert!(server.store().topic("customer-events").is_none());
    server.shutdown().await.unwrap();
}

fn fetch_req(
    version_max_bytes: i32,
    parts: &[(i32, i64, i32)],
) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    kafka_protocol::messages::FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(version_max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic("lim"))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, off, pmax)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(off)
                            .with_partition_max_bytes(pmax)
                    })
                    .collect(),
            )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_honours_byte_limits_offsets_and_errors() {
    let _watchdog = common::watchdog("fetch_honours_byte_limits_offsets_and_errors");
    use kafka_protocol::messages::FetchResponse;
    use kafkabox_protocol::batch::{parse_header, split_batches};
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let t = server
        .store()
        .create_topic("lim", 2, Default::default())
        .unwrap();
    let value = vec![b'v'; 300];
    // Current timestamps: retention (7 days by default) would remove old ones.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = encode_uncompressed(
        &[
            (None, Some(&value)),
            (None, Some(&value)),
            (None, Some(&value)),
        ],
        now,
        ProducerFields::NONE,
    );
    for p in &t.partitions {
        for _ in 0..3 {
            let h =
                kafkabox_protocol::batch::validate_produce_batch(&batch, 1 << 20, None).unwrap();
            server.store().append(p, &batch, &h).unwrap();
        }
    }
    // Readers see what a flush covered (the high watermark).
    server.store().flush().unwrap();
    let blen = batch.len() as i32;
    let mut c = Conn::open(server.kafka_addr()).await;
    let batches = |r: &FetchResponse, p: usize| -> Vec<i64> {
        let recs = r.responses[0].partitions[p]
            .records
            .clone()
            .unwrap_or_default();
        split_batches(&recs)
            .map(|b| b.unwrap().0.base_offset)
            .collect()
    };
    // max_bytes across the response: the first partition gets what fits (at least one batch),
    // the second nothing once the limit is reached.
    let r: FetchResponse = c
        .call(
            ApiKey::Fetch,
            11,
            &fetch_req(blen + blen / 2, &[(0, 0, 1 << 20), (1, 0, 1 << 20)]),
        )
        .await;
    assert_eq!(batches(&r, 0), vec![0]);
    assert_eq!(batches(&r, 1), Vec::<i64>::new());
    // partition_max_bytes below one batch: KIP-74 returns the first batch of the first
    // non-empty partition whole, and no more.
    let r: FetchResponse = c
        .call(
            ApiKey::Fetch,
            11,
            &fetch_req(1 << 20, &[(0, 0, 1), (1, 0, 1)]),
        )
        .await;
    assert_eq!(batches(&r, 0), vec![0]);
    assert_eq!(batches(&r, 1), Vec::<i64>::new());
    // Room for everything.
    let r: FetchResponse = c
        .call(
            ApiKey::Fetch,
            4,
            &fetch_req(1 << 20, &[(0, 0, 1 << 20), (1, 3, 1 << 20)]),
        )
        .await;
    assert_eq!(batches(&r, 0), vec![0, 3, 6]);
    assert_eq!(batches(&r, 1), vec![3, 6]);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 9);
    // An offset inside a batch returns that whole batch, bytes as stored.
    let r: FetchResponse = c
        .call(ApiKey::Fetch, 11, &fetch_req(1 << 20, &[(0, 4, blen)]))
        .await;
    let recs = r.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(parse_header(&recs).unwrap().base_offset, 3);
    assert_eq!(&recs[21..], &batch[21..], "served unchanged");
    // Out of range, at the end (empty), unknown partition.
    let r: FetchResponse = c
        .call(
            ApiKey::Fetch,
            11,
            &fetch_req(1 << 20, &[(0, 10, 1000), (1, 9, 1000)]),
        )
        .await;
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    assert_eq!(r.responses[0].partitions[1].error_code, 0);
    assert_eq!(batches(&r, 1), Vec::<i64>::new());
    let r: FetchResponse = c
        .call(ApiKey::Fetch, 11, &fetch_req(1 << 20, &[(7, 0, 1000)]))
        .await;
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
    // A long poll at the log end is answered, empty, when its wait ends.
    let mut long = fetch_req(1 << 20, &[(1, 9, 1000)]);
    long.max_wait_ms = 300;
    long.min_bytes = 1;
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &long).await;
    assert_eq!(batches(&r, 0), Vec::<i64>::new());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_batches_unless_the_topic_keeps_them() {
    let _watchdog = common::watchdog("retention_removes_old_batches_unless_the_topic_keeps_them");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let store = server.store().clone();
    let drop_t = store
        .create_topic("old-default", 1, Default::default())
        .unwrap();
    let keep_t = store
        .create_topic(
            "old-kept",
            1,
            [("retention.ms".to_string(), "-1".to_string())].into(),
        )
        .unwrap();
    // Records stamped in 1970: far older than the default log.retention.ms (7 days).
    let batch = encode_uncompressed(&[(None, Some(b"old"))], 1_000, ProducerFields::NONE);
    let h = kafkabox_protocol::batch::validate_produce_batch(&batch, 1 << 20, None).unwrap();
    for _ in 0..3 {
        store.append(&drop_t.partitions[0], &batch, &h).unwrap();
        store.append(&keep_t.partitions[0], &batch, &h).unwrap();
    }
    drop((drop_t, keep_t, store));
    server.shutdown().await.unwrap();
    // Retention runs when the broker starts, then every log.retention.check.interval.ms.
    let server = common::start_with(dir.path(), &[("log.retention.check.interval.ms", "50")]).await;
    let store = server.store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dropped = store.topic("old-default").unwrap();
    // (The first broker's start-up sweep may already have removed some while they were
    // appended: wait for the expected state.)
    while store.offsets(&dropped.partitions[0]).log_start < 3
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let o = store.offsets(&dropped.partitions[0]);
    assert_eq!(
        (o.log_start, o.log_end),
        (3, 3),
        "the old segment removed whole (as Kafka rolls and deletes it), the log end kept"
    );
    let kept = store.topic("old-kept").unwrap();
    let o = store.offsets(&kept.partitions[0]);
    assert_eq!(
        (o.log_start, o.log_end),
        (0, 3),
        "retention.ms=-1 keeps everything"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_take_effect_retention_bytes_and_max_message_bytes() {
    let _watchdog =
        common::watchdog("topic_configs_take_effect_retention_bytes_and_max_message_bytes");
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::FutureRecord;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("log.retention.check.interval.ms", "50")]).await;
    let addr = server.kafka_addr();
    let admin = common::admin(addr);
    let batch = encode_uncompressed(
        &[(None, Some(&[1u8; 500][..]))],
        1_000,
        ProducerFields::NONE,
    );
    let two_batches = (2 * batch.len()).to_string();
    let r = admin
        .create_topics(
            &[
                NewTopic::new("sized", 1, TopicReplication::Fixed(1))
                    .set("retention.bytes", &two_batches)
                    .set("segment.bytes", &batch.len().to_string())
                    .set("retention.ms", "-1"),
                NewTopic::new("small-messages", 1, TopicReplication::Fixed(1))
                    .set("max.message.bytes", "200"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r.iter().all(|t| t.is_ok()), "{r:?}");
    // retention.bytes: the oldest segments (one batch each here) go until two remain.
    let store = server.store().clone();
    let sized = store.topic("sized").unwrap();
    let h = kafkabox_protocol::batch::validate_produce_batch(&batch, 1 << 20, None).unwrap();
    for _ in 0..5 {
        store.append(&sized.partitions[0], &batch, &h).unwrap();
    }
    store.flush().unwrap();
    common::wait_until("retention.bytes to trim the partition", || {
        store.offsets(&sized.partitions[0]).log_start == 3
    })
    .await;
    assert_eq!(store.offsets(&sized.partitions[0]).log_end, 5);
    // max.message.bytes: a batch over the topic's limit is refused with MESSAGE_TOO_LARGE, one
    // under it is stored.
    let p = common::producer(addr, &[("message.timeout.ms", "5000")]);
    let big = vec![b'x'; 400];
    let err = p
        .send(
            FutureRecord::<(), _>::to("small-messages").payload(&big),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect_err("over max.message.bytes");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
        "{err:?}"
    );
    p.send(
        FutureRecord::<(), _>::to("small-messages").payload("small"),
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("under max.message.bytes");
    drop((p, admin, store, sized));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_broker_configs_take_effect_and_survive_restart() {
    let _watchdog = common::watchdog("dynamic_broker_configs_take_effect_and_survive_restart");
    use rdkafka::admin::{
        AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
    };
    use rdkafka::config::ClientConfig;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let admin = |addr: std::net::SocketAddr| -> AdminClient<rdkafka::client::DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", addr.to_string())
            .create()
            .unwrap()
    };
    let a = admin(server.kafka_addr());
    a.create_topics(
        &[NewTopic::new("defaults", 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    )
    .await
    .unwrap();
    // log.retention.ms for broker 0 becomes every topic's default retention.ms.
    let r = a
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Broker(0)).set("log.retention.ms", "3600000")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    // A config kafkabox sets only at start-up is refused, naming it (asked over a raw request:
    // rdkafka 0.39 reports per-resource AlterConfigs errors as success).
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let req = kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("0"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("num.partitions"))
                .with_value(Some(StrBytes::from_static_str("3")))]),
    ]);
    let r: kafka_protocol::messages::AlterConfigsResponse =
        common::call(server.kafka_addr(), ApiKey::AlterConfigs, 2, &req).await;
    assert_eq!(r.responses[0].error_code, 42);
    assert!(r.responses[0]
        .error_message
        .as_ref()
        .unwrap()
        .contains("num.partitions"));
    let check = |a: AdminClient<rdkafka::client::DefaultClientContext>| async move {
        let d = a
            .describe_configs(
                &[
                    ResourceSpecifier::Broker(0),
                    ResourceSpecifier::Topic("defaults"),
                ],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        let broker = d[0].as_ref().unwrap();
        let e = broker.get("log.retention.ms").unwrap();
        assert_eq!(e.value.as_deref(), Some("3600000"));
        assert!(!e.is_read_only);
        assert!(broker.get("num.partitions").unwrap().is_read_only);
        let topic = d[1].as_ref().unwrap();
        assert_eq!(
            topic.get("retention.ms").unwrap().value.as_deref(),
            Some("3600000")
        );
    };
    check(a).await;
    server.shutdown().await.unwrap();
    let server = common::start(dir.path()).await;
    check(admin(server.kafka_addr())).await;
    server.shutdown().await.unwrap();
}
