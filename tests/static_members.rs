//! Consumer groups as Kafka's group coordinator treats their edge cases, with librdkafka
//! consumers (the rdkafka crate) against the real `kafkabox serve` binary:
//! - a static member (`group.instance.id`) that restarts within its session timeout gets its
//!   partitions back without a rebalance: the other member sees no callback at all (KIP-345;
//!   librdkafka joins with JoinGroup v5, so the restarted leader is answered as a follower);
//! - a member that stops polling for longer than `max.poll.interval.ms` leaves (librdkafka
//!   leaves the group itself, as the Java client does) and its partitions go to the others, not
//!   before.
//!
//! The reference is the group coordinator in apache/kafka `group-coordinator/`
//! (GroupMetadataManager: updateStaticMemberThenRebalanceOrCompleteJoin, completeClassicGroupJoin).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use kafkabox::clients::Closing;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext};

/// A rebalance callback: ("assign" | "revoke", partitions).
type Callback = (&'static str, Vec<i32>);

/// Every rebalance callback a consumer saw.
#[derive(Clone, Default)]
struct Callbacks(Arc<Mutex<Vec<Callback>>>);

impl ClientContext for Callbacks {}

impl ConsumerContext for Callbacks {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (kind, list) = match rebalance {
            Rebalance::Assign(l) => ("assign", Some(*l)),
            Rebalance::Revoke(l) => ("revoke", Some(*l)),
            Rebalance::Error(_) => ("error", None),
        };
        let mut parts: Vec<i32> = list
            .map(|l| l.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        parts.sort();
        if let Ok(mut v) = self.0.lock() {
            v.push((kind, parts));
        }
    }
}

impl Callbacks {
    fn seen(&self) -> Vec<Callback> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn consumer(
    addr: std::net::SocketAddr,
    group: &str,
    instance: Option<&str>,
    extra: &[(&str, &str)],
) -> (Closing<Callbacks>, Callbacks) {
    let cb = Callbacks::default();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string())
        .set("group.id", group)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if let Some(i) = instance {
        c.set("group.instance.id", i);
    }
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let consumer: BaseConsumer<Callbacks> = c.create_with_context(cb.clone()).expect("consumer");
    consumer.subscribe(&["parts"]).expect("subscribe");
    (Closing::new(consumer, "test consumer"), cb)
}

/// A `kafkabox serve` with the 4-partition topic "parts".
fn broker(dir: &std::path::Path) -> BrokerProcess {
    broker_with(dir, &[])
}

fn broker_with(dir: &std::path::Path, extra: &[&str]) -> BrokerProcess {
    let broker = BrokerProcess::spawn(&dir.join("data"), extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args([
            "topics",
            "create",
            "parts",
            "-p",
            "4",
            "-b",
            &broker.addr.to_string(),
        ])
        .output()
        .expect("kafkabox topics create");
    assert!(out.status.success(), "{out:?}");
    broker
}

fn assignment(c: &BaseConsumer<Callbacks>) -> Vec<i32> {
    let mut v: Vec<i32> = c
        .assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls every consumer until `done` holds (at most 60 s, else the test fails naming `what`).
fn poll_until(what: &str, consumers: &[&BaseConsumer<Callbacks>], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for c in consumers {
            let _ = c.poll(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance() {
    let _watchdog = common::watchdog(
        "a_static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance",
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let (a, a_seen) = consumer(broker.addr, "static", Some("a"), &[]);
    let (b, _) = consumer(broker.addr, "static", Some("b"), &[]);
    poll_until(
        "both members assigned, 2 partitions each",
        &[&a, &b],
        || assignment(&a).len() == 2 && assignment(&b).len() == 2,
    );
    let b_parts = assignment(&b);
    let a_parts = assignment(&a);
    // Let the group settle, then note what a saw so far.
    poll_until("a quiet second", &[&a, &b], {
        let t = Instant::now();
        move || t.elapsed() > Duration::from_secs(1)
    });
    let before = a_seen.seen();

    // b's process ends (a static member sends no LeaveGroup) and starts again at once.
    drop(b);
    let (b2, b2_seen) = consumer(broker.addr, "static", Some("b"), &[]);
    poll_until("the restarted b assigned", &[&a, &b2], || {
        !assignment(&b2).is_empty()
    });
    assert_eq!(assignment(&b2), b_parts, "b gets its partitions back");
    assert_eq!(b2_seen.seen(), vec![("assign", b_parts.clone())]);
    // Keep polling a few heartbeats: a sees nothing, keeps its partitions.
    poll_until("three seconds of heartbeats", &[&a, &b2], {
        let t = Instant::now();
        move || t.elapsed() > Duration::from_secs(3)
    });
    assert_eq!(a_seen.seen(), before, "the other member sees no rebalance");
    assert_eq!(assignment(&a), a_parts);
    assert_eq!(assignment(&b2), b_parts);

    // Now a restarts (one of the two led the group: both paths are taken).
    let b2_before = b2_seen.seen();
    drop(a);
    let (a2, a2_seen) = consumer(broker.addr, "static", Some("a"), &[]);
    poll_until("the restarted a assigned", &[&a2, &b2], || {
        !assignment(&a2).is_empty()
    });
    assert_eq!(assignment(&a2), a_parts, "a gets its partitions back");
    assert_eq!(a2_seen.seen(), vec![("assign", a_parts.clone())]);
    poll_until("three seconds of heartbeats", &[&a2, &b2], {
        let t = Instant::now();
        move || t.elapsed() > Duration::from_secs(3)
    });
    assert_eq!(
        b2_seen.seen(),
        b2_before,
        "the other member sees no rebalance"
    );
    assert_eq!(assignment(&b2), b_parts);
}

#[test]
fn a_member_that_stops_polling_leaves_after_max_poll_interval() {
    let _watchdog = common::watchdog("a_member_that_stops_polling_leaves_after_max_poll_interval");
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let poll = [("max.poll.interval.ms", "12000")];
    let (a, _) = consumer(broker.addr, "pollers", None, &poll);
    let (b, _) = consumer(broker.addr, "pollers", None, &poll);
    poll_until("both members assigned", &[&a, &b], || {
        assignment(&a).len() == 2 && assignment(&b).len() == 2
    });
    // b stops polling (its heartbeats go on, from librdkafka's own thread).
    let stopped = Instant::now();
    poll_until("a to get every partition", &[&a], || {
        assignment(&a).len() == 4
    });
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(12_000),
        "b's partitions moved after {after:?}, before its max.poll.interval.ms"
    );
    drop(b);
}

#[test]
fn the_first_rebalance_waits_for_group_initial_rebalance_delay() {
    let _watchdog = common::watchdog("the_first_rebalance_waits_for_group_initial_rebalance_delay");
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        &["--set", "group.initial.rebalance.delay.ms=6000"],
    );
    let joined = Instant::now();
    let (a, _) = consumer(broker.addr, "delayed", None, &[]);
    poll_until("the lone member assigned", &[&a], || {
        assignment(&a).len() == 4
    });
    let after = joined.elapsed();
    assert!(
        after >= Duration::from_millis(6_000),
        "the empty group's first rebalance completed after {after:?}, before its delay"
    );
}
