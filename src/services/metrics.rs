//! The counters and histograms kafkabox records as it works (Prometheus names, kept with the
//! `prometheus-client` crate). Gauges read from the store and the pipeline when scraped (log
//! offsets, lag, storage size, flush latency) are collected by the HTTP listener's `/metrics`;
//! docs/metrics.md lists every metric.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A Kafka request's API and the first non-zero error code of its answer (`NONE` if all are 0).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: &'static str,
    pub error: std::borrow::Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

/// Why an event was dead-lettered: `contract` (it breaks the topic's contract), `handler`
/// (a handler refused it), `undecodable` (its stored batch cannot be decoded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub topic: String,
    pub source: String,
    pub reason: &'static str,
}

/// A SASL authentication's mechanism and outcome (`success`, `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub mechanism: &'static str,
    pub result: &'static str,
}

/// An operation refused by the ACLs, by resource type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    pub resource: &'static str,
}

/// An injected fault's API (`connection` for refused connections) and action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub api: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: u16,
}

/// Most distinct sources labelled on dead-letter counts; later ones count as `other`.
const MAX_SOURCE_LABELS: usize = 200;

/// Latency buckets in seconds, 0.1 ms to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
    .into_iter()
}

/// Everything kafkabox counts as it goes. Cheap to share (`Arc`), lock-free to update.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<ApiLabels, Histogram>,
    pub appended_bytes: Family<TopicLabels, Counter>,
    pub appended_records: Family<TopicLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    /// Connections closed at once because `max.connections` were open.
    pub connections_refused: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    pub authentications: Family<AuthLabels, Counter>,
    pub authorization_denied: Family<DeniedLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Requests (and connections) an injected fault applied to.
    pub faults_injected: Family<FaultLabels, Counter>,
    /// Faults set and not yet cleared or run out.
    pub faults_active: Gauge,
    /// Records and bytes (values) the edge forwarder delivered upstream, and its failures.
    pub forwarded_records: Family<TopicLabels, Counter>,
    pub forwarded_bytes: Family<TopicLabels, Counter>,
    pub forward_errors: Family<TopicLabels, Counter>,
    /// Records the edge forwarder has not sent, and the seconds until the disk would refuse
    /// writes at the current rate (-1: not falling).
    pub forward_backlog: Gauge,
    pub forward_disk_full_in: Gauge,
    /// Offsets time retention would have removed but keeps because a handler stage has not
    /// committed past them (set by each retention sweep).
    pub retention_held_back: Family<PartitionLabels, Gauge>,
    sources: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            appended_bytes: Family::default(),
            appended_records: Family::default(),
            dead_lettered: Family::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            tls_handshake_failures: Counter::default(),
            authentications: Family::default(),
            authorization_denied: Family::default(),
            http_requests: Family::default(),
            faults_injected: Family::default(),
            faults_active: Gauge::default(),
            forwarded_records: Family::default(),
            forwarded_bytes: Family::default(),
            forward_errors: Family::default(),
            forward_backlog: Gauge::default(),
            forward_disk_full_in: Gauge::default(),
            retention_held_back: Family::default(),
            sources: Mutex::default(),
        }
    }
}

impl Metrics {
    /// A batch of `records` records, `bytes` bytes, appended to `topic` by a producer.
    pub fn appended(&self, topic: &str, bytes: u64, records: u64) {
        let l = TopicLabels {
            topic: topic.to_string(),
        };
        self.appended_bytes.get_or_create(&l).inc_by(bytes);
        self.appended_records.get_or_create(&l).inc_by(records);
    }

    /// One SASL authentication of `mechanism` ended: `success` or `failure`.
    pub fn authenticated(&self, mechanism: &'static str, result: &'static str) {
        self.authentications
            .get_or_create(&AuthLabels { mechanism, result })
            .inc();
    }

    /// One event of `topic` dead-lettered.
    pub fn dead_lettered(&self, topic: &str, source: Option<&str>, reason: &'static str) {
        let source = source.unwrap_or("unknown");
        let source = {
            let mut known = match self.sources.lock() {
                Ok(k) => k,
                Err(p) => p.into_inner(),
            };
            if known.contains(source)
                || known.len() < MAX_SOURCE_LABELS && known.insert(source.to_string())
            {
                source.to_string()
            } else {
                "other".to_string()
            }
        };
        self.dead_lettered
            .get_or_create(&DeadLetterLabels {
                topic: topic.to_string(),
                source,
                reason,
            })
            .inc();
    }

    /// A Kafka request of `api` answered after `seconds` with first error `error`.
    pub fn request(&self, api: &'static str, error: std::borrow::Cow<'static, str>, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { api, error })
            .inc();
        self.request_seconds
            .get_or_create(&ApiLabels { api })
            .observe(seconds);
    }

    /// Registers clones of every metric (they share their values) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kafkabox_kafka_requests",
            "Kafka requests answered, by API and the first non-zero error code of the answer (NONE when there is none)",
            self.requests.clone(),
        );
        registry.register(
            "kafkabox_kafka_request_duration_seconds",
            "Time from a Kafka request's arrival to its answer being ready (acks=all includes the flush, a long poll its wait)",
            self.request_seconds.clone(),
        );
        registry.register(
            "kafkabox_appended_bytes",
            "Bytes of record batches appended by producers (Kafka and HTTP), per topic",
            self.appended_bytes.clone(),
        );
        registry.register(
            "kafkabox_appended_records",
            "Records appended by producers (Kafka and HTTP), per topic",
            self.appended_records.clone(),
        );
        registry.register(
            "kafkabox_dead_lettered",
            "Events sent to a dead-letter topic since start, by original topic, source and reason (contract, handler, undecodable)",
            self.dead_lettered.clone(),
        );
        registry.register(
            "kafkabox_connections",
            "Open Kafka connections",
            self.connections.clone(),
        );
        registry.register(
            "kafkabox_connections_accepted",
            "Kafka connections accepted since start",
            self.connections_accepted.clone(),
        );
        registry.register(
            "kafkabox_retention_held_back_records",
            "Records time retention keeps because a handler stage of the topic has not committed past them",
            self.retention_held_back.clone(),
        );
        registry.register(
            "kafkabox_connections_refused",
            "Kafka connections closed at once because max.connections were open",
            self.connections_refused.clone(),
        );
        registry.register(
            "kafkabox_tls_handshake_failures",
            "TLS handshakes on SSL and SASL_SSL listeners that failed or timed out",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "kafkabox_sasl_authentications",
            "SASL authentications, by mechanism and result (success, failure)",
            self.authentications.clone(),
        );
        registry.register(
            "kafkabox_authorization_denied",
            "Operations refused by the ACLs, by resource type",
            self.authorization_denied.clone(),
        );
        registry.register(
            "kafkabox_faults_injected",
            "Kafka requests (api) and new connections (api=\"connection\") an injected fault applied to, by action (error, latency, disconnect, stall, refuse_connections)",
            self.faults_injected.clone(),
        );
        registry.register(
            "kafkabox_faults_active",
            "Injected faults not yet cleared or run out (0 unless a test set some)",
            self.faults_active.clone(),
        );
        registry.register(
            "kafkabox_forwarded_records",
            "Records the edge forwarder (serve --upstream) delivered to the central cluster, per topic",
            self.forwarded_records.clone(),
        );
        registry.register(
            "kafkabox_forwarded_bytes",
            "Bytes of record values the edge forwarder delivered to the central cluster, per topic",
            self.forwarded_bytes.clone(),
        );
        registry.register(
            "kafkabox_forward_errors",
            "Failed attempts of the edge forwarder (cluster unreachable, refused), per topic; it retries",
            self.forward_errors.clone(),
        );
        registry.register(
            "kafkabox_forward_backlog_records",
            "Records waiting to be forwarded to the central cluster (the local log holds them)",
            self.forward_backlog.clone(),
        );
        registry.register(
            "kafkabox_forward_disk_full_seconds",
            "Seconds until the data dir's disk reaches storage.free.bytes.min (writes refused) at the rate it filled over the last minute while records waited to be forwarded; -1 when it is not filling or nothing waits",
            self.forward_disk_full_in.clone(),
        );
        registry.register(
            "kafkabox_http_requests",
            "HTTP requests answered, by method and status",
            self.http_requests.clone(),
        );
    }
}
