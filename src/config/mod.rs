//! Configuration: embedded defaults, then a TOML file, then `KAFKABOX_*` environment variables,
//! then command-line flags; later sources win.
//!
//! Keys use Kafka's names where Kafka has one (`auto.create.topics.enable`, `num.partitions`,
//! `message.max.bytes`, `log.retention.ms` ...). In TOML a key may be written quoted
//! (`"num.partitions" = 3`) or as plain dotted keys (`num.partitions = 3`); both mean the same.
//! An environment variable maps to a key by dropping `KAFKABOX_`, lowercasing and turning `_`
//! into `.`: `KAFKABOX_NUM_PARTITIONS=3` sets `num.partitions`.
//!
//! The bottom of the crate's layers: it imports none of services, api, http, pipeline,
//! appliance, listener or handlers (they import it).
//!
//! - `mod.rs`: [`Config`] with its defaults, and the sources in order (TOML, `KAFKABOX_*`).
//! - `keys.rs`: the table of known keys ([`KEYS`], printed by `--help` and the README), their
//!   aliases, and [`Config::set`], which parses each key's text.
//! - `listeners.rs`: the Kafka listeners, their security protocols, TLS client auth and SASL
//!   mechanisms, and what the config derives from them (bind and advertised addresses).
//! - `handlers.rs`: the handler chains per topic ([`HANDLERS`], `handlers.<topic>`) and the
//!   customer-events contract (`customer.events.schema`).
//! - `kafka_releases.rs`: the table of Apache Kafka releases' API versions (`emulate.kafka`).

mod handlers;
pub mod kafka_releases;
mod keys;
mod listeners;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use handlers::HANDLERS;
use keys::ALIASES;
pub use keys::{parse_host_port, KEYS};
pub use listeners::{ClientAuth, ListenerConfig, SecurityProtocol, SASL_MECHANISMS};

/// A secret setting (`http.token`): shown as `***` in debug output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Every setting of the broker.
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
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty classic group waits
    /// this long for more members, extended while they come (Kafka's default 3000).
    pub group_initial_rebalance_delay_ms: i32,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask
    /// for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: how long an idle transactional id is remembered.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often transactions
    /// past their timeout are looked for (and aborted).
    pub transaction_abort_interval: Duration,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often expired
    /// transactional ids are looked for.
    pub transaction_remove_interval: Duration,
    /// `stage.stall.timeout.ms`: a stage that has retried this long without progress (or has
    /// stopped) makes `/ready` answer 503 with the reason.
    pub stage_stall_timeout: Duration,
    /// `data.ephemeral`: a fresh temporary data directory, removed at shutdown.
    pub ephemeral: bool,
    /// `faults.allow`: fault injection on a data directory that is not ephemeral.
    pub faults_allowed: bool,
    /// `emulate.kafka`: the Apache Kafka release whose API versions ApiVersions advertises.
    pub emulate_kafka: Option<String>,
    /// `kafka.<librdkafka key>`: client settings of `kafkabox handle` (and the edge
    /// forwarder), passed to librdkafka as they are.
    pub kafka_client: BTreeMap<String, String>,
    /// `processing.guarantee` of `kafkabox handle`: `exactly_once_v2` (true) puts each batch's
    /// writes and consumed offsets in one Kafka transaction; `at_least_once` (false) does not.
    pub handle_exactly_once: bool,
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
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_abort_interval: Duration::from_millis(10_000),
            transaction_remove_interval: Duration::from_millis(3_600_000),
            stage_stall_timeout: Duration::from_millis(60_000),
            group_initial_rebalance_delay_ms: 3000,
            ephemeral: false,
            faults_allowed: false,
            emulate_kafka: None,
            kafka_client: BTreeMap::new(),
            handle_exactly_once: false,
            upstream: None,
            upstream_topics: vec!["*".to_string()],
            upstream_warn_free_bytes: 0,
        }
    }
}

impl Config {
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

    /// The inflation bound for produce validation, `None` when compressed batches are stored
    /// unchecked.
    pub fn inflate_limit(&self) -> Option<usize> {
        self.validate_compressed
            .then_some(self.max_inflated_batch_bytes)
    }
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
            ("processing.guarantee", "exactly_once_v2"),
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
        let readme = include_str!("../../README.md");
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
