//! Configuration: embedded defaults, then a TOML file, then `KAFKABOX_*` environment variables,
//! then command-line flags; later sources win.
//!
//! Keys use Kafka's names where Kafka has one (`auto.create.topics.enable`, `num.partitions`,
//! `message.max.bytes`, `log.retention.ms` ...). In TOML a key may be written quoted
//! (`"num.partitions" = 3`) or as plain dotted keys (`num.partitions = 3`); both mean the same.
//! An environment variable maps to a key by dropping `KAFKABOX_`, lowercasing and turning `_`
//! into `.`: `KAFKABOX_NUM_PARTITIONS=3` sets `num.partitions`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Every setting of the broker.
/// A secret setting (`http.token`): shown as `***` in debug output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Kafka's security protocols, one per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener of `listeners`: `NAME://host:port`, its protocol from the name or
/// `listener.security.protocol.map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl ListenerConfig {
    /// `host:port` to bind, IPv6 hosts in brackets.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `ssl.client.auth`: whether TLS listeners ask clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// The SASL mechanisms kafkabox implements.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `listeners`: the Kafka listeners (`listen` sets one PLAINTEXT listener).
    pub listeners: Vec<ListenerConfig>,
    /// `listener.security.protocol.map`: listener name -> protocol, for names that are not
    /// protocol names themselves.
    pub protocol_map: BTreeMap<String, SecurityProtocol>,
    /// `advertised.listeners`: host:port that Metadata tells clients of each listener (by
    /// name; a value without a name is the first listener's). Unset: the address the client
    /// connected to.
    pub advertised_listeners: Vec<(String, String, u16)>,
    /// `ssl.keystore.location`: PEM file with the private key and the certificate chain.
    pub ssl_keystore_location: Option<PathBuf>,
    /// `ssl.truststore.location`: PEM file of the CA certificates client certificates must
    /// chain to (mutual TLS).
    pub ssl_truststore_location: Option<PathBuf>,
    /// `ssl.client.auth`: none, requested or required.
    pub ssl_client_auth: ClientAuth,
    /// `sasl.enabled.mechanisms`
    pub sasl_mechanisms: Vec<String>,
    /// `authorizer.class.name`: set, ACLs are enforced.
    pub authorizer: bool,
    /// `super.users`: principals (`User:NAME`) allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`
    pub allow_if_no_acl: bool,
    /// `data.dir`
    pub data_dir: PathBuf,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `auto.create.topics.per.second`: most topics clients' Metadata requests create per
    /// second (more are answered LEADER_NOT_AVAILABLE, and the client asks again).
    pub auto_create_topics_per_second: u32,
    /// `dead.letter.topics.reserved`: clients can neither create nor write a topic named
    /// `<topic>.dlq` (only the box's stages write dead letters). False only for a box that
    /// stands in for the cluster of `kafkabox handle`, whose processes write them.
    pub dead_letter_topics_reserved: bool,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: u32,
    /// `message.max.bytes`: the largest record batch accepted.
    pub message_max_bytes: usize,
    /// `socket.request.max.bytes`: the largest request frame; a larger one closes the connection.
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: request bytes held in memory across all connections.
    pub queued_max_request_bytes: usize,
    /// `max.connections`
    pub max_connections: usize,
    /// `connections.max.idle.ms`: a connection that completes no request for this long is
    /// closed (it also bounds how long a half-sent frame may hold buffer space).
    pub connections_max_idle: Duration,
    /// `max.inflight.requests.per.connection`: responses pending per connection before the broker
    /// stops reading from it.
    pub max_inflight_per_connection: usize,
    /// `log.retention.ms`: delete segments whose records are all older than this; -1 keeps
    /// everything.
    pub retention_ms: i64,
    /// `log.retention.check.interval.ms`
    pub retention_check_interval: Duration,
    /// `producer.id.expiration.ms`: forget an idempotent producer's sequence state after this
    /// long without a write from it.
    pub producer_id_expiration_ms: i64,
    /// `log.flush.interval.ms`: writes nobody waits for (offset commits, group state) reach
    /// disk at least this often; every append starts a flush at once.
    pub flush_interval: Duration,
    /// `flush.on.acks.all`: answer acks=1 and acks=all only after the data is flushed (group
    /// commit); false answers at the append, and a crash can lose what was answered.
    pub flush_on_acks_all: bool,
    /// `storage.cache.bytes`: sled page cache, shared by the open segments.
    pub cache_bytes: u64,
    /// `log.segment.bytes`: roll a partition's segment at this size (topic: `segment.bytes`).
    pub segment_bytes: u64,
    /// `log.roll.ms`: roll a partition's segment this long after its first write (topic:
    /// `segment.ms`).
    pub segment_ms: i64,
    /// `storage.segments.open.max`: segment databases open at once.
    pub max_open_segments: usize,
    /// `max.partitions`: partitions of all topics together.
    pub max_partitions: u64,
    /// `storage.free.bytes.min`: writes are refused while less is free on the data dir's disk.
    pub min_free_bytes: u64,
    /// `handlers.<topic>`: the built-in handlers run over a topic's records (`profile`,
    /// `webhook`, `exec`, `log`), each with its own committed offsets. `customer.events.handlers`
    /// is `handlers.customer-events`; on customer-events handlers see only valid events.
    pub handlers: BTreeMap<String, Vec<String>>,
    /// `customer.events.schema`: a JSON Schema file replacing the shipped contract.
    pub customer_schema: Option<PathBuf>,
    /// `customer.events.on.invalid`: `dlq` (log, skip, keep in customer-events.dlq) or
    /// `reject` (the produce request fails with INVALID_RECORD).
    pub reject_invalid: bool,
    /// `customer.events.contract`: whether customer-events is checked against the contract.
    pub customer_contract_on: bool,
    /// `http.listen`: the HTTP listener (/health, /metrics); empty turns it off.
    pub http_listen: Option<String>,
    /// `http.listen` given as `https://host:port`: TLS with `ssl.keystore.location`.
    pub http_tls: bool,
    /// `http.token`: when set, every HTTP request but /health and the dashboard page (and
    /// /metrics with `http.metrics.public`) must carry `Authorization: Bearer <token>`.
    pub http_token: Option<Secret>,
    /// `http.max.body.bytes`: largest HTTP request body accepted.
    pub http_max_body_bytes: usize,
    /// `http.allowed.hosts`: Host names the HTTP listener answers besides localhost, IP
    /// addresses and the host of `http.listen`, lower case; `*` any. Other names are refused,
    /// so a web page cannot reach the API by making its own name resolve to 127.0.0.1.
    pub http_allowed_hosts: Vec<String>,
    /// `http.cors.allowed.origins`: origins (`https://app.example.com`) of other sites whose
    /// pages may call the HTTP API from a browser; `*` any. Others may not change anything.
    pub http_cors_allowed_origins: Vec<String>,
    /// `http.metrics.public`: /metrics answers without `http.token` (it names every topic and
    /// source, so it needs the token by default).
    pub http_metrics_public: bool,
    /// `webhook.url`: where the webhook handler POSTs.
    pub webhook_url: Option<String>,
    /// `exec.command`: the exec handler's command line (run with `sh -c`).
    pub exec_command: Option<String>,
    /// `validate.compressed.batches`: inflate compressed batches on produce to check their
    /// records, as Kafka does (bounded by `max.inflated.batch.bytes`).
    pub validate_compressed: bool,
    /// `max.inflated.batch.bytes`: the most a compressed batch may inflate to.
    pub max_inflated_batch_bytes: usize,
    /// `group.min.session.timeout.ms`: the shortest session timeout a group member may ask for.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: the longest.
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`: members (and member ids handed out) per group.
    pub group_max_size: usize,
    /// `offset.metadata.max.bytes`: the longest metadata string an offset commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `group.consumer.session.timeout.ms`: KIP-848 members silent this long are removed.
    pub group_consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members heartbeat.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `group.max.member.metadata.bytes`: the most client-supplied group state one member may
    /// leave with the coordinator: its JoinGroup protocol metadata (all protocols together),
    /// the assignment a SyncGroup hands it, its KIP-848 subscription and owned partitions.
    /// Kafka has no such bound (only the request size); without it one unauthenticated client
    /// could park the whole request size in memory and on disk per member.
    pub group_max_member_metadata_bytes: usize,
    /// `group.max.count`: classic and KIP-848 groups the coordinator holds (pipeline groups
    /// aside). A request that would create one more is refused, so commits with generation -1
    /// under ever new group ids cannot grow memory and the store without limit.
    pub group_max_count: usize,
    /// `offsets.retention.minutes` (or `offsets.retention.ms`): offsets of a group without
    /// members expire this long after their commit, or after the group became empty if that is
    /// later; a group left with neither members nor offsets goes too (Kafka's default 7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval: Duration,
    /// `data.ephemeral`: a fresh temporary data directory, removed at shutdown.
    pub ephemeral: bool,
    /// `faults.allow`: fault injection on a data directory that is not ephemeral.
    pub faults_allowed: bool,
    /// `emulate.kafka`: the Apache Kafka release whose API versions ApiVersions advertises.
    pub emulate_kafka: Option<String>,
    /// `kafka.<librdkafka key>`: client settings of `kafkabox handle` (and the edge
    /// forwarder), passed to librdkafka as they are.
    pub kafka_client: BTreeMap<String, String>,
    /// `upstream.bootstrap`: the central cluster the edge forwarder sends every record to.
    pub upstream: Option<String>,
    /// `upstream.topics`: what it forwards; `*` every topic (but the `.dlq` ones), also
    /// those created later.
    pub upstream_topics: Vec<String>,
    /// `upstream.warn.free.bytes`: the forwarder warns while it has a backlog and less than
    /// this is free on the data dir's disk (0: 4 x `storage.free.bytes.min`).
    pub upstream_warn_free_bytes: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: vec![ListenerConfig {
                name: "PLAINTEXT".into(),
                host: "0.0.0.0".into(),
                port: 9092,
            }],
            protocol_map: BTreeMap::new(),
            advertised_listeners: Vec::new(),
            ssl_keystore_location: None,
            ssl_truststore_location: None,
            ssl_client_auth: ClientAuth::None,
            sasl_mechanisms: SASL_MECHANISMS.iter().map(|m| m.to_string()).collect(),
            authorizer: false,
            super_users: Vec::new(),
            allow_if_no_acl: false,
            data_dir: PathBuf::from("./kafkabox-data"),
            auto_create_topics: true,
            dead_letter_topics_reserved: true,
            auto_create_topics_per_second: 20,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: 512 * 1024 * 1024,
            max_connections: 1000,
            connections_max_idle: Duration::from_millis(600_000),
            max_inflight_per_connection: 32,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_check_interval: Duration::from_secs(300),
            producer_id_expiration_ms: 86_400_000,
            flush_interval: Duration::from_millis(1000),
            flush_on_acks_all: true,
            cache_bytes: 256 * 1024 * 1024,
            segment_bytes: kafkabox_storage::DEFAULT_SEGMENT_BYTES,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_open_segments: 64,
            max_partitions: 10_000,
            min_free_bytes: kafkabox_storage::DEFAULT_MIN_FREE_BYTES,
            handlers: BTreeMap::from([(
                "customer-events".to_string(),
                vec!["profile".to_string()],
            )]),
            webhook_url: None,
            exec_command: None,
            http_listen: Some("127.0.0.1:8080".to_string()),
            http_tls: false,
            http_token: None,
            http_max_body_bytes: 8 * 1024 * 1024,
            http_allowed_hosts: Vec::new(),
            http_cors_allowed_origins: Vec::new(),
            http_metrics_public: false,
            customer_schema: None,
            reject_invalid: false,
            customer_contract_on: true,
            validate_compressed: true,
            max_inflated_batch_bytes: 64 * 1024 * 1024,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1000,
            offset_metadata_max_bytes: 4096,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_max_member_metadata_bytes: 1024 * 1024,
            group_max_count: 10_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval: Duration::from_millis(600_000),
            ephemeral: false,
            faults_allowed: false,
            emulate_kafka: None,
            kafka_client: BTreeMap::new(),
            upstream: None,
            upstream_topics: vec!["*".to_string()],
            upstream_warn_free_bytes: 0,
        }
    }
}

/// The keys [`Config::set`] accepts, with a one-line description (printed by `--help` and the
/// README's configuration reference).
pub const KEYS: &[(&str, &str)] = &[
    ("listen", "one PLAINTEXT Kafka listener, host:port (default 0.0.0.0:9092); shorthand for listeners"),
    ("listeners", "Kafka listeners, NAME://host:port,...; NAME is PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL or mapped by listener.security.protocol.map (default PLAINTEXT://0.0.0.0:9092)"),
    ("listener.security.protocol.map", "listener names that are not protocol names, NAME:PROTOCOL,... e.g. INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL"),
    ("advertised.listener", "host:port given to clients in Metadata (default: the address they connected to); alias advertised.listeners, NAME://host:port,... for several listeners"),
    ("ssl.keystore.location", "PEM file with the TLS private key (unencrypted PKCS#8, PKCS#1 or SEC1) and certificate chain, for SSL and SASL_SSL listeners and an https:// http.listen"),
    ("ssl.truststore.location", "PEM file of CA certificates that client certificates must chain to (mutual TLS)"),
    ("ssl.client.auth", "none (default), requested or required: whether TLS listeners ask for a client certificate; its subject becomes the principal User:CN=..."),
    ("sasl.enabled.mechanisms", "SASL mechanisms of SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (default all three); users come from kafkabox users add"),
    ("authorizer.class.name", "set (to any authorizer name, e.g. kafkabox or org.apache.kafka.metadata.authorizer.StandardAuthorizer) to enforce ACLs; empty: everyone may do everything (default)"),
    ("super.users", "principals allowed everything when ACLs are enforced, User:NAME;User:OTHER"),
    ("allow.everyone.if.no.acl.found", "when ACLs are enforced, allow an action on a resource no ACL names (default false)"),
    ("data.dir", "data directory (default ./kafkabox-data)"),
    ("data.ephemeral", "a fresh temporary data directory instead of data.dir, removed at shutdown; fault injection allowed (default false; serve --ephemeral)"),
    ("faults.allow", "accept fault injection (HTTP /api/v1/faults, kafkabox faults, the Rust API) on a data directory that is not ephemeral (default false; serve --allow-faults)"),
    ("emulate.kafka", "advertise the API versions of this Apache Kafka release in ApiVersions and refuse others, e.g. 2.8, 3.5, 3.9, 4.0 (default: every version kafkabox answers; serve --emulate-kafka)"),
    ("auto.create.topics.enable", "create a topic when Metadata asks for an unknown one (default true)"),
    ("auto.create.topics.per.second", "most topics auto-created per second; more are answered LEADER_NOT_AVAILABLE and the client asks again (default 20)"),
    ("dead.letter.topics.reserved", "clients can neither create nor write topics named <topic>.dlq: only the box's stages write dead letters; false for a box that stands in for the cluster of kafkabox handle (default true)"),
    ("num.partitions", "partitions of auto-created topics (default 1)"),
    ("message.max.bytes", "largest record batch accepted (default 1048588)"),
    ("socket.request.max.bytes", "largest request frame (default 104857600)"),
    ("queued.max.request.bytes", "request bytes buffered across all connections (default 536870912)"),
    ("max.connections", "concurrent client connections; more are closed at once (default 1000)"),
    ("connections.max.idle.ms", "close a connection that completes no request for this long (default 600000)"),
    ("max.inflight.requests.per.connection", "pending responses per connection (default 32)"),
    ("log.retention.ms", "delete log segments whose records are all older than this; -1 keeps all (default 604800000); alias retention.ms"),
    ("log.retention.check.interval.ms", "how often retention runs (default 300000)"),
    ("producer.id.expiration.ms", "forget an idle idempotent producer's sequence state after this long (default 86400000)"),
    ("log.flush.interval.ms", "flush writes nobody waits for (offset commits, group state) at least this often; appends start a flush at once (default 1000)"),
    ("flush.on.acks.all", "answer acks=1 and acks=all only once the batch is flushed to disk; false answers at the append and a crash can lose what was answered (default true)"),
    ("storage.cache.bytes", "sled page cache, shared by the open segment databases (default 268435456)"),
    ("log.segment.bytes", "roll a partition's log segment when it reaches this size; topic config segment.bytes (default 67108864)"),
    ("log.roll.ms", "roll a partition's log segment this long after its first write; topic config segment.ms (default 604800000)"),
    ("max.partitions", "partitions of all topics together; CreateTopics and CreatePartitions beyond get POLICY_VIOLATION (default 10000)"),
    ("storage.free.bytes.min", "writes are refused with KAFKA_STORAGE_ERROR while the data dir's disk has less free space; accepted again once there is more; 0 never refuses (default 268435456)"),
    ("storage.segments.open.max", "segment databases kept open at once; more are closed least recently used first (default 64)"),
    ("customer.events.handlers", "built-in handlers over the valid customer-events: profile, webhook, exec, log (default profile)"),
    ("handlers.<topic>", "built-in handlers over another topic's records, e.g. handlers.orders = [\"webhook\"]"),
    ("upstream.bootstrap", "forward every record appended here, in order per partition, to the same topic and partition of this Kafka cluster (bootstrap servers; serve --upstream; needs the cargo feature client)"),
    ("upstream.topics", "topics the edge forwarder sends upstream, a,b,c; * every topic but the .dlq ones, also those created later (default *)"),
    ("upstream.warn.free.bytes", "the edge forwarder warns (log, /metrics, /api/forward, dashboard) while records wait to be forwarded and less than this is free on the data dir's disk, or the disk would reach storage.free.bytes.min within an hour at its current rate (default 0: 4 x storage.free.bytes.min)"),
    ("kafka.<librdkafka key>", "a client setting of kafkabox handle, passed to librdkafka, e.g. kafka.security.protocol=SASL_SSL, kafka.session.timeout.ms=10000"),
    ("customer.events.schema", "JSON Schema file replacing the shipped customer-events contract"),
    ("customer.events.contract", "check customer-events against the contract, dead-lettering invalid events (default true); false: a plain topic (e.g. a kafkabox standing in for the cluster of kafkabox handle)"),
    ("customer.events.on.invalid", "dlq (default: invalid events logged, skipped, kept in customer-events.dlq) or reject (produce fails with INVALID_RECORD)"),
    ("http.listen", "HTTP listener: API, dashboard, /health, /metrics (default 127.0.0.1:8080; empty: off; https://host:port for TLS with ssl.keystore.location)"),
    ("http.token", "bearer token the HTTP API requires (all but /health and the dashboard page; /metrics too unless http.metrics.public); empty: none (default)"),
    ("http.max.body.bytes", "largest HTTP request body accepted (default 8388608)"),
    ("http.allowed.hosts", "Host names the HTTP listener answers besides localhost, IP addresses and the host of http.listen, a,b,c; * any (default: none); others get 403 (DNS rebinding)"),
    ("http.cors.allowed.origins", "origins of other sites whose pages may call the HTTP API from a browser, https://app.example.com,...; * any (default: none: pages of other origins may not change anything)"),
    ("http.metrics.public", "/metrics answers without http.token (default false: it needs the token when one is set)"),
    ("webhook.url", "URL the webhook handler POSTs each batch to (http://)"),
    ("exec.command", "command line the exec handler runs per batch, events as JSON lines on stdin"),
    ("validate.compressed.batches", "inflate compressed batches on produce to check every record, as Kafka does (default true)"),
    ("max.inflated.batch.bytes", "the most one compressed batch may inflate to (default 67108864)"),
    ("group.min.session.timeout.ms", "shortest session timeout a consumer group member may ask for (default 6000)"),
    ("group.max.session.timeout.ms", "longest session timeout a consumer group member may ask for (default 1800000)"),
    ("group.max.size", "members per consumer group (default 1000)"),
    ("offset.metadata.max.bytes", "longest metadata string of a committed offset (default 4096)"),
    ("group.consumer.session.timeout.ms", "KIP-848 consumer group members silent this long are removed (default 45000)"),
    ("group.consumer.heartbeat.interval.ms", "heartbeat interval given to KIP-848 consumer group members (default 5000)"),
    ("group.max.member.metadata.bytes", "most bytes of JoinGroup protocol metadata (all protocols together), of one SyncGroup assignment, or of a KIP-848 subscription and owned partitions one group member may send; more is refused with INVALID_REQUEST (default 1048576)"),
    ("group.max.count", "consumer groups (classic and KIP-848) the broker holds; a JoinGroup, OffsetCommit or ConsumerGroupHeartbeat that would create one more gets INVALID_GROUP_ID (default 10000)"),
    ("offsets.retention.minutes", "committed offsets of a group without members expire this long after their commit or after the group emptied, whichever is later; a group left without members and offsets is removed (default 10080, 7 days); alias offsets.retention.ms in milliseconds"),
    ("offsets.retention.check.interval.ms", "how often expired offsets and empty groups are removed (default 600000)"),
];

/// The built-in handlers `customer.events.handlers` may name.
pub const HANDLERS: &[&str] = &["profile", "webhook", "exec", "log"];

/// Other names [`Config::set`] accepts for a key of [`KEYS`].
const ALIASES: &[&str] = &[
    "advertised.listeners",
    "log.dir",
    "log.dirs",
    "retention.ms",
    "offsets.retention.ms",
];

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => bail!("{key}: expected true or false, got '{v}'"),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    v.trim()
        .parse::<T>()
        .map_err(|e| anyhow!("{key}: '{v}' is not a valid number: {e}"))
}

/// Parses `host:port`, also in Kafka's `PLAINTEXT://host:port` form.
pub fn parse_host_port(v: &str) -> Result<(String, u16)> {
    let v = v.trim();
    let v = v.split_once("://").map(|(_, rest)| rest).unwrap_or(v);
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("'{v}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("'{port}' in '{v}' is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("'{v}' has no host");
    }
    Ok((host.to_string(), port))
}

impl Config {
    /// Sets one key from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let k = key.trim();
        match k {
            "listen" => {
                let (h, p) = parse_host_port(value)?;
                let name = match value.trim().split_once("://") {
                    Some((n, _)) => n.trim().to_ascii_uppercase(),
                    None => "PLAINTEXT".to_string(),
                };
                self.listeners = vec![ListenerConfig {
                    name,
                    host: h,
                    port: p,
                }];
            }
            "listeners" => {
                let mut out: Vec<ListenerConfig> = Vec::new();
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    let (name, _) = item.split_once("://").ok_or_else(|| {
                        anyhow!(
                            "{k}: '{item}' is not NAME://host:port (e.g. SASL_SSL://0.0.0.0:9093)"
                        )
                    })?;
                    let name = name.trim().to_ascii_uppercase();
                    if out.iter().any(|l| l.name == name) {
                        bail!("{k}: listener name {name} appears twice; each listener needs its own name");
                    }
                    let (host, port) = parse_host_port(item).with_context(|| k.to_string())?;
                    out.push(ListenerConfig { name, host, port });
                }
                if out.is_empty() {
                    bail!("{k}: at least one listener is needed");
                }
                self.listeners = out;
            }
            "listener.security.protocol.map" => {
                let mut map = BTreeMap::new();
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    let (name, proto) = item
                        .split_once(':')
                        .ok_or_else(|| anyhow!("{k}: '{item}' is not NAME:PROTOCOL"))?;
                    let proto = SecurityProtocol::parse(proto).ok_or_else(|| {
                        anyhow!("{k}: unknown security protocol '{proto}'; one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
                    })?;
                    map.insert(name.trim().to_ascii_uppercase(), proto);
                }
                self.protocol_map = map;
            }
            "advertised.listener" | "advertised.listeners" => {
                let mut out = Vec::new();
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    let name = item
                        .split_once("://")
                        .map(|(n, _)| n.trim().to_ascii_uppercase())
                        .unwrap_or_default();
                    let (h, p) = parse_host_port(item)?;
                    out.push((name, h, p));
                }
                self.advertised_listeners = out;
            }
            "ssl.keystore.location" => {
                self.ssl_keystore_location =
                    Some(PathBuf::from(value.trim())).filter(|p| !p.as_os_str().is_empty())
            }
            "ssl.truststore.location" => {
                self.ssl_truststore_location =
                    Some(PathBuf::from(value.trim())).filter(|p| !p.as_os_str().is_empty())
            }
            "ssl.keystore.type" | "ssl.truststore.type" => {
                if !value.trim().eq_ignore_ascii_case("PEM") {
                    bail!("{k}: kafkabox reads PEM files only, got '{}'", value.trim());
                }
            }
            "ssl.client.auth" => {
                self.ssl_client_auth = match value.trim().to_ascii_lowercase().as_str() {
                    "none" | "" => ClientAuth::None,
                    "requested" => ClientAuth::Requested,
                    "required" => ClientAuth::Required,
                    other => bail!("{k}: expected none, requested or required, got '{other}'"),
                }
            }
            "sasl.enabled.mechanisms" => {
                let mut out = Vec::new();
                for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    let m = m.to_ascii_uppercase();
                    if !SASL_MECHANISMS.contains(&m.as_str()) {
                        bail!(
                            "{k}: kafkabox does not implement SASL mechanism '{m}'; it implements {}",
                            SASL_MECHANISMS.join(", ")
                        );
                    }
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                if out.is_empty() {
                    bail!("{k}: at least one mechanism is needed");
                }
                self.sasl_mechanisms = out;
            }
            "authorizer.class.name" => self.authorizer = !value.trim().is_empty(),
            "super.users" => {
                let mut out = Vec::new();
                for p in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    if !p.starts_with("User:") || p.len() == "User:".len() {
                        bail!("{k}: '{p}' is not a principal of the form User:NAME");
                    }
                    out.push(p.to_string());
                }
                self.super_users = out;
            }
            "allow.everyone.if.no.acl.found" => self.allow_if_no_acl = parse_bool(k, value)?,
            "data.dir" | "log.dir" | "log.dirs" => self.data_dir = PathBuf::from(value.trim()),
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(k, value)?,
            "auto.create.topics.per.second" => {
                self.auto_create_topics_per_second = parse_num(k, value)?
            }
            "dead.letter.topics.reserved" => {
                self.dead_letter_topics_reserved = parse_bool(k, value)?
            }
            "num.partitions" => {
                let n: u32 = parse_num(k, value)?;
                if n == 0 || n > 10_000 {
                    bail!("num.partitions: must be between 1 and 10000, got {n}");
                }
                self.num_partitions = n;
            }
            "message.max.bytes" => self.message_max_bytes = positive(k, parse_num(k, value)?)?,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = positive(k, parse_num(k, value)?)?
            }
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = positive(k, parse_num(k, value)?)?
            }
            "max.connections" => self.max_connections = positive(k, parse_num(k, value)?)?,
            "connections.max.idle.ms" => {
                self.connections_max_idle =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "max.inflight.requests.per.connection" => {
                self.max_inflight_per_connection = positive(k, parse_num(k, value)?)?
            }
            "log.retention.ms" | "retention.ms" => {
                let v: i64 = parse_num(k, value)?;
                if v < -1 || v == 0 {
                    bail!("{k}: must be positive or -1 (keep forever), got {v}");
                }
                self.retention_ms = v;
            }
            "log.retention.check.interval.ms" => {
                self.retention_check_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "producer.id.expiration.ms" => {
                self.producer_id_expiration_ms = positive::<i64>(k, parse_num(k, value)?)?
            }
            "log.flush.interval.ms" => {
                self.flush_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "flush.on.acks.all" => self.flush_on_acks_all = parse_bool(k, value)?,
            "customer.events.handlers" => self.set_handlers("customer-events", k, value)?,
            _ if k.starts_with("handlers.") => {
                self.set_handlers(&k["handlers.".len()..], k, value)?
            }
            _ if k.starts_with("kafka.") && k.len() > "kafka.".len() => {
                self.kafka_client
                    .insert(k["kafka.".len()..].to_string(), value.trim().to_string());
            }
            "http.listen" => {
                let v = value.trim();
                self.http_tls = v.to_ascii_lowercase().starts_with("https://");
                self.http_listen = if v.is_empty() {
                    None
                } else {
                    let (h, p) = parse_host_port(v)?;
                    Some(if h.contains(':') {
                        format!("[{h}]:{p}")
                    } else {
                        format!("{h}:{p}")
                    })
                }
            }
            "http.token" => {
                let v = value.trim();
                self.http_token = (!v.is_empty()).then(|| Secret(v.to_string()));
            }
            "http.max.body.bytes" => self.http_max_body_bytes = positive(k, parse_num(k, value)?)?,
            "http.allowed.hosts" => {
                let mut out = Vec::new();
                for h in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                    let h = h.trim_end_matches('.').to_ascii_lowercase();
                    let name = h
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
                    if h != "*" && (h.is_empty() || !name) {
                        bail!("{k}: '{h}' is not a host name (write the name alone, without scheme or port: box.example.com)");
                    }
                    out.push(h);
                }
                self.http_allowed_hosts = out;
            }
            "http.cors.allowed.origins" => {
                let mut out = Vec::new();
                for o in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    let o = o.trim_end_matches('/').to_ascii_lowercase();
                    let authority = o
                        .strip_prefix("http://")
                        .or_else(|| o.strip_prefix("https://"))
                        .filter(|a| !a.is_empty() && !a.contains(['/', '?', '#', '@']));
                    if o != "*" && authority.is_none() {
                        bail!("{k}: '{o}' is not an origin: scheme://host[:port] without a path, e.g. https://app.example.com:8443");
                    }
                    out.push(o);
                }
                self.http_cors_allowed_origins = out;
            }
            "http.metrics.public" => self.http_metrics_public = parse_bool(k, value)?,
            "customer.events.schema" => {
                self.customer_schema =
                    Some(PathBuf::from(value.trim())).filter(|p| !p.as_os_str().is_empty())
            }
            "upstream.bootstrap" => {
                let v = value.trim();
                self.upstream = (!v.is_empty()).then(|| v.to_string());
            }
            "upstream.topics" => {
                let topics: Vec<String> = value
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                for t in topics.iter().filter(|t| *t != "*") {
                    crate::services::topics::validate_topic_name(t)
                        .map_err(|e| anyhow!("{k}: {e}"))?;
                }
                if topics.is_empty() {
                    bail!("{k}: name at least one topic, or * for all");
                }
                self.upstream_topics = topics;
            }
            "upstream.warn.free.bytes" => self.upstream_warn_free_bytes = parse_num(k, value)?,
            "customer.events.contract" => self.customer_contract_on = parse_bool(k, value)?,
            "customer.events.on.invalid" => {
                self.reject_invalid = match value.trim() {
                    "dlq" => false,
                    "reject" => true,
                    other => bail!("{k}: expected dlq or reject, got '{other}'"),
                }
            }
            "webhook.url" => {
                self.webhook_url = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "exec.command" => {
                self.exec_command = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "validate.compressed.batches" => self.validate_compressed = parse_bool(k, value)?,
            "max.inflated.batch.bytes" => {
                self.max_inflated_batch_bytes = positive(k, parse_num(k, value)?)?
            }
            "storage.cache.bytes" => self.cache_bytes = positive::<u64>(k, parse_num(k, value)?)?,
            "log.segment.bytes" => {
                let v: u64 = parse_num(k, value)?;
                if !(14..=i32::MAX as u64).contains(&v) {
                    bail!("{k}: must be between 14 and {}, got {v}", i32::MAX);
                }
                self.segment_bytes = v;
            }
            "log.roll.ms" => self.segment_ms = positive::<i64>(k, parse_num(k, value)?)?,
            "max.partitions" => self.max_partitions = positive::<u64>(k, parse_num(k, value)?)?,
            "storage.free.bytes.min" => self.min_free_bytes = parse_num(k, value)?,
            "storage.segments.open.max" => {
                let v: usize = parse_num(k, value)?;
                if v < 2 {
                    bail!("{k}: must be at least 2, got {v}");
                }
                self.max_open_segments = v;
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = positive(k, parse_num(k, value)?)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = positive(k, parse_num(k, value)?)?
            }
            "group.max.size" => self.group_max_size = positive(k, parse_num(k, value)?)?,
            "group.consumer.session.timeout.ms" => {
                self.group_consumer_session_timeout_ms = positive(k, parse_num(k, value)?)?
            }
            "group.consumer.heartbeat.interval.ms" => {
                self.group_consumer_heartbeat_interval_ms = positive(k, parse_num(k, value)?)?
            }
            "group.max.member.metadata.bytes" => {
                self.group_max_member_metadata_bytes = positive(k, parse_num(k, value)?)?
            }
            "group.max.count" => self.group_max_count = positive(k, parse_num(k, value)?)?,
            "offsets.retention.minutes" => {
                let minutes: i64 = positive(k, parse_num(k, value)?)?;
                self.offsets_retention_ms = minutes
                    .checked_mul(60_000)
                    .ok_or_else(|| anyhow!("{k}: {minutes} minutes is too long"))?;
            }
            // Kafka's broker has only the minutes; milliseconds let tests and short-lived boxes
            // expire offsets sooner.
            "offsets.retention.ms" => {
                self.offsets_retention_ms = positive::<i64>(k, parse_num(k, value)?)?
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "data.ephemeral" => self.ephemeral = parse_bool(k, value)?,
            "faults.allow" => self.faults_allowed = parse_bool(k, value)?,
            "emulate.kafka" => {
                let v = value.trim();
                if v.is_empty() {
                    self.emulate_kafka = None;
                } else {
                    crate::api::emulate::release(v).map_err(|e| anyhow!("{k}: {e}"))?;
                    self.emulate_kafka = Some(v.to_string());
                }
            }
            "offset.metadata.max.bytes" => {
                self.offset_metadata_max_bytes = positive(k, parse_num(k, value)?)?
            }
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                bail!(
                    "unknown setting '{k}'; known settings: {}",
                    known.join(", ")
                )
            }
        }
        Ok(())
    }

    /// Applies a TOML document. Nested tables are flattened into dotted keys.
    pub fn apply_toml(&mut self, text: &str) -> Result<()> {
        let value: toml::Table = text.parse().context("config file is not valid TOML")?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(value), &mut flat)?;
        for (k, v) in flat {
            self.set(&k, &v)
                .with_context(|| format!("in config file, key '{k}'"))?;
        }
        Ok(())
    }

    /// Applies `KAFKABOX_*` variables from `vars`. A variable naming no setting is returned (to
    /// be logged) rather than refused: the environment may carry unrelated `KAFKABOX_` names. A
    /// known setting with a bad value is an error.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>> {
        let mut ignored = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("KAFKABOX_") else {
                continue;
            };
            // The log filter (read by main), and the variables of the client commands and the
            // test helpers, which may well be set where a box runs.
            if ["LOG", "BIN", "BOOTSTRAP", "HTTP", "HTTP_TOKEN"].contains(&rest) {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace('_', ".");
            if !KEYS.iter().any(|(k, _)| *k == key)
                && !ALIASES.contains(&key.as_str())
                && !key.starts_with("kafka.")
            {
                ignored.push(name);
                continue;
            }
            self.set(&key, &value)
                .with_context(|| format!("in environment variable {name}"))?;
        }
        Ok(ignored)
    }

    fn set_handlers(&mut self, topic: &str, key: &str, value: &str) -> Result<()> {
        crate::services::topics::validate_topic_name(topic).map_err(|e| anyhow!("{key}: {e}"))?;
        let names: Vec<String> = value
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(bad) = names.iter().find(|n| !HANDLERS.contains(&n.as_str())) {
            bail!(
                "{key}: unknown handler '{bad}'; built-in handlers: {}",
                HANDLERS.join(", ")
            );
        }
        self.handlers.insert(topic.to_string(), names);
        Ok(())
    }

    /// The customer-events contract: the configured schema file, or the shipped one.
    pub fn customer_contract(&self) -> Result<crate::contract::Contract> {
        match &self.customer_schema {
            None => crate::contract::Contract::default_contract(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("customer.events.schema: cannot read {}", path.display())
                })?;
                crate::contract::Contract::new(&text)
                    .with_context(|| format!("customer.events.schema: {}", path.display()))
            }
        }
    }

    /// The inflation bound for produce validation, `None` when compressed batches are stored
    /// unchecked.
    pub fn inflate_limit(&self) -> Option<usize> {
        self.validate_compressed
            .then_some(self.max_inflated_batch_bytes)
    }

    /// The protocol of a listener name: the name itself (`SASL_SSL`) or
    /// `listener.security.protocol.map`.
    pub fn protocol_of(&self, name: &str) -> Result<SecurityProtocol> {
        self.protocol_map
            .get(name)
            .copied()
            .or_else(|| SecurityProtocol::parse(name))
            .ok_or_else(|| {
                anyhow!("listener {name}: not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) and not in listener.security.protocol.map")
            })
    }

    /// Each listener's bind address and protocol, checked against the TLS and SASL settings
    /// they need.
    pub fn resolved_listeners(
        &self,
    ) -> Result<Vec<(ListenerConfig, SecurityProtocol, SocketAddr)>> {
        use std::net::ToSocketAddrs;
        let mut out = Vec::new();
        for l in &self.listeners {
            let proto = self.protocol_of(&l.name)?;
            if proto.tls() && self.ssl_keystore_location.is_none() {
                bail!(
                    "listener {}://{}: a {} listener needs ssl.keystore.location (a PEM file with the private key and certificate chain)",
                    l.name,
                    l.bind_addr(),
                    proto.name()
                );
            }
            let text = l.bind_addr();
            let addr = text
                .to_socket_addrs()
                .with_context(|| format!("listener {}://{text}", l.name))?
                .next()
                .ok_or_else(|| anyhow!("listener {}://{text} resolves to nothing", l.name))?;
            out.push((l.clone(), proto, addr));
        }
        if self.ssl_client_auth != ClientAuth::None && self.ssl_truststore_location.is_none() {
            bail!("ssl.client.auth={:?} needs ssl.truststore.location (the CA certificates client certificates chain to)", self.ssl_client_auth);
        }
        Ok(out)
    }

    /// The host and port Metadata gives clients of the listener `name`, if advertised.
    pub fn advertised_for(&self, name: &str) -> Option<(String, u16)> {
        let first = self.listeners.first().map(|l| l.name.as_str());
        self.advertised_listeners
            .iter()
            .find(|(n, _, _)| n == name || (n.is_empty() && Some(name) == first))
            .map(|(_, h, p)| (h.clone(), *p))
    }

    /// Whether any listener authenticates its clients (SASL, or TLS with client certificates).
    pub fn authenticates(&self) -> bool {
        self.listeners.iter().any(|l| {
            self.protocol_of(&l.name).is_ok_and(|p| {
                p.sasl() || (p.tls() && self.ssl_client_auth == ClientAuth::Required)
            })
        })
    }
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(key: &str, v: T) -> Result<T> {
    if v <= T::default() {
        bail!("{key}: must be positive, got {v}");
    }
    Ok(v)
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) -> Result<()> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
        }
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        toml::Value::Float(f) => {
            out.insert(prefix.to_string(), f.to_string());
        }
        toml::Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::String(s) => parts.push(s.clone()),
                    other => bail!("{prefix}: lists may hold strings only, found {other}"),
                }
            }
            out.insert(prefix.to_string(), parts.join(","));
        }
        other => bail!("{prefix}: unsupported value {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_layer_and_keys_are_kafkas() {
        let mut c = Config::default();
        c.apply_toml("num.partitions = 3\n\"auto.create.topics.enable\" = false\n[log]\nretention.ms = 1000\n")
            .unwrap();
        assert_eq!(c.num_partitions, 3);
        assert!(!c.auto_create_topics);
        assert_eq!(c.retention_ms, 1000);
        c.apply_env(vec![
            ("KAFKABOX_NUM_PARTITIONS".to_string(), "5".to_string()),
            (
                "KAFKABOX_ADVERTISED_LISTENER".to_string(),
                "PLAINTEXT://box.local:19092".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
            ("KAFKABOX_SOMETHING_ELSE".to_string(), "x".to_string()),
        ])
        .map(|ignored| assert_eq!(ignored, vec!["KAFKABOX_SOMETHING_ELSE".to_string()]))
        .unwrap();
        assert_eq!(c.num_partitions, 5);
        assert_eq!(
            c.advertised_for("PLAINTEXT"),
            Some(("box.local".to_string(), 19092))
        );
    }

    #[test]
    fn handler_lists_from_toml_arrays_or_commas() {
        let mut c = Config::default();
        assert_eq!(c.handlers["customer-events"], vec!["profile"]);
        c.apply_toml("customer.events.handlers = [\"profile\", \"webhook\"]\nwebhook.url = \"http://crm:8080/hook\"\n")
            .unwrap();
        assert_eq!(c.handlers["customer-events"], vec!["profile", "webhook"]);
        assert_eq!(c.webhook_url.as_deref(), Some("http://crm:8080/hook"));
        c.set("customer.events.handlers", "log, exec").unwrap();
        assert_eq!(c.handlers["customer-events"], vec!["log", "exec"]);
        c.apply_toml("[handlers]\n\"orders.v2\" = [\"webhook\", \"log\"]\n")
            .unwrap();
        assert_eq!(c.handlers["orders.v2"], vec!["webhook", "log"]);
        assert!(c.set("handlers.bad name", "log").is_err());
        let e = c
            .set("customer.events.handlers", "profile,email")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown handler 'email'") && e.contains("webhook"),
            "{e}"
        );
    }

    #[test]
    fn every_documented_key_is_accepted() {
        let samples = [
            ("customer.events.schema", "/tmp/schema.json"),
            ("customer.events.on.invalid", "reject"),
            ("handlers.<topic>", ""),
            ("webhook.url", "http://127.0.0.1:1/"),
            ("exec.command", "true"),
            ("customer.events.handlers", "profile"),
            ("advertised.listener", "host:1"),
            ("listen", "127.0.0.1:0"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            ),
            ("listener.security.protocol.map", "INTERNAL:PLAINTEXT"),
            ("ssl.keystore.location", "/tmp/key.pem"),
            ("ssl.truststore.location", "/tmp/ca.pem"),
            ("ssl.client.auth", "required"),
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
            ("authorizer.class.name", "kafkabox"),
            ("super.users", "User:admin;User:ops"),
            ("data.dir", "/tmp/x"),
            ("http.listen", "127.0.0.1:0"),
            ("emulate.kafka", "3.5"),
            ("upstream.bootstrap", "central:9092"),
            ("upstream.topics", "a,b"),
            ("upstream.warn.free.bytes", "1073741824"),
            ("http.allowed.hosts", "box.example.com,*"),
            (
                "http.cors.allowed.origins",
                "https://app.example.com:8443,*",
            ),
        ];
        for (key, _) in KEYS {
            if *key == "handlers.<topic>" || *key == "kafka.<librdkafka key>" {
                continue;
            }
            let value = samples
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| match Config::default().set(key, "true") {
                    Ok(()) => "true",
                    Err(_) => "1000",
                });
            let mut c = Config::default();
            c.set(key, value)
                .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        }
    }

    #[test]
    fn every_key_is_in_the_readme() {
        let readme = include_str!("../README.md");
        for (key, _) in KEYS {
            assert!(
                readme.contains(&format!("`{key}`")),
                "{key} is missing from the README's configuration reference"
            );
        }
    }

    #[test]
    fn errors_are_clear() {
        let mut c = Config::default();
        let e = c.set("num.partitons", "3").unwrap_err().to_string();
        assert!(e.contains("unknown setting 'num.partitons'"), "{e}");
        let e = c.set("num.partitions", "x").unwrap_err().to_string();
        assert!(e.contains("not a valid number"), "{e}");
        let e = c.apply_toml("message.max.bytes = -5").unwrap_err();
        assert!(
            format!("{e:#}").contains("message.max.bytes: '-5'"),
            "{e:#}"
        );
    }

    #[test]
    fn http_hosts_and_origins_are_checked() {
        let mut c = Config::default();
        assert!(c.http_allowed_hosts.is_empty() && c.http_cors_allowed_origins.is_empty());
        assert!(!c.http_metrics_public);
        c.apply_toml("[http]\nallowed.hosts = [\"Box.Example.com.\", \"kafkabox\"]\ncors.allowed.origins = \"https://App.example.com/, http://127.0.0.1:3000\"\nmetrics.public = true\n")
            .unwrap();
        assert_eq!(c.http_allowed_hosts, vec!["box.example.com", "kafkabox"]);
        assert_eq!(
            c.http_cors_allowed_origins,
            vec!["https://app.example.com", "http://127.0.0.1:3000"]
        );
        assert!(c.http_metrics_public);
        let e = c
            .set("http.allowed.hosts", "box:8080")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a host name"), "{e}");
        let e = c
            .set("http.cors.allowed.origins", "app.example.com")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an origin"), "{e}");
        assert!(c
            .set("http.cors.allowed.origins", "https://app.example.com/ui")
            .is_err());
    }
}
