//! Crash safety: an acks=all producer under load, `kill -9` of the broker process mid-write,
//! restart on the same data dir. Every acknowledged record must be there with the same offset
//! and bytes, and new records continue from the next offset. Three kill cycles.

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

/// Produces until killed; returns the acknowledged (offset, payload) pairs.
async fn load(
    addr: std::net::SocketAddr,
    cycle: usize,
    idempotent: bool,
    acked: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
) -> Vec<(i64, String)> {
    let p = common::producer(
        addr,
        &[
            ("acks", "all"),
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
                Ok(Ok(Ok(d))) => {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_acks_all_load_loses_nothing_acknowledged() {
    kill_9_cycles(&[], 1, 3, false, ACKED_BEFORE_KILL).await;
}

/// Many kill -9 cycles under an idempotent acks=all producer: `KB_CRASH_CYCLES` of them
/// (5 by default; `KB_CRASH_CYCLES=100 cargo test --release --all-features --test crash
/// many_kill_9_cycles` is the long run), 5,000 acknowledged records before each kill. Every
/// acknowledged record is there once, at its offset; `kafkabox check` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_kill_9_cycles_with_an_idempotent_producer() {
    let cycles = std::env::var("KB_CRASH_CYCLES")
        .ok()
        .map(|v| v.parse().expect("KB_CRASH_CYCLES: a number"))
        .unwrap_or(5);
    kill_9_cycles(
        &["--set", "log.segment.bytes=1048576"],
        1,
        cycles,
        true,
        5_000,
    )
    .await;
}

/// The same with 256 KiB segments: the kills land while segments roll and seal (each cycle
/// writes about 2 MiB), and the log is read back across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_segments_roll_loses_nothing_acknowledged() {
    kill_9_cycles(
        &["--set", "log.segment.bytes=262144"],
        8,
        3,
        false,
        ACKED_BEFORE_KILL,
    )
    .await;
}

/// `cycles` kill -9 cycles under load with `settings`, each after `per_cycle` acknowledged
/// records; the partition ends with at least `min_segments` segments.
async fn kill_9_cycles(
    settings: &[&str],
    min_segments: usize,
    cycles: usize,
    idempotent: bool,
    per_cycle: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut all_acked: Vec<(i64, String)> = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut broker = BrokerProcess::spawn(&data, settings);
        let acked = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let producer = tokio::spawn(load(
            broker.addr,
            cycle,
            idempotent,
            acked.clone(),
            killed.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::SeqCst) < per_cycle && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Writes are still in flight here: kill without any chance to flush.
        broker.kill9();
        killed.store(true, Ordering::SeqCst);
        let acked = producer.await.unwrap();
        assert!(
            acked.len() >= per_cycle,
            "cycle {cycle}: only {} acknowledged",
            acked.len()
        );
        all_acked.extend(acked);
    }
    eprintln!(
        "{cycles} kill -9 cycles, {} acknowledged records, in {:.1} s",
        all_acked.len(),
        started.elapsed().as_secs_f64()
    );

    let mut broker = BrokerProcess::spawn(&data, settings);
    let addr = broker.addr;
    let max_offset = all_acked.iter().map(|(o, _)| *o).max().unwrap();
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
