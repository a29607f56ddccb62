//! Stored state stays bounded whatever valid events carry (issue 9): 150 events of one
//! customer, each with ~900 KB of metadata and its own source, through the real binary, leave a
//! profile of bounded size; an invalid event with a 900 KB value leaves a dead letter whose reason
//! header is short.

mod common;

use std::time::{Duration, Instant};

use common::{http, BrokerProcess};
use rdkafka::producer::FutureRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_dead_letter_reasons_stay_small() {
    let _watchdog = common::watchdog("profiles_and_dead_letter_reasons_stay_small");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let h = broker.http_addr();
    let p = common::producer(broker.addr, &[]);
    let metadata = "m".repeat(900_000);
    for i in 0..150 {
        let e = serde_json::json!({"source": format!("source-{i}"), "customer_id": "42",
            "event_type": "recharge", "timestamp": "2026-11-30T10:00:00Z", "value": 1,
            "metadata": {"blob": metadata}});
        p.send(
            FutureRecord::to("customer-events")
                .key("42")
                .payload(&e.to_string()),
            Duration::from_secs(30),
        )
        .await
        .expect("produce");
    }
    let huge_type = "z".repeat(900_000);
    let invalid = format!(
        r#"{{"source":"crm","customer_id":"7","event_type":"{huge_type}","timestamp":"2026-11-30T10:00:00Z"}}"#
    );
    p.send(
        FutureRecord::to("customer-events")
            .key("7")
            .payload(&invalid),
        Duration::from_secs(30),
    )
    .await
    .expect("produce the invalid event");
    let deadline = Instant::now() + Duration::from_secs(60);
    let profile = loop {
        let r = http(h, "GET", "/api/customers/42", None, None);
        if r.status == 200 && r.json()["events"] == 150 {
            break r.body;
        }
        assert!(
            Instant::now() < deadline,
            "profile: {} {}",
            r.status,
            &r.body[..r.body.len().min(300)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        profile.len() < 300_000,
        "a profile of {} bytes",
        profile.len()
    );
    let dlq = common::consume_async(broker.addr, "customer-events.dlq", 0, 0, 1).await;
    let reason = common::header(&dlq[0], "kafkabox.dlq.reason").expect("a reason header");
    assert!(reason.len() <= 1024, "a reason of {} bytes", reason.len());
    assert!(reason.contains("/event_type"), "{reason}");
    assert!(
        broker.log_text().len() < 200_000,
        "log of {} bytes",
        broker.log_text().len()
    );
}
