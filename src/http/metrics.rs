//! `GET /metrics`: OpenMetrics text (Prometheus scrapes it). The counters and histograms
//! kafkabox keeps as it works (`services::metrics`) plus what is read when scraped: log start
//! and end offsets, handler lag, ingest counts per source, flush latency, storage size.
//! docs/metrics.md lists every metric.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Sources;

/// Most partitions reported per scrape (offsets and lag).
const MAX_SERIES: usize = 10_000;

#[derive(Debug)]
struct Scraped(Sources);

fn labels<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let topics = s.store.topics();
        let mut offsets = Vec::new();
        for t in &topics {
            for p in &t.partitions {
                if offsets.len() >= MAX_SERIES {
                    break;
                }
                offsets.push((
                    t.meta.name.clone(),
                    p.index,
                    s.store.offsets(p),
                    s.store.damage_seen(p).is_some(),
                ));
            }
        }
        {
            let mut f = e.encode_descriptor(
                "kafkabox_partition_damaged",
                "1 when a partition's files are damaged (served up to the damage; writes refused until `kafkabox repair`)",
                None,
                MetricType::Gauge,
            )?;
            for (topic, p, _, damaged) in &offsets {
                let l = [("topic", topic.clone()), ("partition", p.to_string())];
                ConstGauge::new(i64::from(*damaged)).encode(f.encode_family(&labels(&l))?)?;
            }
        }
        for (name, help, start) in [
            (
                "kafkabox_log_start_offset",
                "First offset still in a partition's log",
                true,
            ),
            (
                "kafkabox_log_end_offset",
                "Next offset of a partition (its high watermark)",
                false,
            ),
        ] {
            let mut f = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, p, o, _) in &offsets {
                let l = [("topic", topic.clone()), ("partition", p.to_string())];
                let v = if start { o.log_start } else { o.log_end };
                ConstGauge::new(v).encode(f.encode_family(&labels(&l))?)?;
            }
        }
        {
            let mut f = e.encode_descriptor(
                "kafkabox_handler_lag",
                "Records of a partition not yet handled by a pipeline stage (log end minus the stage's next offset)",
                None,
                MetricType::Gauge,
            )?;
            for (stage, topic, p, lag) in s.lag.snapshot().into_iter().take(MAX_SERIES) {
                let l = [
                    ("stage", stage),
                    ("topic", topic),
                    ("partition", p.to_string()),
                ];
                ConstGauge::new(lag).encode(f.encode_family(&labels(&l))?)?;
            }
        }
        {
            let mut f = e.encode_descriptor(
                "kafkabox_stage_errors",
                "Failures of a pipeline stage (a read or commit, or a handler's transient failure, each retried; or a worker that stopped), since the start",
                None,
                MetricType::Counter,
            )?;
            for (stage, n) in s.health.errors() {
                let l = [("stage", stage)];
                ConstCounter::new(n).encode(f.encode_family(&labels(&l))?)?;
            }
        }
        {
            let mut f = e.encode_descriptor(
                "kafkabox_stage_state",
                "A pipeline stage's state on a partition: 0 running, 1 retrying without progress, 2 stopped",
                None,
                MetricType::Gauge,
            )?;
            for h in s.health.snapshot().into_iter().take(MAX_SERIES) {
                let v = match h.state {
                    crate::pipeline::StageState::Running => 0,
                    crate::pipeline::StageState::Retrying { .. } => 1,
                    crate::pipeline::StageState::Stopped { .. } => 2,
                };
                let l = [
                    ("stage", h.stage),
                    ("topic", h.topic),
                    ("partition", h.partition.to_string()),
                ];
                ConstGauge::new(v).encode(f.encode_family(&labels(&l))?)?;
            }
        }
        {
            let c = &s.services.transactions.counts;
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            for (name, help, v) in [
                ("kafkabox_transactions_committed", "Transactions committed since the start", load(&c.commits)),
                ("kafkabox_transactions_aborted", "Transactions aborted since the start (by their producer, a timeout or a fence)", load(&c.aborts)),
                ("kafkabox_transactions_timed_out", "Transactions aborted because they outlived their transaction.timeout.ms, since the start", load(&c.timeouts)),
                ("kafkabox_producers_fenced", "Transactional producers fenced by a newer instance with the same transactional id, since the start", load(&c.fenced)),
            ] {
                let f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(v).encode(f)?;
            }
            let f = e.encode_descriptor(
                "kafkabox_transactions_open",
                "Transactions open now",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.services.transactions.open_count() as i64).encode(f)?;
        }
        if let Ok(sources) = s.stats.snapshot() {
            type Get = fn(&crate::pipeline::SourceStatus) -> u64;
            let series: [(&str, &str, Get); 3] = [
                (
                    "kafkabox_ingest_received",
                    "Events received per source on topics with a contract (stored: exact across restarts)",
                    |x| x.received,
                ),
                ("kafkabox_ingest_valid", "Valid events per source", |x| x.valid),
                (
                    "kafkabox_ingest_rejected",
                    "Invalid events per source (sent to the dead-letter topic)",
                    |x| x.rejected,
                ),
            ];
            for (name, help, get) in series {
                let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (source, status) in &sources {
                    let l = [("source", source.clone())];
                    ConstCounter::new(get(status)).encode(f.encode_family(&labels(&l))?)?;
                }
            }
        }
        let flush = s.store.flush_stats();
        {
            let f = e.encode_descriptor(
                "kafkabox_flush_duration_seconds",
                "Duration of the store's background flushes to disk (acks=all waits for one)",
                None,
                MetricType::Histogram,
            )?;
            let mut f = f;
            // The encoder writes +Inf for f64::MAX.
            let buckets: Vec<(f64, u64)> = flush
                .buckets
                .iter()
                .map(|(le, n)| (if le.is_finite() { *le } else { f64::MAX }, *n))
                .collect();
            f.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                flush.sum_seconds,
                flush.count,
                &buckets,
                None,
            )?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_flush_failures",
                "Flushes to disk that failed (producers got KAFKA_STORAGE_ERROR)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(flush.failures).encode(f)?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_storage_size_bytes",
                "Bytes the data directory takes on disk (metadata and every log segment)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.store.size_on_disk().unwrap_or(0) as i64).encode(f)?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_storage_free_bytes",
                "Free bytes on the data dir's disk (writes stop below storage.free.bytes.min)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.store.free_bytes().min(i64::MAX as u64) as i64).encode(f)?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_storage_writes_refused",
                "Writes refused because the data dir's disk had less than storage.free.bytes.min free",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.store.writes_refused_for_space()).encode(f)?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_storage_open_segments",
                "Log segment databases open now (at most storage.segments.open.max)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(s.store.open_segments() as i64).encode(f)?;
        }
        {
            let f = e.encode_descriptor(
                "kafkabox_topics",
                "Topics, dead-letter topics included",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(topics.len() as i64).encode(f)?;
        }
        Ok(())
    }
}

/// The exposition of everything (blocking: reads the store).
pub fn render(s: &Sources) -> String {
    let mut registry = Registry::default();
    s.services.metrics.register(&mut registry);
    registry.register_collector(Box::new(Scraped(s.clone())));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding /metrics failed");
    }
    out
}
