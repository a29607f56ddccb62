//! Crash safety: a producer under load (acks=all, acks=1, acks=0), `kill -9` of the broker
//! process mid-write, restart on the same data dir. Every acknowledged record must be there
//! with the same offset and bytes, every record a consumer read during the run too (no offset
//! is ever handed out twice), and new records continue from the next offset.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

/// Records acknowledged per cycle before the kill.
const ACKED_BEFORE_KILL: usize = 20_000;
/// Upper bound of sends per cycle (the loop also stops at the kill).
const MAX_SENDS: usize = 200_000;

fn payload(cycle: usize, i: usize) -> String {
    format!("cycle-{cycle}-msg-{i:06}-{}", "x".repeat(80))
}

/// Produces until killed; returns the acknowledged (offset, payload) pairs (none at acks=0).
async fn load(
    addr: std::net::SocketAddr,
    cycle: usize,
    acks: &'static str,
    idempotent: bool,
    acked: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
) -> Vec<(i64, String)> {
    let p = common::producer(
        addr,
        &[
            ("acks", acks),
            ("message.timeout.ms", "5000"),
            ("linger.ms", "2"),
            if idempotent {
                ("enable.idempotence", "true")
            } else {
                ("retries", "0")
            },
        ],
    );
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while i < MAX_SENDS && !killed.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut wave = Vec::with_capacity(200);
        for _ in 0..200 {
            let v = payload(cycle, i);
            i += 1;
            match p.send_result(FutureRecord::<(), _>::to("crash").payload(v.as_bytes())) {
                Ok(f) => wave.push((v, f)),
                Err(_) => break,
            }
        }
        for (v, f) in wave {
            // Bounded: after the kill, librdkafka's idempotent producer may keep a message it
            // had in flight past message.timeout.ms; what is not acknowledged in time is not
            // counted as acknowledged.
            match tokio::time::timeout(Duration::from_secs(20), f).await {
                // acks=0: delivered without an offset.
                Ok(Ok(Ok(d))) if d.offset >= 0 => {
                    out.lock().unwrap().push((d.offset, v));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let v = out.lock().unwrap().clone();
    v
}

/// Reads partition 0 of `crash` from `from` until killed, as a consumer beside the producer
/// does; returns every (offset, payload) it saw.
fn read_until_killed(
    addr: std::net::SocketAddr,
    from: i64,
    seen: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
) -> Vec<(i64, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("enable.auto.commit", "false")
        .set("group.id", "kafkabox-test-reader")
        .set("fetch.wait.max.ms", "50")
        .set("topic.metadata.refresh.interval.ms", "200")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("crash", 0, rdkafka::Offset::Offset(from))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !killed.load(Ordering::SeqCst) && Instant::now() < deadline {
        // Errors (the topic not created yet, the broker gone) are retried by the client.
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
            seen.fetch_add(1, Ordering::SeqCst);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_acks_all_load_loses_nothing_acknowledged() {
    let _watchdog = common::watchdog("kill_9_under_acks_all_load_loses_nothing_acknowledged");
    kill_9_cycles(&[], 1, 3, "all", false, ACKED_BEFORE_KILL).await;
}

/// acks=1 (a plain producer, librdkafka's acks=1): 20 kill -9 cycles, none of the acknowledged
/// records lost, no offset acknowledged or read twice for different records. The answer
/// comes after the group flush that covers the batch, and consumers read only up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_acks_1_loses_nothing_and_reuses_no_offset() {
    let _watchdog = common::watchdog("kill_9_under_acks_1_loses_nothing_and_reuses_no_offset");
    kill_9_cycles(&[], 1, 20, "1", false, 3_000).await;
}

/// acks=0: nothing is acknowledged, but a record a consumer read during the run is still at
/// its offset after each of 20 kill -9 cycles (no offset is handed out twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_acks_0_reuses_no_offset_a_consumer_saw() {
    let _watchdog = common::watchdog("kill_9_under_acks_0_reuses_no_offset_a_consumer_saw");
    kill_9_cycles(&[], 1, 20, "0", false, 3_000).await;
}

/// Many kill -9 cycles under an idempotent acks=all producer: `KB_CRASH_CYCLES` of them
/// (5 by default; `KB_CRASH_CYCLES=100 cargo test --release --all-features --test crash
/// many_kill_9_cycles` is the long run), 5,000 acknowledged records before each kill. Every
/// acknowledged record is there once, at its offset; `kafkabox check` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_kill_9_cycles_with_an_idempotent_producer() {
    let _watchdog = common::watchdog("many_kill_9_cycles_with_an_idempotent_producer");
    let cycles = std::env::var("KB_CRASH_CYCLES")
        .ok()
        .map(|v| v.parse().expect("KB_CRASH_CYCLES: a number"))
        .unwrap_or(5);
    kill_9_cycles(
        &["--set", "log.segment.bytes=1048576"],
        1,
        cycles,
        "all",
        true,
        5_000,
    )
    .await;
}

/// The same with 256 KiB segments: the kills land while segments roll and seal (each cycle
/// writes about 2 MiB), and the log is read back across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_segments_roll_loses_nothing_acknowledged() {
    let _watchdog = common::watchdog("kill_9_while_segments_roll_loses_nothing_acknowledged");
    kill_9_cycles(
        &["--set", "log.segment.bytes=262144"],
        8,
        3,
        "all",
        false,
        ACKED_BEFORE_KILL,
    )
    .await;
}

/// `cycles` kill -9 cycles under load at `acks` with `settings`, each after `per_cycle`
/// acknowledged records (at acks=0: records a consumer read); the partition ends with at least
/// `min_segments` segments.
async fn kill_9_cycles(
    settings: &[&str],
    min_segments: usize,
    cycles: usize,
    acks: &'static str,
    idempotent: bool,
    per_cycle: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut all_acked: Vec<(i64, String)> = Vec::new();
    let mut all_seen: Vec<(i64, Vec<u8>)> = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut broker = BrokerProcess::spawn(&data, settings);
        let acked = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let producer = tokio::spawn(load(
            broker.addr,
            cycle,
            acks,
            idempotent,
            acked.clone(),
            killed.clone(),
        ));
        let reader = tokio::task::spawn_blocking({
            let (addr, seen, killed) = (broker.addr, seen.clone(), killed.clone());
            let from = all_seen.last().map_or(0, |(o, _)| o + 1);
            move || read_until_killed(addr, from, seen, killed)
        });
        let progress = if acks == "0" { &seen } else { &acked };
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::SeqCst) < per_cycle && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Writes are still in flight here: kill without any chance to flush.
        broker.kill9();
        killed.store(true, Ordering::SeqCst);
        let acked = common::within("the producer to stop", Duration::from_secs(120), producer)
            .await
            .unwrap();
        let seen = common::within("the reader to stop", Duration::from_secs(120), reader)
            .await
            .unwrap();
        assert!(
            acked.len().max(seen.len()) >= per_cycle,
            "cycle {cycle}: only {} acknowledged, {} read",
            acked.len(),
            seen.len()
        );
        all_acked.extend(acked);
        all_seen.extend(seen);
    }
    eprintln!(
        "{cycles} kill -9 cycles at acks={acks}: {} acknowledged records, {} read by a consumer during the run, in {:.1} s",
        all_acked.len(),
        all_seen.len(),
        started.elapsed().as_secs_f64()
    );

    let mut broker = BrokerProcess::spawn(&data, settings);
    let addr = broker.addr;
    let max_offset = all_acked
        .iter()
        .map(|(o, _)| *o)
        .chain(all_seen.iter().map(|(o, _)| *o))
        .max()
        .unwrap();
    let got = common::consume_async(addr, "crash", 0, 0, (max_offset + 1) as usize).await;
    assert!(
        got.len() as i64 > max_offset,
        "read {} records, acknowledged up to offset {max_offset}",
        got.len()
    );
    let mut by_offset = std::collections::HashMap::new();
    for m in &got {
        by_offset.insert(m.offset(), m.payload().unwrap().to_vec());
    }
    for (offset, v) in &all_acked {
        let stored = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("acknowledged offset {offset} is missing"));
        assert_eq!(stored, v.as_bytes(), "offset {offset} holds other bytes");
    }
    // What a consumer read during the run is still there: the offsets it saw were never
    // handed out again after a crash.
    for (offset, v) in &all_seen {
        let stored = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("offset {offset}, read during the run, is missing"));
        assert_eq!(
            stored,
            v,
            "offset {offset} was read as {:?} during the run and holds {:?} after the restarts",
            String::from_utf8_lossy(&v[..v.len().min(24)]),
            String::from_utf8_lossy(&stored[..stored.len().min(24)])
        );
    }
    // Offsets are dense from 0: no hole, no duplicate offset; no record is stored twice.
    let mut seen = std::collections::HashSet::new();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert!(
            seen.insert(m.payload().unwrap().to_vec()),
            "offset {i} repeats an earlier record"
        );
    }
    // New records continue from the log end (which may hold records written but never
    // acknowledged before a kill: those are kept, not a hole).
    let high = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", addr.to_string())
            .create()
            .unwrap();
        c.fetch_watermarks("crash", 0, Duration::from_secs(30))
            .unwrap()
            .1
    })
    .await
    .unwrap();
    assert!(high > max_offset);
    let p = common::producer(addr, &[("acks", "all")]);
    let d = p
        .send(
            FutureRecord::<(), _>::to("crash").payload("after"),
            Duration::from_secs(30),
        )
        .await
        .expect("produce after restart");
    assert_eq!(d.offset, high);
    let end = common::consume_async(addr, "crash", 0, high, 1).await;
    assert_eq!(end[0].payload(), Some(&b"after"[..]));
    assert_eq!(broker.terminate().code(), Some(0));
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .arg("check")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "kafkabox check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let segments: usize = std::fs::read_dir(data.join("segments"))
        .unwrap()
        .map(|p| std::fs::read_dir(p.unwrap().path()).unwrap().count())
        .sum();
    assert!(segments >= min_segments, "{segments} segments");
}
