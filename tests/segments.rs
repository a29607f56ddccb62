//! Segments through the real binary: `log.roll.ms` rolls a partition's segment by age, a
//! topic's `segment.ms` overrides it, reads cross the segments, and no more than
//! `storage.segments.open.max` segment databases are open (the `/metrics` gauge).

mod common;

use std::time::Duration;

use common::{http, BrokerProcess};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

fn open_segments(metrics: &str) -> i64 {
    metrics
        .lines()
        .find(|l| l.starts_with("kafkabox_storage_open_segments "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no open segments gauge in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_by_age_and_open_ones_stay_bounded() {
    let _watchdog = common::watchdog("segments_roll_by_age_and_open_ones_stay_bounded");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            "log.roll.ms=300",
            "--set",
            "storage.segments.open.max=2",
        ],
    );
    let admin = common::admin(broker.addr);
    let r = admin
        .create_topics(
            &[
                NewTopic::new("rolled", 4, TopicReplication::Fixed(1)),
                NewTopic::new("kept", 1, TopicReplication::Fixed(1)).set("segment.ms", "3600000"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r.iter().all(|t| t.is_ok()), "{r:?}");
    let p = common::producer(broker.addr, &[("linger.ms", "0")]);
    // Four rounds, each after the segments of the round before are older than log.roll.ms.
    for round in 0..4 {
        for partition in 0..4 {
            for i in 0..5 {
                p.send(
                    FutureRecord::<(), _>::to("rolled")
                        .partition(partition)
                        .payload(&format!("r{round}-p{partition}-{i}")),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce");
            }
        }
        p.send(
            FutureRecord::<(), _>::to("kept").payload(&format!("r{round}")),
            Duration::from_secs(30),
        )
        .await
        .expect("produce");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // One directory per written partition (rolled's four, kept's one), each holding its
    // segments.
    let mut counts: Vec<usize> = std::fs::read_dir(data.join("segments"))
        .unwrap()
        .map(|p| std::fs::read_dir(p.unwrap().path()).unwrap().count())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![1, 4, 4, 4, 4],
        "segment.ms of `kept` wins over log.roll.ms"
    );
    // Every record reads back across the segments, in order.
    for partition in 0..4 {
        let got = common::consume_async(broker.addr, "rolled", partition, 0, 20).await;
        let values: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8_lossy(m.payload().unwrap()).into_owned())
            .collect();
        let want: Vec<String> = (0..4)
            .flat_map(|round| (0..5).map(move |i| format!("r{round}-p{partition}-{i}")))
            .collect();
        assert_eq!(values, want);
    }
    let metrics = http(broker.http_addr(), "GET", "/metrics", None, None).body;
    assert!(open_segments(&metrics) <= 2, "{metrics}");
}
