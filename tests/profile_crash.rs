//! Crash and restart with a backlog: `kill -9` of `kafkabox serve` while its profile handler
//! and dead-letter stage work through 20,000 events (every 100th invalid); after restarts every
//! valid event is reflected in the profiles exactly once, every invalid one is in the
//! dead-letter topic exactly once, and both resumed where they stopped.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::BrokerProcess;
use kafkabox_storage::{Store, StoreConfig};
use rdkafka::producer::FutureRecord;

const EVENTS: usize = 20_000;
const CUSTOMERS: usize = 10;

/// (profile stage offset, log end) of partition 0 of customer-events, read from the stopped
/// broker's data dir.
fn progress(data: &std::path::Path) -> (i64, i64) {
    let store = Store::open(StoreConfig::new(data)).unwrap();
    let t = store.topic("customer-events").unwrap();
    let p = &t.partitions[0];
    let r = (
        store.consumer_offset(p, "profile").unwrap(),
        store.offsets(p).log_end,
    );
    store.close().unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backlog_counts_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &[]);
    let p = common::producer(broker.addr, &[("acks", "all")]);
    let mut futs = Vec::with_capacity(EVENTS);
    let mut expected: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut invalid = 0;
    for i in 0..EVENTS {
        if i % 100 == 99 {
            invalid += 1;
            let bad = format!(
                r#"{{"source":"billing","customer_id":"c0","event_type":"refund","n":{i}}}"#
            );
            futs.push(
                p.send_result(FutureRecord::to("customer-events").key("c0").payload(&bad))
                    .expect("queued"),
            );
            continue;
        }
        let customer = format!("c{}", i % CUSTOMERS);
        let value = (i % 100) as f64;
        let e = expected.entry(customer.clone()).or_default();
        e.0 += 1;
        e.1 += value;
        let event = format!(
            r#"{{"source":"billing","customer_id":"{customer}","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":{value}}}"#
        );
        futs.push(
            p.send_result(
                FutureRecord::to("customer-events")
                    .key(&customer)
                    .payload(&event),
            )
            .expect("queued"),
        );
    }
    for f in futs {
        f.await.unwrap().expect("acknowledged");
    }
    drop(p);
    // The profile handler is working through the backlog: kill it without any shutdown.
    broker.kill9();
    let (handled, end) = progress(&data);
    assert_eq!(end, EVENTS as i64, "every acknowledged event is in the log");
    eprintln!("profile and dead-letter stages at offset {handled} of {end} when killed");

    // Restart until the handler has caught up (bounded), stopping cleanly each time.
    let mut attempts = 0;
    loop {
        let mut broker = BrokerProcess::spawn(&data, &[]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(broker.terminate().code(), Some(0));
        let (handled, end) = progress(&data);
        if handled == end {
            break;
        }
        attempts += 1;
        assert!(
            attempts < 20,
            "the profile handler did not resume: at {handled} of {end}"
        );
    }

    let store = Store::open(StoreConfig::new(&data)).unwrap();
    let mut total = 0;
    for (customer, (count, sum)) in &expected {
        let raw = store
            .state(format!("profile/{customer}").as_bytes())
            .unwrap()
            .expect("profile");
        let profile: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            profile["events"].as_u64(),
            Some(*count),
            "{customer}: each event exactly once"
        );
        assert_eq!(
            profile["by_type"]["recharge"]["count"].as_u64(),
            Some(*count)
        );
        assert_eq!(
            profile["by_type"]["recharge"]["value_sum"].as_f64(),
            Some(*sum)
        );
        total += count;
    }
    assert_eq!(total, (EVENTS - invalid) as u64);
    let dlq = store.topic("customer-events.dlq").unwrap();
    assert_eq!(
        store.offsets(&dlq.partitions[0]).log_end,
        invalid as i64,
        "every invalid event dead-lettered exactly once"
    );
    store.close().unwrap();
}
