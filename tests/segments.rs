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

/// The resident memory high-water mark of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// One-record segments (segment.bytes=14, Kafka's minimum) read from the first to the last:
/// every segment database opened and closed gives its buffers back (`serve` runs with a
/// fixed malloc mmap threshold), so the box stays small. Without it, reading 2,000 such
/// segments took a release build from 23 MB to 600 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_thousands_of_one_record_segments_stays_small() {
    let _watchdog = common::watchdog("reading_thousands_of_one_record_segments_stays_small");
    const N: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let admin = common::admin(broker.addr);
    let r = admin
        .create_topics(
            &[NewTopic::new("tiny", 1, TopicReplication::Fixed(1)).set("segment.bytes", "14")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    // One record per batch: each send awaited before the next.
    let p = common::producer(broker.addr, &[("linger.ms", "0"), ("acks", "1")]);
    for i in 0..N {
        p.send(
            FutureRecord::<(), _>::to("tiny").payload(&format!("record-{i}")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let before = peak_rss(broker.child.id());
    let got = common::consume_async(broker.addr, "tiny", 0, 0, N).await;
    assert_eq!(got.len(), N);
    assert_eq!(
        common::payload(&got[N - 1]),
        Some(format!("record-{}", N - 1).as_bytes())
    );
    let after = peak_rss(broker.child.id());
    assert!(
        after < before + 128 * 1024 * 1024,
        "reading {N} one-record segments took the box from {} MB to {} MB",
        before >> 20,
        after >> 20
    );
}
