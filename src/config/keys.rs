//! The keys [`Config::set`] knows: [`KEYS`] (each with the one-line description `--help` and
//! the README's configuration reference print), the aliases, and the parsing of every key's
//! text form into [`Config`], with its checks and error messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::kafka_releases;
use super::listeners::{ClientAuth, ListenerConfig, SecurityProtocol, SASL_MECHANISMS};
use super::{Config, Secret};

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
    ("processing.guarantee", "kafkabox handle: at_least_once (default) or exactly_once_v2, each batch's re-keyed events, changelog records, dead letters and consumed offsets in one Kafka transaction (Kafka Streams' setting)"),
    ("stage.stall.timeout.ms", "a stage that has retried the same records this long without progress makes /ready answer 503 with the stage and its error; a stopped stage does at once (default 60000)"),
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
    ("group.initial.rebalance.delay.ms", "the first rebalance of an empty consumer group waits this long for more members, extended while they come, up to the rebalance timeout (default 3000; 0 for tests)"),
    ("group.max.size", "members per consumer group (default 1000)"),
    ("offset.metadata.max.bytes", "longest metadata string of a committed offset (default 4096)"),
    ("group.consumer.session.timeout.ms", "KIP-848 consumer group members silent this long are removed (default 45000)"),
    ("group.consumer.heartbeat.interval.ms", "heartbeat interval given to KIP-848 consumer group members (default 5000)"),
    ("group.max.member.metadata.bytes", "most bytes of JoinGroup protocol metadata (all protocols together), of one SyncGroup assignment, or of a KIP-848 subscription and owned partitions one group member may send; more is refused with INVALID_REQUEST (default 1048576)"),
    ("group.max.count", "consumer groups (classic and KIP-848) the broker holds; a JoinGroup, OffsetCommit or ConsumerGroupHeartbeat that would create one more gets INVALID_GROUP_ID (default 10000)"),
    ("offsets.retention.minutes", "committed offsets of a group without members expire this long after their commit or after the group emptied, whichever is later; a group left without members and offsets is removed (default 10080, 7 days); alias offsets.retention.ms in milliseconds"),
    ("offsets.retention.check.interval.ms", "how often expired offsets and empty groups are removed (default 600000)"),
    ("transaction.max.timeout.ms", "the longest transaction.timeout.ms a transactional producer may ask for (default 900000)"),
    ("transactional.id.expiration.ms", "how long a transactional id without transactions is remembered (default 604800000)"),
    ("transaction.abort.timed.out.transaction.cleanup.interval.ms", "how often transactions past their timeout are aborted (default 10000)"),
    ("transaction.remove.expired.transaction.cleanup.interval.ms", "how often expired transactional ids are removed (default 3600000)"),
];

/// Other names [`Config::set`] accepts for a key of [`KEYS`].
pub(super) const ALIASES: &[&str] = &[
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

fn positive<T: PartialOrd + Default + std::fmt::Display>(key: &str, v: T) -> Result<T> {
    if v <= T::default() {
        bail!("{key}: must be positive, got {v}");
    }
    Ok(v)
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
                    kafkabox_protocol::names::validate_topic_name(t)
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
            "group.initial.rebalance.delay.ms" => {
                let v: i32 = parse_num(k, value)?;
                if v < 0 {
                    bail!("{k}: must be 0 or more, got {v}");
                }
                self.group_initial_rebalance_delay_ms = v;
            }
            "processing.guarantee" => {
                self.handle_exactly_once = match value {
                    "at_least_once" => false,
                    "exactly_once_v2" => true,
                    "exactly_once" | "exactly_once_beta" => bail!(
                    "{k}: {value} is gone from Kafka Streams (removed in 4.0); use exactly_once_v2"
                ),
                    other => {
                        bail!("{k}: at_least_once or exactly_once_v2, got {other:?}")
                    }
                }
            }
            "stage.stall.timeout.ms" => {
                self.stage_stall_timeout =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "transaction.max.timeout.ms" => {
                self.transaction_max_timeout_ms = positive::<i32>(k, parse_num(k, value)?)?
            }
            "transactional.id.expiration.ms" => {
                self.transactional_id_expiration_ms = positive::<i64>(k, parse_num(k, value)?)?
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                self.transaction_abort_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "transaction.remove.expired.transaction.cleanup.interval.ms" => {
                self.transaction_remove_interval =
                    Duration::from_millis(positive::<u64>(k, parse_num(k, value)?)?)
            }
            "data.ephemeral" => self.ephemeral = parse_bool(k, value)?,
            "faults.allow" => self.faults_allowed = parse_bool(k, value)?,
            "emulate.kafka" => {
                let v = value.trim();
                if v.is_empty() {
                    self.emulate_kafka = None;
                } else {
                    kafka_releases::release(v).map_err(|e| anyhow!("{k}: {e}"))?;
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
}
