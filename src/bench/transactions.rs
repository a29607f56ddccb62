//! Transactions: transactional produce of 1 KiB records at 100 records per transaction and at
//! 1, against idempotent produce (acks=all) in the same run; commit latency; and a consumer's
//! read throughput of the transactional data at read_committed against read_uncommitted.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::client_config;

/// Bytes of each record.
pub(super) const RECORD_BYTES: usize = 1024;

/// One produce run.
#[derive(Debug, Clone)]
pub(super) struct TxnRun {
    pub(super) what: String,
    pub(super) records: usize,
    pub(super) secs: f64,
    /// Commit latencies in ms (transactional runs).
    pub(super) commits_ms: Vec<f64>,
}

impl TxnRun {
    pub(super) fn mib_per_s(&self) -> f64 {
        (self.records * RECORD_BYTES) as f64 / self.secs / 1048576.0
    }
    pub(super) fn commit_pct(&self, q: f64) -> f64 {
        if self.commits_ms.is_empty() {
            return 0.0;
        }
        let mut v = self.commits_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

fn send_all(p: &BaseProducer, topic: &str, payload: &[u8], n: usize) -> Result<()> {
    for _ in 0..n {
        loop {
            match p.send(BaseRecord::<(), _>::to(topic).payload(payload).partition(0)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("queueing a record"),
            }
        }
    }
    Ok(())
}

/// `records` records to `topic`: idempotent (acks=all) when `per_txn` is 0, else in
/// transactions of `per_txn` records (blocking).
pub(super) fn produce_run(
    addr: &str,
    topic: &str,
    records: usize,
    per_txn: usize,
) -> Result<TxnRun> {
    let mut cfg = client_config();
    cfg.set("bootstrap.servers", addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000");
    if per_txn > 0 {
        // A transaction's records make one batch, sent once it is full rather than after
        // linger.ms: an application's commit flushes what lingers at once (librdkafka's own
        // flush does; this bench cannot call it without waiting on rdkafka's 100 ms poll
        // steps).
        cfg.set("transactional.id", format!("bench-{topic}"))
            .set("batch.num.messages", per_txn.to_string());
    }
    let p: BaseProducer = cfg.create().context("bench producer")?;
    if per_txn > 0 {
        p.init_transactions(Duration::from_secs(30))
            .context("init_transactions")?;
    }
    let payload = vec![b'x'; RECORD_BYTES];
    let mut commits_ms = Vec::new();
    let start = Instant::now();
    if per_txn == 0 {
        send_all(&p, topic, &payload, records)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while p.in_flight_count() > 0 && Instant::now() < deadline {
            p.poll(Duration::from_millis(1));
        }
    } else {
        let mut sent = 0;
        while sent < records {
            let n = per_txn.min(records - sent);
            p.begin_transaction().context("begin_transaction")?;
            send_all(&p, topic, &payload, n)?;
            // Delivered first, polled briskly: rdkafka's own flush inside the commit polls in
            // 100 ms steps, which would be measured as commit latency.
            let deadline = Instant::now() + Duration::from_secs(60);
            while p.in_flight_count() > 0 && Instant::now() < deadline {
                p.poll(Duration::from_millis(1));
            }
            let t = Instant::now();
            p.commit_transaction(Duration::from_secs(60))
                .context("commit_transaction")?;
            commits_ms.push(t.elapsed().as_secs_f64() * 1e3);
            sent += n;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(TxnRun {
        what: if per_txn == 0 {
            "idempotent".into()
        } else {
            format!("{per_txn} per transaction")
        },
        records,
        secs,
        commits_ms,
    })
}

/// MiB/s a consumer reads partition 0 of `topic` from the start to `end` at `isolation`
/// (blocking).
pub(super) fn read_run(addr: &str, topic: &str, isolation: &str, end: i64) -> Result<f64> {
    let c: BaseConsumer = client_config()
        .set("bootstrap.servers", addr)
        .set("group.id", "kafkabox-bench-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .context("bench consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    let mut bytes = 0usize;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                bytes += m.payload_len();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let pos = c.position()?.find_partition(topic, 0).map(|p| p.offset());
                if matches!(pos, Some(Offset::Offset(o)) if o >= end) {
                    break;
                }
            }
            Some(Err(e)) => return Err(e).context("reading"),
            None => {}
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1048576.0)
}
