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
    let _watchdog = common::watchdog("kill_9_mid_backlog_counts_every_event_exactly_once");
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

/// A data dir whose contract stage is ahead of its profile stage (written before the two ran as
/// one pass, or with profiles turned on later): the combined stage applies the profile to what
/// the profile stage had not seen, without dead-lettering or counting anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_ahead_of_profiles_catches_up_without_double_counting() {
    let _watchdog =
        common::watchdog("contract_ahead_of_profiles_catches_up_without_double_counting");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // First run: the contract stage only (no profile handler).
    let mut broker = BrokerProcess::spawn(&data, &["--set", "customer.events.handlers=log"]);
    let p = common::producer(broker.addr, &[("acks", "all")]);
    for i in 0..6 {
        let payload = if i == 3 {
            r#"{"source":"billing","customer_id":"c1"}"#.to_string()
        } else {
            format!(
                r#"{{"source":"billing","customer_id":"c1","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":{i}}}"#
            )
        };
        p.send(
            FutureRecord::<(), _>::to("customer-events").payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
    drop(p);
    let http = broker.http_addr();
    common::wait_until("the contract stage to finish", || {
        let a = common::http(http, "GET", "/api/sources", None, None);
        a.json()["billing"]["received"] == 6
    })
    .await;
    assert_eq!(broker.terminate().code(), Some(0));
    {
        let store = Store::open(StoreConfig::new(&data)).unwrap();
        let t = store.topic("customer-events").unwrap();
        assert_eq!(
            store.consumer_offset(&t.partitions[0], "contract").unwrap(),
            6
        );
        assert_eq!(
            store.consumer_offset(&t.partitions[0], "profile").unwrap(),
            0
        );
        store.close().unwrap();
    }
    // Second run: profiles on (the default).
    let mut broker = BrokerProcess::spawn(&data, &[]);
    let http = broker.http_addr();
    common::wait_until("the profile", || {
        let a = common::http(http, "GET", "/api/customers/c1", None, None);
        a.status == 200 && a.json()["events"] == 5
    })
    .await;
    let sources = common::http(http, "GET", "/api/sources", None, None).json();
    assert_eq!(
        sources["billing"]["received"], 6,
        "not counted twice: {sources}"
    );
    assert_eq!(sources["billing"]["rejected"], 1);
    let dlq = common::http(http, "GET", "/api/topics/customer-events.dlq", None, None).json();
    assert_eq!(dlq["records"], 1, "not dead-lettered twice");
    let profile = common::http(http, "GET", "/api/customers/c1", None, None).json();
    assert_eq!(
        profile["by_type"]["recharge"]["value_sum"], 12.0,
        "0+1+2+4+5"
    );
    assert_eq!(broker.terminate().code(), Some(0));
}
