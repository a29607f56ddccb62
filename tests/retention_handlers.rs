//! Retention waits for the handlers (issue 9): records older than `retention.ms` that a
//! handler stage has not committed past stay, across a kill -9 and restart, and `/metrics`
//! and the log say so; a topic with `kafkabox.retention.waits.for.handlers=false` is trimmed
//! by age alone, as Kafka does.

mod common;

use std::time::{Duration, Instant};

use common::{http, BrokerProcess};
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::producer::FutureRecord;

/// (log start, log end) of partition 0 of `topic`, from the HTTP API.
fn offsets(h: std::net::SocketAddr, topic: &str) -> (i64, i64) {
    let t = http(h, "GET", &format!("/api/topics/{topic}"), None, None).json();
    let p = &t["partitions"][0];
    (
        p["log_start_offset"].as_i64().unwrap(),
        p["log_end_offset"].as_i64().unwrap(),
    )
}

fn held_back(h: std::net::SocketAddr, topic: &str) -> Option<i64> {
    let metrics = http(h, "GET", "/metrics", None, None).body;
    let prefix =
        format!("kafkabox_retention_held_back_records{{topic=\"{topic}\",partition=\"0\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn spawn(data: &std::path::Path) -> BrokerProcess {
    BrokerProcess::spawn(
        data,
        &[
            "--set",
            "handlers.orders=exec",
            "--set",
            "handlers.orders-free=exec",
            // The handler fails every time: its stage retries and never commits.
            "--set",
            "exec.command=exit 1",
            "--set",
            "log.retention.ms=60000",
            "--set",
            "log.retention.check.interval.ms=200",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_a_handler_has_not_handled() {
    let _watchdog = common::watchdog("retention_keeps_what_a_handler_has_not_handled");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = spawn(&data);
    let h = broker.http_addr();
    let admin = common::admin(broker.addr);
    let r = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("orders-free"))
                .set("kafkabox.retention.waits.for.handlers", "false")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    // Ten records stamped in 1970 on each topic: far older than retention.ms.
    let p = common::producer(broker.addr, &[]);
    for topic in ["orders", "orders-free"] {
        for i in 0..10 {
            p.send(
                FutureRecord::<(), _>::to(topic)
                    .payload(&format!("{{\"n\":{i}}}"))
                    .timestamp(1_000 + i),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
        }
    }
    drop(p);
    // The topic that does not wait is trimmed by age; the other keeps all ten and says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets(h, "orders-free") != (10, 10) || held_back(h, "orders") != Some(10) {
        assert!(
            Instant::now() < deadline,
            "orders-free {:?}, orders held back {:?}",
            offsets(h, "orders-free"),
            held_back(h, "orders")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(offsets(h, "orders"), (0, 10));
    assert!(
        broker.log_text().contains("retention is held back"),
        "{}",
        broker.log_text()
    );
    // A box that was off (kill -9 here) keeps them too after it starts again.
    broker.kill9();
    let broker = spawn(&data);
    let h = broker.http_addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    while held_back(h, "orders") != Some(10) {
        assert!(
            Instant::now() < deadline,
            "no retention sweep after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(offsets(h, "orders"), (0, 10));
    let got = common::consume_async(broker.addr, "orders", 0, 0, 10).await;
    assert_eq!(got.len(), 10);
}
