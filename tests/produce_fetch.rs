//! Produce and read back with librdkafka (the rdkafka crate) against a real broker socket.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message};

const T: Duration = Duration::from_secs(30);

async fn produce_values(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    values: &[String],
) -> Vec<(i32, i64)> {
    let mut futures = Vec::with_capacity(values.len());
    for v in values {
        futures.push(
            p.send_result(FutureRecord::<(), _>::to(topic).payload(v.as_bytes()))
                .expect("queue"),
        );
    }
    let mut out = Vec::with_capacity(values.len());
    for f in futures {
        let d = f.await.expect("delivery future").expect("delivered");
        out.push((d.partition, d.offset));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_levels_store_and_read_back() {
    let _watchdog = common::watchdog("acks_levels_store_and_read_back");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let p = common::producer(addr, &[("acks", acks)]);
        let values: Vec<String> = (0..50).map(|i| format!("{acks}-{i}")).collect();
        let offsets = produce_values(&p, &topic, &values).await;
        if acks != "0" {
            let expect: Vec<(i32, i64)> = (0..50).map(|i| (0, i)).collect();
            assert_eq!(
                offsets, expect,
                "acks={acks}: offsets from the produce responses"
            );
        }
        let got = common::consume_async(addr, &topic, 0, 0, 50).await;
        let got: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(got, values, "acks={acks}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_is_stored_as_sent() {
    let _watchdog = common::watchdog("every_compression_codec_is_stored_as_sent");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let p = common::producer(addr, &[("compression.codec", codec), ("linger.ms", "50")]);
        // Compressible values so the codec really shrinks the batch.
        let values: Vec<String> = (0..200)
            .map(|i| format!("{codec} value {i} {}", "abc".repeat(30)))
            .collect();
        produce_values(&p, &topic, &values).await;
        // The stored batch carries the codec bits the client wrote.
        let t = server.store().topic(&topic).unwrap();
        let mut buf = bytes::BytesMut::new();
        server
            .store()
            .read(&t.partitions[0], 0, 1 << 20, true, &mut buf)
            .unwrap()
            .unwrap();
        let codecs: Vec<i16> = kafkabox_protocol::batch::split_batches(&buf)
            .map(|b| b.unwrap().0.attributes & 7)
            .collect();
        let want = match codec {
            "gzip" => 1,
            "snappy" => 2,
            "lz4" => 3,
            _ => 4,
        };
        // librdkafka sends a batch uncompressed when compressing would not shrink it, so
        // look for the codec across the stored batches.
        assert!(
            codecs.contains(&want),
            "{codec}: stored batches keep their codec, got {codecs:?}"
        );
        // kafkabox's own decoder reads the stored batches back to the produced values.
        let decoded: Vec<String> = kafkabox_protocol::batch::split_batches(&buf)
            .flat_map(|b| {
                kafkabox_protocol::batch::decode_batch(b.unwrap().1, 1 << 24)
                    .unwrap()
                    .1
            })
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(decoded, values, "{codec}: decode_batch");
        let got = common::consume_async(addr, &topic, 0, 0, values.len()).await;
        let got: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(got, values, "{codec}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_keys_headers_and_null_values() {
    let _watchdog = common::watchdog("idempotent_producer_keys_headers_and_null_values");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    let p = common::producer(addr, &[("enable.idempotence", "true")]);
    let topic = "kv";
    let mut futs = Vec::new();
    for i in 0..20 {
        let key = format!("key-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "source",
                value: Some("billing"),
            })
            .insert(Header {
                key: "n",
                value: Some(&i.to_string()),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let rec = FutureRecord::to(topic).key(&key).headers(headers);
        let rec = if i % 2 == 0 { rec.payload("v") } else { rec };
        futs.push(p.send_result(rec).expect("queue"));
    }
    for (i, f) in futs.into_iter().enumerate() {
        let d = f.await.unwrap().expect("delivered");
        assert_eq!(d.offset, i as i64);
    }
    let got = common::consume_async(addr, topic, 0, 0, 20).await;
    assert_eq!(got.len(), 20);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()));
        if i % 2 == 0 {
            assert_eq!(m.payload(), Some(&b"v"[..]));
        } else {
            assert_eq!(m.payload(), None, "null value stays null");
        }
        let h = m.headers().expect("headers");
        assert_eq!(h.count(), 3);
        assert_eq!(h.get(0).key, "source");
        assert_eq!(h.get(0).value, Some(&b"billing"[..]));
        assert_eq!(h.get(1).value, Some(i.to_string().as_bytes()));
        assert_eq!(h.get(2).value, None);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partitions_created_by_admin_client() {
    let _watchdog = common::watchdog("three_partitions_created_by_admin_client");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(T));
    let res = admin
        .create_topics(
            &[NewTopic::new("three", 3, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    // Creating it again is TOPIC_ALREADY_EXISTS.
    let again = admin
        .create_topics(
            &[NewTopic::new("three", 3, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            again[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))
        ),
        "{again:?}"
    );
    let bad = admin
        .create_topics(
            &[NewTopic::new("bad name!", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            bad[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::InvalidTopic))
        ),
        "{bad:?}"
    );
    let rf = admin
        .create_topics(
            &[NewTopic::new("rf3", 1, TopicReplication::Fixed(3))],
            &opts,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            rf[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor
            ))
        ),
        "{rf:?}"
    );

    let p = common::producer(addr, &[]);
    for part in 0..3 {
        for i in 0..10 {
            let v = format!("p{part}-{i}");
            let d = p
                .send(
                    FutureRecord::<(), _>::to("three")
                        .partition(part)
                        .payload(&v),
                    T,
                )
                .await
                .expect("delivered");
            assert_eq!((d.partition, d.offset), (part, i));
        }
    }
    for part in 0..3 {
        let got = common::consume_async(addr, "three", part, 0, 10).await;
        let want: Vec<String> = (0..10).map(|i| format!("p{part}-{i}")).collect();
        let got: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(got, want);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_in_order_and_seek_to_the_middle() {
    let _watchdog = common::watchdog("ten_thousand_messages_in_order_and_seek_to_the_middle");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    let p = common::producer(addr, &[("acks", "all")]);
    let values: Vec<String> = (0..10_000).map(|i| format!("message-{i:05}")).collect();
    let offsets = produce_values(&p, "many", &values).await;
    assert!(offsets.iter().enumerate().all(|(i, o)| *o == (0, i as i64)));
    let got = common::consume_async(addr, "many", 0, 0, 10_000).await;
    assert_eq!(got.len(), 10_000);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.payload(), Some(values[i].as_bytes()));
    }
    // Seeking into the middle of a batch: the client skips to the exact offset.
    let got = common::consume_async(addr, "many", 0, 4_321, 5).await;
    let offs: Vec<i64> = got.iter().map(|m| m.offset()).collect();
    assert_eq!(offs, vec![4321, 4322, 4323, 4324, 4325]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_restart_and_offsets_continue() {
    let _watchdog = common::watchdog("records_survive_a_restart_and_offsets_continue");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    {
        let p = common::producer(addr, &[("acks", "all"), ("enable.idempotence", "true")]);
        let values: Vec<String> = (0..100).map(|i| format!("before-{i}")).collect();
        produce_values(&p, "persist", &values).await;
    }
    server.shutdown().await.unwrap();

    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    let p = common::producer(addr, &[("acks", "all"), ("enable.idempotence", "true")]);
    let values: Vec<String> = (0..100).map(|i| format!("after-{i}")).collect();
    let offsets = produce_values(&p, "persist", &values).await;
    assert_eq!(
        offsets[0],
        (0, 100),
        "new records continue from the next offset"
    );
    let got = common::consume_async(addr, "persist", 0, 0, 200).await;
    assert_eq!(got.len(), 200);
    for (i, m) in got.iter().enumerate() {
        let want = if i < 100 {
            format!("before-{i}")
        } else {
            format!("after-{}", i - 100)
        };
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.payload(), Some(want.as_bytes()));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let _watchdog = common::watchdog("list_offsets_earliest_latest_and_by_timestamp");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    let p = common::producer(addr, &[("linger.ms", "0")]);
    for (i, ts) in [1_000i64, 2_000, 3_000].iter().enumerate() {
        let v = format!("at-{ts}");
        let d = p
            .send(
                FutureRecord::<(), _>::to("times")
                    .payload(&v)
                    .timestamp(*ts),
                T,
            )
            .await
            .expect("delivered");
        assert_eq!(d.offset, i as i64);
    }
    let result = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr.to_string())
            .set("group.id", "unused")
            .create()
            .unwrap();
        let watermarks = c.fetch_watermarks("times", 0, T).unwrap();
        let mut q = TopicPartitionList::new();
        q.add_partition_offset("times", 0, Offset::Offset(1_500))
            .unwrap();
        let by_time = c.offsets_for_times(q, T).unwrap();
        let mut late = TopicPartitionList::new();
        late.add_partition_offset("times", 0, Offset::Offset(9_999))
            .unwrap();
        let none = c.offsets_for_times(late, T).unwrap();
        (
            watermarks,
            by_time.elements()[0].offset(),
            none.elements()[0].offset(),
        )
    })
    .await
    .unwrap();
    assert_eq!(result.0, (0, 3), "earliest and latest");
    assert_eq!(
        result.1,
        rdkafka::Offset::Offset(1),
        "first record at or after t=1500"
    );
    assert_eq!(result.2, rdkafka::Offset::End, "no record that recent");
    server.shutdown().await.unwrap();
}
