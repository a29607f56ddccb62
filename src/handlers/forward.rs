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
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::pipeline::{Event, Handler, HandlerError};

/// Header naming the edge a record came from.
pub const EDGE_ID: &str = "kafkabox.edge.id";
/// Header with the record's offset on the edge.
pub const EDGE_OFFSET: &str = "kafkabox.edge.offset";
/// The forwarder's stage name (its position is kept under it; `kafkabox.forward` as a group).
pub const NAME: &str = "forward";
/// Records read back per step when looking for this edge's newest record upstream.
const SCAN_STEP: i64 = 1000;
/// How far back (records) the scan goes before deciding this edge has nothing there.
const SCAN_MAX: i64 = 1_000_000;

pub struct Forward {
    client: ClientConfig,
    producer: FutureProducer,
    edge_id: String,
    /// Per (topic, partition): the newest local offset the cluster is known to hold, or
    /// `None` when it must be looked up (after a start or a failure).
    known: Mutex<HashMap<(String, i32), Option<i64>>>,
    /// Partition counts of the forwarded topics here (a topic missing upstream is created with
    /// as many).
    local_partitions: HashMap<String, i32>,
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
        local_partitions: HashMap<String, i32>,
        services: Arc<crate::services::Services>,
    ) -> anyhow::Result<Forward> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", bootstrap);
        for (k, v) in settings {
            client.set(k, v);
        }
        let mut producer = client.clone();
        producer
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        // The user's settings win, but for what makes the forwarding exact.
        for (k, v) in settings {
            producer.set(k, v);
        }
        let producer: FutureProducer = producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Forward {
            client,
            producer,
            edge_id: edge_id.to_string(),
            known: Mutex::default(),
            local_partitions,
            services,
            log: Mutex::new(crate::services::log_limit::RateLimitedLog::new()),
        })
    }

    /// Creates `topic` upstream, with as many partitions as here, when it is missing there.
    async fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client.create().map_err(|e| e.to_string())?;
        let n = self.local_partitions.get(topic).copied().unwrap_or(1);
        let new = NewTopic::new(topic, n, TopicReplication::Fixed(-1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
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
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(&(topic.clone(), partition)).copied())
            .flatten();
        let forwarded = match known {
            Some(o) => o,
            None => {
                self.ensure_topic(&topic)
                    .await
                    .map_err(|e| self.failed(&topic, partition, e))?;
                let (client, edge) = (self.client.clone(), self.edge_id.clone());
                let (t, p) = (topic.clone(), partition);
                let found =
                    tokio::task::spawn_blocking(move || find_forwarded(&client, &edge, &t, p))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                match found {
                    Ok(o) => {
                        if o >= 0 {
                            tracing::info!(%topic, partition, upstream_has_up_to = o, "forwarding resumes after what the cluster holds");
                        }
                        if let Ok(mut k) = self.known.lock() {
                            k.insert((topic.clone(), partition), Some(o));
                        }
                        o
                    }
                    Err(e) => return Err(self.failed(&topic, partition, e)),
                }
            }
        };
        let mut pending = Vec::new();
        let edge_offsets: Vec<String> = events.iter().map(|e| e.offset.to_string()).collect();
        for (e, offset) in events.iter().zip(&edge_offsets) {
            if e.offset <= forwarded {
                continue;
            }
            let mut headers = OwnedHeaders::new();
            for (k, v) in &e.headers {
                headers = headers.insert(Header {
                    key: &String::from_utf8_lossy(k),
                    value: v.as_deref(),
                });
            }
            headers = headers
                .insert(Header {
                    key: EDGE_ID,
                    value: Some(self.edge_id.as_bytes()),
                })
                .insert(Header {
                    key: EDGE_OFFSET,
                    value: Some(offset.as_bytes()),
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
                    return Err(self.failed(&topic, partition, format!("upstream: {err}")))
                }
            }
        }
        for (offset, bytes, f) in pending {
            match f.await {
                Ok(Ok(_)) => {
                    let l = Self::topic_label(&topic);
                    self.services
                        .metrics
                        .forwarded_records
                        .get_or_create(&l)
                        .inc();
                    self.services
                        .metrics
                        .forwarded_bytes
                        .get_or_create(&l)
                        .inc_by(bytes as u64);
                    if let Ok(mut k) = self.known.lock() {
                        k.insert((topic.clone(), partition), Some(offset));
                    }
                }
                Ok(Err((err, _))) => {
                    return Err(self.failed(&topic, partition, format!("upstream: {err}")))
                }
                Err(_) => {
                    return Err(self.failed(&topic, partition, "upstream send cancelled".into()))
                }
            }
        }
        Ok(())
    }
}

/// The newest local offset of edge `edge_id` in upstream `topic`/`partition` (-1: none), read
/// back from the partition's end.
fn find_forwarded(
    client: &ClientConfig,
    edge_id: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, String> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "kafkabox-forward-scan")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
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
        return Err(format!(
            "topic {topic} has {upstream} partitions upstream, none numbered {partition}: create it there with as many partitions as here"
        ));
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| format!("upstream watermarks: {e}"))?;
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
                return Err("reading the upstream partition back timed out".into());
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
            if header(EDGE_ID).as_deref() == Some(edge_id) {
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
