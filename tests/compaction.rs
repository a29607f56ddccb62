//! Log compaction through the real binary: a `cleanup.policy=compact` topic with small
//! `segment.bytes` keeps the latest record of each key at its original offset and drops
//! tombstones after `delete.retention.ms`, as a Kafka consumer reading it from the start sees.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_record_per_key() {
    let _watchdog = common::watchdog("a_compacted_topic_keeps_the_latest_record_per_key");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &["--set", "log.retention.check.interval.ms=100"],
    );
    let admin = common::admin(broker.addr);
    let r = admin
        .create_topics(
            &[NewTopic::new("changelog", 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")
                .set("segment.bytes", "300")
                .set("delete.retention.ms", "0")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r.iter().all(|t| t.is_ok()), "{r:?}");
    let p = common::producer(broker.addr, &[("linger.ms", "0")]);
    // Five rounds over ten keys, then a tombstone for k3: the latest offset of each key.
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..5 {
        for k in 0..10 {
            let key = format!("k{k}");
            let value = format!("v{round}-{key}");
            let offset = p
                .send(
                    FutureRecord::to("changelog").key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce")
                .offset;
            latest.insert(key, (offset, Some(value)));
        }
    }
    let offset = p
        .send(
            FutureRecord::<str, str>::to("changelog").key("k3"),
            Duration::from_secs(30),
        )
        .await
        .expect("produce a tombstone")
        .offset;
    latest.insert("k3".into(), (offset, None));
    // Records of another key roll the segments holding the ones above (the newest segment is
    // never compacted).
    let mut end = 0;
    for i in 0..10 {
        end = p
            .send(
                FutureRecord::to("changelog")
                    .key("filler")
                    .payload(&format!("f{i}")),
                Duration::from_secs(30),
            )
            .await
            .expect("produce filler")
            .offset
            + 1;
    }
    let mut want: Vec<(i64, String, Option<String>)> = latest
        .into_iter()
        .filter(|(_, (_, v))| v.is_some())
        .map(|(k, (o, v))| (o, k, v))
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Everything from offset 0: the log end is unchanged, the records are what remains.
        let addr = broker.addr;
        // All there is (fewer than 1,000 records), bounded by 3 s.
        let read = tokio::task::spawn_blocking(move || {
            common::consume(addr, "changelog", 0, 0, 1_000, Duration::from_secs(3))
        })
        .await
        .unwrap();
        let got: Vec<(i64, String, Option<String>)> = read
            .into_iter()
            .filter(|m| m.offset() < end)
            .map(|m| {
                (
                    m.offset(),
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .filter(|(_, k, _)| k != "filler")
            .collect();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after compaction, expected {want:?}, read {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        broker.log_text().contains("compacted"),
        "{}",
        broker.log_text()
    );
}
