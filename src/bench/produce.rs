//! Produce throughput per message size and acks setting, and produce-to-fetch latency
//! (acks=all, a consumer assigned at the log end).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::clients::{check_delivery, producer};
use super::{client_config, progress};

/// Most messages one run sends, whatever `bytes_per_run` says (10 GiB of 1 KiB records fit).
pub(super) const MAX_MESSAGES_PER_RUN: usize = 12_000_000;

pub(super) struct Throughput {
    pub(super) size: usize,
    pub(super) acks: String,
    pub(super) messages: usize,
    pub(super) secs: f64,
}

impl Throughput {
    pub(super) fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    pub(super) fn mib_per_s(&self) -> f64 {
        (self.messages * self.size) as f64 / self.secs / (1024.0 * 1024.0)
    }
}

pub(super) async fn throughput(
    addr: &str,
    topic: &str,
    size: usize,
    acks: &str,
    messages: usize,
    quiet: bool,
) -> Result<Throughput> {
    let p = producer(addr, acks, "5")?;
    // Create the topic and warm the connection before timing.
    p.send(
        FutureRecord::<(), _>::to(topic).payload("warm-up"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .context("warm-up message")?;
    let payload = vec![b'x'; size];
    let pb = progress(
        quiet,
        messages as u64,
        &format!("produce {size} B acks={acks}"),
    );
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(10_000);
    let mut done = 0usize;
    for _ in 0..messages {
        let fut = loop {
            match p.send_result(FutureRecord::<(), _>::to(topic).payload(&payload)) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The client's queue is full: wait for the oldest delivery.
                    match pending.pop_front() {
                        Some(f) => {
                            check_delivery(f).await?;
                            done += 1;
                            pb.set_position(done as u64);
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => return Err(e).context("queueing a message"),
            }
        };
        pending.push_back(fut);
        // Bound the futures held in memory.
        if pending.len() >= 100_000 {
            if let Some(f) = pending.pop_front() {
                check_delivery(f).await?;
                done += 1;
                pb.set_position(done as u64);
            }
        }
    }
    while let Some(f) = pending.pop_front() {
        check_delivery(f).await?;
        done += 1;
        if done.is_multiple_of(1000) {
            pb.set_position(done as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Ok(Throughput {
        size,
        acks: acks.to_string(),
        messages,
        secs,
    })
}

/// Produce-to-fetch latency: each payload carries its send time; a consumer assigned at the log
/// end measures when it sees it.
pub(super) async fn latency(addr: &str, count: usize, quiet: bool) -> Result<(f64, f64, usize)> {
    let topic = format!("bench-latency-{}", std::process::id());
    let p = producer(addr, "all", "0")?;
    p.send(
        FutureRecord::<(), _>::to(&topic).payload("warm-up"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .context("warm-up message")?;
    let epoch = Instant::now();
    let consumer_addr = addr.to_string();
    let consumer_topic = topic.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> Result<Vec<f64>> {
        let c: BaseConsumer = client_config()
            .set("bootstrap.servers", &consumer_addr)
            .set("group.id", "kafkabox-bench-unused")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&consumer_topic, 0, Offset::Offset(1))?;
        c.assign(&tpl)?;
        // Let the consumer connect before the clock starts.
        let _ = c.poll(Duration::from_millis(500));
        let _ = ready_tx.send(());
        let mut lat = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(120);
        while lat.len() < count && Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                let sent: u64 = m
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let now = epoch.elapsed().as_nanos() as u64;
                lat.push(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
        Ok(lat)
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(30));
    let pb = progress(quiet, count as u64, "produce-to-fetch latency");
    // A steady 5,000 msg/s: latency, not throughput, is measured here.
    let mut tick = tokio::time::interval(Duration::from_micros(200));
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let sent = epoch.elapsed().as_nanos().to_string();
        pending.push(
            p.send_result(FutureRecord::<(), _>::to(&topic).payload(&sent))
                .map_err(|(e, _)| e)?,
        );
        if i % 500 == 0 {
            pb.set_position(i as u64);
        }
    }
    for f in pending {
        check_delivery(f).await?;
    }
    pb.finish_and_clear();
    let mut lat = tokio::task::spawn_blocking(move || reader.join())
        .await?
        .map_err(|_| anyhow::anyhow!("latency reader panicked"))??;
    if lat.is_empty() {
        bail!("the latency consumer received nothing");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok((pct(0.50), pct(0.99), lat.len()))
}
