//! A data dir written by kafkabox before the segmented store (one sled database,
//! tests/fixtures/v1-data.tar.gz, made by tests/fixtures/v1-data.make.py against that version)
//! opens in the real binary with every record, offset, group offset, profile and dead letter,
//! takes new writes into segments, and survives a kill -9 after them.

mod common;

use std::time::Duration;

use common::{http, BrokerProcess};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

fn unpack(into: &std::path::Path) -> std::path::PathBuf {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-data.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking {}", fixture.display());
    into.join("data")
}

fn offsets(http_addr: std::net::SocketAddr) -> Vec<(String, i64, i64, i64)> {
    let topics = http(http_addr, "GET", "/api/topics", None, None).json();
    let mut out = Vec::new();
    for t in topics.as_array().expect("topics") {
        for p in t["partitions"].as_array().expect("partitions") {
            out.push((
                t["name"].as_str().unwrap_or_default().to_string(),
                p["partition"].as_i64().unwrap_or(-1),
                p["log_start_offset"].as_i64().unwrap_or(-1),
                p["log_end_offset"].as_i64().unwrap_or(-1),
            ));
        }
    }
    out.sort();
    out
}

fn group_offsets(http_addr: std::net::SocketAddr, group: &str) -> Vec<(i64, i64)> {
    let groups = http(http_addr, "GET", "/api/groups", None, None).json();
    let g = groups
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group_id"] == group)
        .unwrap_or_else(|| panic!("group {group} in {groups}"))
        .clone();
    let mut v: Vec<(i64, i64)> = g["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            (
                o["partition"].as_i64().unwrap_or(-1),
                o["committed_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    v.sort();
    v
}

fn customer_events(http_addr: std::net::SocketAddr) -> Vec<(String, i64)> {
    let body = http(http_addr, "GET", "/api/customers", None, None).json();
    let mut v: Vec<(String, i64)> = body["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| {
            (
                c["customer_id"].as_str().unwrap_or_default().to_string(),
                c["events"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(t: &str, p: i64, start: i64, end: i64) -> (String, i64, i64, i64) {
    (t.to_string(), p, start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_single_database_layout_keeps_everything() {
    let _watchdog = common::watchdog("a_data_dir_of_the_single_database_layout_keeps_everything");
    let dir = tempfile::tempdir().unwrap();
    let data = unpack(dir.path());
    // The fixture's records are old: retention would take them.
    let keep = ["--set", "log.retention.ms=-1"];
    let mut broker = BrokerProcess::spawn(&data, &keep);
    let h = broker.http_addr();
    // What the old version reported for this data dir.
    assert_eq!(
        offsets(h),
        vec![
            row("customer-events", 0, 0, 20),
            row("customer-events.dlq", 0, 0, 1),
            row("orders", 0, 0, 120),
            row("orders", 1, 0, 90),
            row("orders", 2, 0, 90),
        ]
    );
    assert_eq!(group_offsets(h, "g1"), vec![(1, 60), (2, 90)]);
    let customers = vec![
        ("c0".to_string(), 5),
        ("c1".to_string(), 5),
        ("c2".to_string(), 5),
        ("c3".to_string(), 4),
    ];
    assert_eq!(customer_events(h), customers);
    // Every record of `orders` reads back: values {"n": 0..299}, each with its header.
    let mut seen = Vec::new();
    for (p, count) in [(0, 120), (1, 90), (2, 90)] {
        let msgs = common::consume_async(broker.addr, "orders", p, 0, count).await;
        assert_eq!(msgs.len(), count, "partition {p}");
        for m in &msgs {
            let v: Value = serde_json::from_slice(common::payload(m).unwrap()).unwrap();
            seen.push(v["n"].as_i64().unwrap());
            assert_eq!(common::header(m, "h").as_deref(), Some("v"));
        }
    }
    seen.sort();
    assert_eq!(seen, (0..300).collect::<Vec<i64>>());

    // New writes: to the upgraded partitions, through the contract stage and the profiles.
    let p = common::producer(broker.addr, &[("enable.idempotence", "true")]);
    for i in 0..10 {
        p.send(
            FutureRecord::to("orders")
                .partition(0)
                .key("new")
                .payload(&format!("{{\"n\": {}}}", 300 + i)),
            Duration::from_secs(30),
        )
        .await
        .expect("produce to an upgraded partition");
    }
    for (i, value) in [
        r#"{"source":"crm","customer_id":"c3","event_type":"recharge","timestamp":"2026-11-30T11:00:00Z","value":1}"#,
        r#"{"source":"crm","customer_id":"c9","event_type":"recharge","timestamp":"2026-11-30T11:00:00Z","value":1}"#,
        r#"{"not":"an event"}"#,
    ]
    .iter()
    .enumerate()
    {
        p.send(
            FutureRecord::to("customer-events")
                .key(&format!("k{i}"))
                .payload(*value),
            Duration::from_secs(30),
        )
        .await
        .expect("produce a customer event");
    }
    let mut expected = customers.clone();
    expected[3].1 = 5;
    expected.push(("c9".to_string(), 1));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while customer_events(h) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "profiles after the upgrade: {:?}",
            customer_events(h)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want = vec![
        row("customer-events", 0, 0, 23),
        row("customer-events.dlq", 0, 0, 2),
        row("orders", 0, 0, 130),
        row("orders", 1, 0, 90),
        row("orders", 2, 0, 90),
    ];
    while offsets(h) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "offsets after the upgrade: {:?}",
            offsets(h)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new records went to segments of their own.
    let segments = std::fs::read_dir(data.join("segments")).unwrap().count();
    assert!(segments >= 3, "{segments} partitions with segments");
    drop(p);

    // kill -9 after the new writes: everything is still there, old and new.
    broker.kill9();
    let broker = BrokerProcess::spawn(&data, &keep);
    let h = broker.http_addr();
    assert_eq!(offsets(h), want);
    assert_eq!(group_offsets(h, "g1"), vec![(1, 60), (2, 90)]);
    assert_eq!(customer_events(h), expected);
    let msgs = common::consume_async(broker.addr, "orders", 0, 115, 15).await;
    let values: Vec<i64> = msgs
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(common::payload(m).unwrap()).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(values.len(), 15);
    assert_eq!(&values[5..], &(300..310).collect::<Vec<i64>>()[..]);
    let dlq = common::consume_async(broker.addr, "customer-events.dlq", 0, 0, 2).await;
    assert_eq!(dlq.len(), 2);
    assert_eq!(
        common::payload(&dlq[1]),
        Some(&br#"{"not":"an event"}"#[..])
    );
}
