//! Consumer groups: consume throughput of groups of 1 and 3 members, and the time a group
//! takes to settle when its members join at once (rebalance).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::client_config;
use super::clients::create_topic;
use super::produce::{throughput, MAX_MESSAGES_PER_RUN};

/// Closed with a bound when dropped (kafkabox::clients).
fn group_member(
    addr: &str,
    group: &str,
    heartbeat_ms: &str,
) -> Result<kafkabox::clients::Closing<rdkafka::consumer::DefaultConsumerContext>> {
    let c: BaseConsumer = client_config()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", heartbeat_ms)
        .create()
        .context("creating a group consumer")?;
    Ok(kafkabox::clients::Closing::new(c, "bench group member"))
}

/// Consume throughput of consumer groups of 1 and 3 members over a 3-partition topic of 1 KiB
/// records: time from subscribing until every record was polled.
pub(super) async fn consume_bench(addr: &str, bytes: usize, quiet: bool) -> Result<Vec<String>> {
    let topic = format!("bench-consume-{}", std::process::id());
    create_topic(addr, &topic, 3).await?;
    let messages = (bytes / 1024).clamp(1, MAX_MESSAGES_PER_RUN);
    let produced = throughput(addr, &topic, 1024, "1", messages, quiet).await?;
    let total = produced.messages + 1; // and the warm-up record
    let mut out = Vec::new();
    for members in [1usize, 3] {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bytes_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let group = format!("bench-consume-{members}-{}", std::process::id());
        let start = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..members {
            let c = group_member(addr, &group, "3000")?;
            c.subscribe(&[&topic]).context("subscribe")?;
            let (count, bytes_seen, stop) = (count.clone(), bytes_seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                        bytes_seen.fetch_add(m.payload_len(), Relaxed);
                        count.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while count.load(std::sync::atomic::Ordering::Relaxed) < total {
            if Instant::now() > deadline {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                bail!("the group of {members} did not read {total} records in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let b = bytes_seen.load(std::sync::atomic::Ordering::Relaxed);
        out.push(format!(
            "consume, group of {members}          {:>8.1} MiB/s {:>9.0} msg/s ({total} records of 1 KiB over 3 partitions in {secs:.2} s, join included)",
            b as f64 / secs / (1024.0 * 1024.0),
            total as f64 / secs
        ));
    }
    Ok(out)
}

/// Rebalance time: `members` consumers subscribe to a 20-partition topic at once; the time
/// until every one of them owns partitions and together they own all 20.
pub(super) async fn rebalance_bench(addr: &str, members: usize) -> Result<f64> {
    let topic = format!("bench-rebalance-{members}-{}", std::process::id());
    create_topic(addr, &topic, 20).await?;
    let group = format!("bench-rebalance-{members}-{}", std::process::id());
    let owned = std::sync::Arc::new(std::sync::Mutex::new(vec![0usize; members]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..members {
        consumers.push(group_member(addr, &group, "100")?);
    }
    let start = Instant::now();
    let mut threads = Vec::new();
    for (i, c) in consumers.into_iter().enumerate() {
        c.subscribe(&[&topic]).context("subscribe")?;
        let (owned, stop) = (owned.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(10));
                let n = c.assignment().map(|a| a.count()).unwrap_or(0);
                if let Ok(mut o) = owned.lock() {
                    o[i] = n;
                }
            }
        }));
    }
    let want = members.min(20);
    let deadline = Instant::now() + Duration::from_secs(120);
    let secs = loop {
        let done = owned
            .lock()
            .map(|o| o.iter().sum::<usize>() == 20 && o.iter().filter(|n| **n > 0).count() == want)
            .unwrap_or(false);
        if done {
            break start.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            bail!("a group of {members} did not settle in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(secs)
}
