//! The edge forwarder (`serve --upstream BROKERS`, cargo feature `client`): a pipeline handler
//! that produces every record of a topic, in order per partition, to the same topic and
//! partition on a central Kafka cluster, with an idempotent producer. The local log is the
//! buffer: the pipeline commits the forwarder's position only after the cluster acknowledged,
//! retries while the link is down (retention keeps what it has not forwarded), and resumes
//! from that position after a restart.
//!
//! Each forwarded record carries `kafkabox.edge.id` (this box's cluster id) and
//! `kafkabox.edge.offset` (its local offset). Whenever the outcome of a send is unknown (after
//! a start, a crash or a failed delivery), the forwarder reads the end of the upstream
//! partition back to the newest record from this edge and skips what it holds, so the cluster
//! holds every record once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::pipeline::{Event, Handler, HandlerError};

/// Header naming the edge a record came from.
pub const EDGE_ID: &str = "kafkabox.edge.id";
/// Header with the record's offset on the edge.
pub const EDGE_OFFSET: &str = "kafkabox.edge.offset";
/// Header with the id of the record's topic on the edge: a topic deleted and created again
/// there starts its offsets over, and the read-back must not take the old one's for its own.
pub const EDGE_TOPIC_ID: &str = "kafkabox.edge.topic.id";
/// The forwarder's stage name (its position is kept under it; `kafkabox.forward` as a group).
pub const NAME: &str = "forward";
/// A read-back waits until the upstream partition's end has not moved for `SETTLE_STEPS`
/// looks `SETTLE_STEP` apart, at most `SETTLE_MAX`.
const SETTLE_STEP: Duration = Duration::from_millis(400);
const SETTLE_STEPS: u32 = 2;
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// Records read back per step when looking for this edge's newest record upstream.
const SCAN_STEP: i64 = 1000;
/// How far back (records) the scan goes before deciding this edge has nothing there.
const SCAN_MAX: i64 = 1_000_000;

/// The id of a local topic and the newest local offset of it the cluster holds.
type Forwarded = (String, i64);

/// A send whose delivery is awaited: the local offset, the value's size, the outcome.
type Pending = (i64, usize, rdkafka::producer::DeliveryFuture);

/// The forwarder's delivery deadline when the user sets none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Forward {
    client: ClientConfig,
    producer: FutureProducer,
    edge_id: String,
    /// Per (topic, partition): the local topic's id and the newest local offset of it the
    /// cluster is known to hold, or `None` when it must be looked up (after a start or a
    /// failure).
    known: Mutex<HashMap<(String, i32), Option<Forwarded>>>,
    /// Per (topic, partition): deliveries a failed attempt left outstanding, awaited before
    /// the position is looked up again.
    unsettled: Mutex<HashMap<(String, i32), Vec<Pending>>>,
    /// How long a delivery may take before the attempt counts as failed (the user's
    /// `message.timeout.ms`, 30 s by default). The client itself never gives a record up: a
    /// record it dropped after a timeout while later ones got through would leave a gap
    /// upstream, and one it sent again under a new producer id (librdkafka's epoch bump after
    /// a timeout) a duplicate.
    deadline: Duration,
    services: Arc<crate::services::Services>,
    /// Failures logged at most every 10 s.
    log: Mutex<crate::services::log_limit::RateLimitedLog>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("edge_id", &self.edge_id)
            .finish()
    }
}

impl Forward {
    /// A forwarder to the cluster at `bootstrap` (`settings`: librdkafka's, e.g. security).
    pub fn new(
        bootstrap: &str,
        settings: &std::collections::BTreeMap<String, String>,
        edge_id: &str,
        services: Arc<crate::services::Services>,
    ) -> anyhow::Result<Forward> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap);
        for (k, v) in settings {
            client.set(k, v);
        }
        let mut producer = client.clone();
        producer.set("linger.ms", "5");
        // The user's settings win, but for what makes the forwarding exact. The message
        // timeout (or its alias delivery.timeout.ms) is the forwarder's own deadline.
        let mut timeout = None;
        for (k, v) in settings {
            if k == "message.timeout.ms" || k == "delivery.timeout.ms" {
                timeout = Some(v);
                continue;
            }
            producer.set(k, v);
        }
        let deadline = match timeout.map(|v| v.parse::<u64>()) {
            None | Some(Ok(0)) => DEFAULT_DEADLINE,
            Some(Ok(ms)) => Duration::from_millis(ms),
            Some(Err(_)) => anyhow::bail!(
                "upstream setting message.timeout.ms (delivery.timeout.ms) must be a number of milliseconds"
            ),
        };
        let producer: FutureProducer = producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .create()?;
        Ok(Forward {
            client,
            producer,
            edge_id: edge_id.to_string(),
            known: Mutex::default(),
            unsettled: Mutex::default(),
            deadline,
            services,
            log: Mutex::new(crate::services::log_limit::RateLimitedLog::new()),
        })
    }

    /// Creates `topic` upstream, with as many partitions as here, when it is missing there.
    async fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client.create().map_err(|e| e.to_string())?;
        let n = self.local_partitions(topic);
        let new = NewTopic::new(topic, n, TopicReplication::Fixed(-1));
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        match admin.create_topics(&[new], &opts).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => {
                    tracing::info!(topic, partitions = n, "created the topic upstream");
                    Ok(())
                }
                Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) | None => {
                    Ok(())
                }
                Some(Err((_, e))) => Err(format!("creating {topic} upstream: {e}")),
            },
            Err(e) => Err(format!("upstream unreachable: {e}")),
        }
    }

    /// How many partitions `topic` has here.
    fn local_partitions(&self, topic: &str) -> i32 {
        self.services
            .topics
            .get(topic)
            .map_or(1, |t| t.partitions.len() as i32)
    }

    /// Grows `topic` upstream to as many partitions as it has here (partitions were added
    /// here since it was created there).
    async fn grow_topic(&self, topic: &str, have: i32) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client.create().map_err(|e| e.to_string())?;
        let n = self.local_partitions(topic);
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let grow = NewPartitions::new(topic, n as usize);
        match admin.create_partitions(&[grow], &opts).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | None => {
                    tracing::info!(topic, from = have, to = n, "added partitions to the topic upstream");
                    // The producer learns of them now, not at its next metadata refresh
                    // (minutes away): sends to them would fail until then.
                    let producer = self.producer.clone();
                    let t = topic.to_string();
                    let _ = tokio::task::spawn_blocking(move || {
                        producer
                            .client()
                            .fetch_metadata(Some(&t), Duration::from_secs(10))
                    })
                    .await;
                    Ok(())
                }
                Some(Err((_, e))) => Err(format!(
                    "topic {topic} has {have} partitions upstream and {n} here; adding partitions there failed: {e}"
                )),
            },
            Err(e) => Err(format!("upstream unreachable: {e}")),
        }
    }

    /// Keeps the deliveries a failed attempt on `topic`/`partition` left outstanding.
    fn park(&self, topic: &str, partition: i32, rest: impl Iterator<Item = Pending>) {
        if let Ok(mut u) = self.unsettled.lock() {
            u.entry((topic.to_string(), partition))
                .or_default()
                .extend(rest);
        }
    }

    /// Counts a record the cluster acknowledged.
    fn delivered(&self, topic: &str, bytes: usize) {
        let l = Self::topic_label(topic);
        let m = &self.services.metrics;
        m.forwarded_records.get_or_create(&l).inc();
        m.forwarded_bytes.get_or_create(&l).inc_by(bytes as u64);
    }

    /// Waits, at most the delivery deadline, until every delivery a failed attempt on
    /// `topic`/`partition` left outstanding has its outcome; those still waiting for the
    /// cluster then stay parked and the attempt fails.
    async fn settle(&self, topic: &str, partition: i32) -> Result<(), String> {
        let rest = match self.unsettled.lock() {
            Ok(mut u) => u.remove(&(topic.to_string(), partition)),
            Err(_) => None,
        };
        let until = tokio::time::Instant::now() + self.deadline;
        let mut rest = rest.unwrap_or_default().into_iter();
        while let Some((offset, bytes, mut f)) = rest.next() {
            match tokio::time::timeout_at(until, &mut f).await {
                Ok(Ok(Ok(_))) => self.delivered(topic, bytes),
                Ok(_) => {}
                Err(_) => {
                    let waiting = 1 + rest.len();
                    self.park(
                        topic,
                        partition,
                        std::iter::once((offset, bytes, f)).chain(rest),
                    );
                    return Err(format!(
                        "upstream: {waiting} records sent earlier still wait for the cluster's acknowledgement"
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`find_forwarded`] off the async runtime.
    async fn scan(&self, topic: &str, partition: i32, topic_id: &str) -> Result<i64, Scan> {
        let (client, edge) = (self.client.clone(), self.edge_id.clone());
        let (t, id) = (topic.to_string(), topic_id.to_string());
        tokio::task::spawn_blocking(move || find_forwarded(&client, &edge, &id, &t, partition))
            .await
            .map_err(|e| Scan::Failed(e.to_string()))
            .and_then(|r| r)
    }

    fn topic_label(topic: &str) -> crate::services::metrics::TopicLabels {
        crate::services::metrics::TopicLabels {
            topic: topic.to_string(),
        }
    }

    /// A failed attempt: counted, logged (at most every 10 s), the partition's upstream
    /// position to be looked up again before the retry.
    fn failed(&self, topic: &str, partition: i32, why: String) -> HandlerError {
        self.services
            .metrics
            .forward_errors
            .get_or_create(&Self::topic_label(topic))
            .inc();
        if let Ok(mut last) = self.services.forward_error.lock() {
            *last = Some((
                crate::services::now_ms(),
                format!("{topic}/{partition}: {why}"),
            ));
        }
        if let Ok(mut k) = self.known.lock() {
            k.insert((topic.to_string(), partition), None);
        }
        let allowed = match self.log.lock() {
            Ok(mut l) => l.allow(),
            Err(p) => p.into_inner().allow(),
        };
        if let Some(suppressed) = allowed {
            tracing::warn!(topic, partition, error = %why, suppressed, "forwarding upstream failed; the records stay here and are retried");
        }
        HandlerError::Transient(why)
    }
}

#[async_trait::async_trait]
impl Handler for Forward {
    fn name(&self) -> &str {
        NAME
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let (topic, partition) = (first.topic.clone(), first.partition);
        let Some(topic_id) = self
            .services
            .topics
            .get(&topic)
            .map(|t| uuid::Uuid::from_bytes(t.meta.id).to_string())
        else {
            // Deleted here meanwhile, with its records: nothing left to forward.
            return Ok(());
        };
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(&(topic.clone(), partition)).cloned())
            .flatten()
            .filter(|(id, _)| *id == topic_id)
            .map(|(_, o)| o);
        let forwarded = match known {
            Some(o) => o,
            None => {
                // Sends of an earlier attempt may still be queued in the client (a failed
                // delivery does not withdraw the ones after it): the read-back must see where
                // they ended, or they land after it and are sent again.
                self.settle(&topic, partition)
                    .await
                    .map_err(|e| self.failed(&topic, partition, e))?;
                self.ensure_topic(&topic)
                    .await
                    .map_err(|e| self.failed(&topic, partition, e))?;
                let found = self.scan(&topic, partition, &topic_id).await;
                let found = match found {
                    Err(Scan::Fewer(have)) => {
                        self.grow_topic(&topic, have)
                            .await
                            .map_err(|e| self.failed(&topic, partition, e))?;
                        self.scan(&topic, partition, &topic_id).await
                    }
                    other => other,
                };
                match found {
                    Ok(o) => {
                        if o >= 0 {
                            tracing::info!(%topic, partition, upstream_has_up_to = o, "forwarding resumes after what the cluster holds");
                        }
                        if let Ok(mut k) = self.known.lock() {
                            k.insert((topic.clone(), partition), Some((topic_id.clone(), o)));
                        }
                        o
                    }
                    Err(Scan::Failed(e)) => return Err(self.failed(&topic, partition, e)),
                    Err(Scan::Fewer(have)) => {
                        return Err(self.failed(
                            &topic,
                            partition,
                            format!("topic {topic} still has {have} partitions upstream, none numbered {partition}"),
                        ))
                    }
                }
            }
        };
        let mut pending = Vec::new();
        let edge_offsets: Vec<String> = events.iter().map(|e| e.offset.to_string()).collect();
        for (e, offset) in events.iter().zip(&edge_offsets) {
            if e.offset <= forwarded {
                continue;
            }
            let headers = super::event_headers(e)
                .insert(Header {
                    key: EDGE_ID,
                    value: Some(self.edge_id.as_bytes()),
                })
                .insert(Header {
                    key: EDGE_OFFSET,
                    value: Some(offset.as_bytes()),
                })
                .insert(Header {
                    key: EDGE_TOPIC_ID,
                    value: Some(topic_id.as_bytes()),
                });
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                .partition(partition)
                .timestamp(e.timestamp)
                .headers(headers);
            if let Some(k) = &e.key {
                r = r.key(k.as_ref());
            }
            if let Some(v) = &e.value {
                r = r.payload(v.as_ref());
            }
            match self.producer.send_result(r) {
                Ok(f) => pending.push((e.offset, e.value.as_ref().map_or(0, |v| v.len()), f)),
                Err((err, _)) => {
                    self.park(&topic, partition, pending.into_iter());
                    return Err(self.failed(&topic, partition, format!("upstream: {err}")));
                }
            }
        }
        let until = tokio::time::Instant::now() + self.deadline;
        let mut pending = pending.into_iter();
        while let Some((offset, bytes, mut f)) = pending.next() {
            let why = match tokio::time::timeout_at(until, &mut f).await {
                Ok(Ok(Ok(_))) => {
                    self.delivered(&topic, bytes);
                    if let Ok(mut k) = self.known.lock() {
                        k.insert((topic.clone(), partition), Some((topic_id.clone(), offset)));
                    }
                    continue;
                }
                Ok(Ok(Err((err, _)))) => {
                    self.park(&topic, partition, pending);
                    format!("upstream: {err}")
                }
                Ok(Err(_)) => {
                    self.park(&topic, partition, pending);
                    "upstream send cancelled".into()
                }
                Err(_) => {
                    // Still queued in the client, which delivers it when the cluster is back.
                    self.park(
                        &topic,
                        partition,
                        std::iter::once((offset, bytes, f)).chain(pending),
                    );
                    format!(
                        "upstream: no acknowledgement within {} ms (message.timeout.ms)",
                        self.deadline.as_millis()
                    )
                }
            };
            return Err(self.failed(&topic, partition, why));
        }
        Ok(())
    }
}

/// How often the forwarder's backlog is weighed against the disk.
const OUTLOOK_EVERY: Duration = Duration::from_secs(5);
/// How far back the rate at which the disk fills is measured.
const OUTLOOK_WINDOW: Duration = Duration::from_secs(60);
/// Warn when the disk would refuse writes within this many seconds at the current rate.
const OUTLOOK_HORIZON_SECONDS: u64 = 3600;
/// A warning that holds is logged again at most this often.
const OUTLOOK_WARN_EVERY: Duration = Duration::from_secs(600);

/// Weighs what the forwarder has not sent against the disk every 5 s, into
/// [`crate::services::ForwardOutlook`] (`/api/forward`, the dashboard), two gauges and a
/// warning log: long before producers would be refused (`storage.free.bytes.min`), while
/// records wait and free space is below `upstream.warn.free.bytes` or would reach the minimum
/// within an hour at the rate it fell over the last minute.
pub async fn watch_outlook(
    services: Arc<crate::services::Services>,
    lag: crate::pipeline::Lag,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let min = services.config.min_free_bytes;
    let warn_below = match services.config.upstream_warn_free_bytes {
        0 => min.saturating_mul(4),
        n => n,
    };
    let mut samples: std::collections::VecDeque<(std::time::Instant, u64)> =
        std::collections::VecDeque::new();
    let mut warned: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(OUTLOOK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let backlog: i64 = lag
            .snapshot()
            .into_iter()
            .filter(|(stage, ..)| stage == NAME)
            .map(|(.., l)| l)
            .sum();
        let store = services.store.clone();
        let Ok(free) = tokio::task::spawn_blocking(move || store.free_bytes()).await else {
            continue;
        };
        let now = std::time::Instant::now();
        samples.push_back((now, free));
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= OUTLOOK_WINDOW)
        {
            samples.pop_front();
        }
        let oldest = samples.front().map(|(t, f)| (now.duration_since(*t), *f));
        let (full_in, warning) = outlook(backlog, free, min, warn_below, oldest);
        let m = &services.metrics;
        m.forward_backlog.set(backlog);
        m.forward_disk_full_in
            .set(full_in.map_or(-1, |s| s.min(i64::MAX as u64) as i64));
        match &warning {
            Some(w) => {
                if warned.is_none_or(|t| t.elapsed() >= OUTLOOK_WARN_EVERY) {
                    tracing::warn!(
                        backlog_records = backlog,
                        free_bytes = free,
                        "{w}: bring the central cluster back, free disk space, or lower the retention of other topics"
                    );
                    warned = Some(now);
                }
            }
            None => {
                if warned.take().is_some() {
                    tracing::info!(
                        backlog_records = backlog,
                        free_bytes = free,
                        "the forwarding backlog no longer threatens the disk"
                    );
                }
            }
        }
        if let Ok(mut o) = services.forward_outlook.lock() {
            *o = Some(crate::services::ForwardOutlook {
                backlog_records: backlog,
                free_bytes: free,
                warn_below_bytes: warn_below,
                refuse_below_bytes: min,
                full_in_seconds: full_in,
                warning,
            });
        }
    }
}

/// Seconds until the disk reaches `min` at the rate it fell since `oldest` (how long ago, free
/// bytes then), and the warning, if any, for `backlog` records waiting with `free` bytes free.
fn outlook(
    backlog: i64,
    free: u64,
    min: u64,
    warn_below: u64,
    oldest: Option<(Duration, u64)>,
) -> (Option<u64>, Option<String>) {
    let full_in = match oldest {
        Some((ago, then)) if backlog > 0 && then > free && ago >= Duration::from_secs(1) => {
            let rate = (then - free) as f64 / ago.as_secs_f64();
            Some((free.saturating_sub(min) as f64 / rate) as u64)
        }
        _ => None,
    };
    let mib = |b: u64| b / (1024 * 1024);
    let warning = if backlog > 0 && free < warn_below {
        Some(format!(
            "{backlog} records wait to be forwarded and the data dir's disk has {} MiB free (warning below {} MiB; producers are refused below storage.free.bytes.min, {} MiB)",
            mib(free),
            mib(warn_below),
            mib(min)
        ))
    } else {
        full_in.filter(|s| *s < OUTLOOK_HORIZON_SECONDS).map(|s| {
            format!(
                "{backlog} records wait to be forwarded and, at the rate it fills, the data dir's disk reaches storage.free.bytes.min ({} MiB; producers are refused then) in about {} min",
                mib(min),
                s.div_ceil(60)
            )
        })
    };
    (full_in, warning)
}

/// Why the upstream position of a partition is not known.
enum Scan {
    /// The topic has this many partitions upstream, too few.
    Fewer(i32),
    Failed(String),
}

impl From<String> for Scan {
    fn from(e: String) -> Scan {
        Scan::Failed(e)
    }
}

/// The newest local offset of edge `edge_id`'s topic `topic_id` in upstream
/// `topic`/`partition` (-1: none), read back from the partition's end.
fn find_forwarded(
    client: &ClientConfig,
    edge_id: &str,
    topic_id: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, Scan> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "kafkabox-forward-scan")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let consumer = crate::clients::Closing::new(consumer, "upstream read-back consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("upstream metadata: {e}"))?;
    let upstream = md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if upstream <= partition {
        return Err(Scan::Fewer(upstream));
    }
    let watermarks = || {
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| format!("upstream watermarks: {e}"))
    };
    // Records a dead predecessor (an edge killed -9) had in flight may still be stored
    // upstream and become visible only once the cluster's high watermark covers them: read
    // back only once the end has stopped moving, or they would be sent again.
    let (mut low, mut high) = watermarks()?;
    let settled_by = std::time::Instant::now() + SETTLE_MAX;
    let mut still = 0;
    while still < SETTLE_STEPS && std::time::Instant::now() < settled_by {
        std::thread::sleep(SETTLE_STEP);
        let (l, h) = watermarks()?;
        still = if h == high { still + 1 } else { 0 };
        (low, high) = (l, h);
    }
    let mut end = high;
    while end > low && high - end < SCAN_MAX {
        let from = (end - SCAN_STEP).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut newest: Option<i64> = None;
        let mut at = from;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while at < end {
            if std::time::Instant::now() > deadline {
                return Err(Scan::Failed(
                    "reading the upstream partition back timed out".into(),
                ));
            }
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.map_err(|e| format!("reading upstream: {e}"))?;
            at = m.offset() + 1;
            if m.offset() >= end {
                break;
            }
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            if header(EDGE_ID).as_deref() == Some(edge_id)
                // (Records forwarded before the header existed have none.)
                && header(EDGE_TOPIC_ID).is_none_or(|t| t == topic_id)
            {
                if let Some(o) = header(EDGE_OFFSET).and_then(|o| o.parse::<i64>().ok()) {
                    newest = Some(newest.map_or(o, |n| n.max(o)));
                }
            }
        }
        if let Some(n) = newest {
            return Ok(n);
        }
        end = from;
    }
    Ok(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn outlook_warns_on_low_space_and_on_a_disk_filling_within_the_hour() {
        // Nothing waits: no warning, whatever the disk.
        assert_eq!(outlook(0, MIB, 256 * MIB, 1024 * MIB, None), (None, None));
        // Records wait and less than the warning level is free.
        let (full, w) = outlook(10, 900 * MIB, 256 * MIB, 1024 * MIB, None);
        assert_eq!(full, None);
        assert!(w.unwrap().starts_with("10 records wait to be forwarded"));
        // Plenty free, but falling by 1 MiB/s: 10,000 MiB above the minimum lasts 10,000 s.
        let (full, w) = outlook(
            10,
            10_256 * MIB,
            256 * MIB,
            1024 * MIB,
            Some((Duration::from_secs(60), 10_316 * MIB)),
        );
        assert_eq!(full, Some(10_000));
        assert_eq!(w, None, "more than an hour away");
        // 3,000 MiB above the minimum at 1 MiB/s: 50 minutes.
        let (full, w) = outlook(
            10,
            3_256 * MIB,
            256 * MIB,
            1024 * MIB,
            Some((Duration::from_secs(60), 3_316 * MIB)),
        );
        assert_eq!(full, Some(3_000));
        assert!(w.unwrap().contains("in about 50 min"));
        // Not falling: no estimate.
        let (full, _) = outlook(
            10,
            3_256 * MIB,
            256 * MIB,
            1024 * MIB,
            Some((Duration::from_secs(60), 3_000 * MIB)),
        );
        assert_eq!(full, None);
    }
}
