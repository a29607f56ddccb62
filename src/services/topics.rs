//! Topics: Kafka's name rules, creation (CreateTopics, auto-creation, the appliance's own
//! topics), deletion, new partitions, and topic configs with Kafka's names, defaults and broker
//! synonyms. Knows no wire types.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafkabox_protocol::batch;
use kafkabox_storage::{Partition, Store, StoreError, Topic};

use super::error::{Error, Result};
use crate::config::Config;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Kafka's topic name rules (clients/.../internals/Topic.java): 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name '{name}' contains '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The value type of a config, as DescribeConfigs v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// Kafka's numbering (DescribeConfigsResponse.ConfigType).
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }
}

/// A topic config Kafka knows: its name, type, default and the broker setting that supplies
/// the default (its synonym).
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    pub broker_synonym: Option<&'static str>,
    /// Whether kafkabox acts on it (the others are stored and reported).
    pub in_effect: bool,
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    broker_synonym: Option<&'static str>,
    in_effect: bool,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        ty,
        default,
        broker_synonym,
        in_effect,
    }
}

use ConfigType as T;

/// Every topic config of Kafka 4.1 (TopicConfig.java, LogConfig), in Kafka's order of names.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        T::List,
        "delete",
        Some("log.cleanup.policy"),
        true,
    ),
    def(
        "compression.gzip.level",
        T::Int,
        "-1",
        Some("compression.gzip.level"),
        false,
    ),
    def(
        "compression.lz4.level",
        T::Int,
        "9",
        Some("compression.lz4.level"),
        false,
    ),
    def(
        "compression.type",
        T::String,
        "producer",
        Some("compression.type"),
        false,
    ),
    def(
        "compression.zstd.level",
        T::Int,
        "3",
        Some("compression.zstd.level"),
        false,
    ),
    def(
        "delete.retention.ms",
        T::Long,
        "86400000",
        Some("log.cleaner.delete.retention.ms"),
        false,
    ),
    def(
        "file.delete.delay.ms",
        T::Long,
        "60000",
        Some("log.segment.delete.delay.ms"),
        false,
    ),
    def(
        "flush.messages",
        T::Long,
        "9223372036854775807",
        Some("log.flush.interval.messages"),
        false,
    ),
    def(
        "flush.ms",
        T::Long,
        "9223372036854775807",
        Some("log.flush.interval.ms"),
        false,
    ),
    def(
        "follower.replication.throttled.replicas",
        T::List,
        "",
        None,
        false,
    ),
    def(
        "index.interval.bytes",
        T::Int,
        "4096",
        Some("log.index.interval.bytes"),
        false,
    ),
    // kafkabox's own: retention waits for the in-process handler stages that read the topic
    // (false: retention deletes by age and size alone, as Kafka does).
    def(RETENTION_WAITS_FOR_HANDLERS, T::Boolean, "true", None, true),
    def(
        "leader.replication.throttled.replicas",
        T::List,
        "",
        None,
        false,
    ),
    def(
        "local.retention.bytes",
        T::Long,
        "-2",
        Some("log.local.retention.bytes"),
        false,
    ),
    def(
        "local.retention.ms",
        T::Long,
        "-2",
        Some("log.local.retention.ms"),
        false,
    ),
    def(
        "max.compaction.lag.ms",
        T::Long,
        "9223372036854775807",
        Some("log.cleaner.max.compaction.lag.ms"),
        false,
    ),
    def(
        "max.message.bytes",
        T::Int,
        "1048588",
        Some("message.max.bytes"),
        true,
    ),
    def(
        "message.timestamp.after.max.ms",
        T::Long,
        "3600000",
        Some("log.message.timestamp.after.max.ms"),
        false,
    ),
    def(
        "message.timestamp.before.max.ms",
        T::Long,
        "9223372036854775807",
        Some("log.message.timestamp.before.max.ms"),
        false,
    ),
    def(
        "message.timestamp.type",
        T::String,
        "CreateTime",
        Some("log.message.timestamp.type"),
        true,
    ),
    def(
        "min.cleanable.dirty.ratio",
        T::Double,
        "0.5",
        Some("log.cleaner.min.cleanable.ratio"),
        false,
    ),
    def(
        "min.compaction.lag.ms",
        T::Long,
        "0",
        Some("log.cleaner.min.compaction.lag.ms"),
        false,
    ),
    def(
        "min.insync.replicas",
        T::Int,
        "1",
        Some("min.insync.replicas"),
        false,
    ),
    def(
        "preallocate",
        T::Boolean,
        "false",
        Some("log.preallocate"),
        false,
    ),
    def("remote.log.copy.disable", T::Boolean, "false", None, false),
    def(
        "remote.log.delete.on.disable",
        T::Boolean,
        "false",
        None,
        false,
    ),
    def("remote.storage.enable", T::Boolean, "false", None, false),
    def(
        "retention.bytes",
        T::Long,
        "-1",
        Some("log.retention.bytes"),
        true,
    ),
    def(
        "retention.ms",
        T::Long,
        "604800000",
        Some("log.retention.ms"),
        true,
    ),
    def(
        "segment.bytes",
        T::Int,
        // kafkabox's default (Kafka's is 1 GiB): see the storage crate's DEFAULT_SEGMENT_BYTES.
        "67108864",
        Some("log.segment.bytes"),
        false,
    ),
    def(
        "segment.index.bytes",
        T::Int,
        "10485760",
        Some("log.index.size.max.bytes"),
        false,
    ),
    def(
        "segment.jitter.ms",
        T::Long,
        "0",
        Some("log.roll.jitter.ms"),
        false,
    ),
    def(
        "segment.ms",
        T::Long,
        "604800000",
        Some("log.roll.ms"),
        false,
    ),
    def(
        "unclean.leader.election.enable",
        T::Boolean,
        "false",
        Some("unclean.leader.election.enable"),
        false,
    ),
];

/// kafkabox's topic config: whether retention keeps the records a handler stage has not
/// committed past.
pub const RETENTION_WAITS_FOR_HANDLERS: &str = "kafkabox.retention.waits.for.handlers";

/// Topic configs of Kafka 3.x that 4.0 removed; older admin tools still send them, so they are
/// accepted and kept, and reported only when set.
const LEGACY_TOPIC_CONFIGS: &[&str] = &[
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.difference.max.ms",
];

pub fn config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A topic config's effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    pub ty: ConfigType,
    /// The broker setting that supplies the default, with its value.
    pub synonym: Option<(&'static str, String, ConfigSource)>,
    /// Whether AlterConfigs may change it.
    pub read_only: bool,
}

/// Broker configs that can change at runtime (resource BROKER, name "0" or "" for the
/// cluster-wide default), each with the topic config it supplies the default of.
pub const DYNAMIC_BROKER_CONFIGS: &[(&str, &str)] = &[
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("message.max.bytes", "max.message.bytes"),
];

/// Broker configs set at runtime: for broker 0, and as the cluster-wide default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DynamicConfigs {
    pub broker: BTreeMap<String, String>,
    pub default: BTreeMap<String, String>,
}

/// Where a config value comes from (Kafka's DescribeConfigs sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (DYNAMIC_TOPIC_CONFIG).
    Topic,
    /// Set at runtime for broker 0 (DYNAMIC_BROKER_CONFIG).
    DynamicBroker,
    /// Set at runtime as the cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG).
    DynamicDefault,
    /// From kafkabox's settings file, environment or flags (STATIC_BROKER_CONFIG).
    Broker,
    /// Kafka's default (DEFAULT_CONFIG).
    Default,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::DynamicBroker => 2,
            ConfigSource::DynamicDefault => 3,
            ConfigSource::Broker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// The value kafkabox's own settings give a broker-level key, when it has one that differs from
/// Kafka's default.
fn static_broker_value(config: &Config, key: &str) -> Option<String> {
    let d = Config::default();
    match key {
        "message.max.bytes" if config.message_max_bytes != d.message_max_bytes => {
            Some(config.message_max_bytes.to_string())
        }
        "log.retention.ms" if config.retention_ms != d.retention_ms => {
            Some(config.retention_ms.to_string())
        }
        "log.segment.bytes" if config.segment_bytes != d.segment_bytes => {
            Some(config.segment_bytes.to_string())
        }
        "log.roll.ms" if config.segment_ms != d.segment_ms => Some(config.segment_ms.to_string()),
        _ => None,
    }
}

/// The broker's configs as DescribeConfigs reports them (resource type BROKER): Kafka's names,
/// kafkabox's values. Only [`DYNAMIC_BROKER_CONFIGS`] change at runtime; the rest are set at
/// start-up by file, environment or flags.
fn static_broker_configs(config: &Config) -> Vec<ConfigValue> {
    let d = Config::default();
    let dir = config.data_dir.display().to_string();
    let listeners = config
        .listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.bind_addr()))
        .collect::<Vec<_>>()
        .join(",");
    let advertised = config
        .listeners
        .iter()
        .filter_map(|l| {
            config
                .advertised_for(&l.name)
                .map(|(h, p)| format!("{}://{h}:{p}", l.name))
        })
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<(&str, ConfigType, String, bool)> = vec![
        (
            "advertised.listeners",
            T::String,
            advertised,
            !config.advertised_listeners.is_empty(),
        ),
        (
            "auto.create.topics.enable",
            T::Boolean,
            config.auto_create_topics.to_string(),
            config.auto_create_topics != d.auto_create_topics,
        ),
        ("broker.id", T::Int, "0".into(), false),
        ("compression.type", T::String, "producer".into(), false),
        (
            "connections.max.idle.ms",
            T::Long,
            config.connections_max_idle.as_millis().to_string(),
            config.connections_max_idle != d.connections_max_idle,
        ),
        ("default.replication.factor", T::Int, "1".into(), false),
        (
            "group.max.session.timeout.ms",
            T::Int,
            config.group_max_session_timeout_ms.to_string(),
            config.group_max_session_timeout_ms != d.group_max_session_timeout_ms,
        ),
        (
            "group.max.size",
            T::Int,
            config.group_max_size.to_string(),
            config.group_max_size != d.group_max_size,
        ),
        (
            "group.min.session.timeout.ms",
            T::Int,
            config.group_min_session_timeout_ms.to_string(),
            config.group_min_session_timeout_ms != d.group_min_session_timeout_ms,
        ),
        (
            "listeners",
            T::String,
            listeners,
            config.listeners != d.listeners,
        ),
        ("log.cleanup.policy", T::List, "delete".into(), false),
        ("log.dirs", T::String, dir, config.data_dir != d.data_dir),
        (
            "log.flush.interval.ms",
            T::Long,
            config.flush_interval.as_millis().to_string(),
            config.flush_interval != d.flush_interval,
        ),
        (
            "log.message.timestamp.type",
            T::String,
            "CreateTime".into(),
            false,
        ),
        ("log.retention.bytes", T::Long, "-1".into(), false),
        (
            "log.retention.check.interval.ms",
            T::Long,
            config.retention_check_interval.as_millis().to_string(),
            config.retention_check_interval != d.retention_check_interval,
        ),
        (
            "log.retention.ms",
            T::Long,
            config.retention_ms.to_string(),
            config.retention_ms != d.retention_ms,
        ),
        (
            "log.roll.ms",
            T::Long,
            config.segment_ms.to_string(),
            config.segment_ms != d.segment_ms,
        ),
        (
            "log.segment.bytes",
            T::Int,
            config.segment_bytes.to_string(),
            config.segment_bytes != d.segment_bytes,
        ),
        (
            "max.connections",
            T::Int,
            config.max_connections.to_string(),
            config.max_connections != d.max_connections,
        ),
        (
            "message.max.bytes",
            T::Int,
            config.message_max_bytes.to_string(),
            config.message_max_bytes != d.message_max_bytes,
        ),
        ("min.insync.replicas", T::Int, "1".into(), false),
        (
            "num.partitions",
            T::Int,
            config.num_partitions.to_string(),
            config.num_partitions != d.num_partitions,
        ),
        (
            "offset.metadata.max.bytes",
            T::Int,
            config.offset_metadata_max_bytes.to_string(),
            config.offset_metadata_max_bytes != d.offset_metadata_max_bytes,
        ),
        (
            "offsets.retention.check.interval.ms",
            T::Long,
            config
                .offsets_retention_check_interval
                .as_millis()
                .to_string(),
            config.offsets_retention_check_interval != d.offsets_retention_check_interval,
        ),
        (
            "offsets.retention.minutes",
            T::Int,
            // Whole minutes, as Kafka reports it (offsets.retention.ms may set less).
            (config.offsets_retention_ms / 60_000).to_string(),
            config.offsets_retention_ms != d.offsets_retention_ms,
        ),
        (
            "offsets.topic.replication.factor",
            T::Short,
            "1".into(),
            false,
        ),
        (
            "producer.id.expiration.ms",
            T::Int,
            config.producer_id_expiration_ms.to_string(),
            config.producer_id_expiration_ms != d.producer_id_expiration_ms,
        ),
        (
            "queued.max.request.bytes",
            T::Long,
            config.queued_max_request_bytes.to_string(),
            config.queued_max_request_bytes != d.queued_max_request_bytes,
        ),
        (
            "socket.request.max.bytes",
            T::Int,
            config.socket_request_max_bytes.to_string(),
            config.socket_request_max_bytes != d.socket_request_max_bytes,
        ),
        (
            "transaction.state.log.replication.factor",
            T::Short,
            "1".into(),
            false,
        ),
    ];
    rows.into_iter()
        .map(|(name, ty, value, set)| {
            let source = if set {
                ConfigSource::Broker
            } else {
                ConfigSource::Default
            };
            ConfigValue {
                name: name.to_string(),
                value: value.clone(),
                source,
                ty,
                synonym: None,
                read_only: !DYNAMIC_BROKER_CONFIGS.iter().any(|(k, _)| *k == name),
            }
        })
        .collect()
}

/// Checks one topic config against Kafka's rules for its type and values.
pub fn validate_config(name: &str, value: &str) -> Result<()> {
    if LEGACY_TOPIC_CONFIGS.contains(&name) {
        return Ok(());
    }
    let Some(d) = config_def(name) else {
        return Err(Error::InvalidConfig(format!(
            "Unknown topic config name: {name}"
        )));
    };
    let bad = |why: &str| {
        Err(Error::InvalidConfig(format!(
            "Invalid value {value} for configuration {name}: {why}"
        )))
    };
    match d.ty {
        T::Boolean if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") => {
            return bad("Expected value to be either true or false")
        }
        T::Int if value.trim().parse::<i32>().is_err() => return bad("Not a number of type INT"),
        T::Long if value.trim().parse::<i64>().is_err() => return bad("Not a number of type LONG"),
        T::Double if value.trim().parse::<f64>().is_err() => {
            return bad("Not a number of type DOUBLE")
        }
        _ => {}
    }
    match name {
        "cleanup.policy" => {
            for p in value.split(',').map(str::trim) {
                if p != "delete" && p != "compact" {
                    return bad("String must be one of: compact, delete");
                }
            }
        }
        "message.timestamp.type" if value != "CreateTime" && value != "LogAppendTime" => {
            return bad("String must be one of: CreateTime, LogAppendTime")
        }
        "compression.type"
            if !matches!(
                value,
                "uncompressed" | "zstd" | "lz4" | "snappy" | "gzip" | "producer"
            ) =>
        {
            return bad("String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer")
        }
        "retention.ms" | "retention.bytes"
            if value.trim().parse::<i64>().map(|v| v < -1).unwrap_or(true) =>
        {
            return bad("Value must be at least -1");
        }
        "max.message.bytes" if value.trim().parse::<i32>().map(|v| v < 0).unwrap_or(true) => {
            return bad("Value must be at least 0");
        }
        "segment.bytes" if value.trim().parse::<i32>().map(|v| v < 14).unwrap_or(true) => {
            return bad("Value must be at least 14");
        }
        "segment.ms" if value.trim().parse::<i64>().map(|v| v < 1).unwrap_or(true) => {
            return bad("Value must be at least 1");
        }
        "min.insync.replicas" if value.trim().parse::<i32>().map(|v| v < 1).unwrap_or(true) => {
            return bad("Value must be at least 1");
        }
        // Kafka's validator: between(0, 1), which NaN fails too.
        "min.cleanable.dirty.ratio"
            if !value
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| (0.0..=1.0).contains(&v)) =>
        {
            return bad("Value must be between 0 and 1");
        }
        _ => {}
    }
    Ok(())
}

/// Settings of a topic that kafkabox acts on, read from its configs (defaults from the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `cleanup.policy` has `compact`: keyless records are refused, sealed segments compacted.
    pub compacted: bool,
    /// `cleanup.policy` has `delete`: `retention.ms` and `retention.bytes` apply.
    pub deletes: bool,
    /// `delete.retention.ms`: how long compaction keeps a tombstone.
    pub delete_retention_ms: i64,
    /// `kafkabox.retention.waits.for.handlers`.
    pub retention_waits_for_handlers: bool,
}

impl TopicSettings {
    /// `value(topic config)` is the topic's effective value: its own, or the broker's.
    fn of(value: impl Fn(&str) -> Option<String>) -> TopicSettings {
        let num = |k: &str| value(k).and_then(|v| v.trim().parse::<i64>().ok());
        let policy: Vec<String> = value("cleanup.policy")
            .map(|p| p.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default();
        TopicSettings {
            retention_ms: num("retention.ms").unwrap_or(604_800_000),
            retention_bytes: num("retention.bytes").unwrap_or(-1),
            max_message_bytes: num("max.message.bytes")
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(1_048_588),
            log_append_time: value("message.timestamp.type").as_deref() == Some("LogAppendTime"),
            compacted: policy.iter().any(|p| p == "compact"),
            deletes: policy.is_empty() || policy.iter().any(|p| p == "delete"),
            delete_retention_ms: num("delete.retention.ms").unwrap_or(86_400_000),
            retention_waits_for_handlers: value(RETENTION_WAITS_FOR_HANDLERS)
                .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false")),
        }
    }
}

/// What a CreateTopics entry asks for.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions` (or the number of assignments).
    pub partitions: i32,
    /// -1: the broker's default (1).
    pub replication_factor: i16,
    /// Replica assignments: partition -> brokers.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Configs; a `None` value means "the default".
    pub configs: Vec<(String, Option<String>)>,
}

/// The topics service.
#[derive(Debug, Clone)]
pub struct Topics {
    store: Store,
    config: Arc<Config>,
    dynamic: Arc<std::sync::RwLock<DynamicConfigs>>,
    /// Auto-creations left in this second's budget (`auto.create.topics.per.second`), and
    /// when the budget was last refilled.
    auto_creations: Arc<std::sync::Mutex<(f64, std::time::Instant)>>,
}

impl Topics {
    /// The topics service; reads the dynamic broker configs stored in the data dir.
    pub fn new(store: Store, config: Arc<Config>) -> Result<Topics> {
        let dynamic = match store.broker_configs()? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Storage(StoreError::Corrupt(format!("dynamic broker configs: {e}")))
            })?,
            None => DynamicConfigs::default(),
        };
        let budget = f64::from(config.auto_create_topics_per_second);
        Ok(Topics {
            store,
            config,
            dynamic: Arc::new(std::sync::RwLock::new(dynamic)),
            auto_creations: Arc::new(std::sync::Mutex::new((budget, std::time::Instant::now()))),
        })
    }

    fn dynamic(&self) -> DynamicConfigs {
        self.dynamic.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// A broker key's effective value and its source: set for broker 0, set as the cluster
    /// default, kafkabox's settings, or Kafka's default (None).
    fn broker_value(&self, dynamic: &DynamicConfigs, key: &str) -> Option<(String, ConfigSource)> {
        if let Some(v) = dynamic.broker.get(key) {
            return Some((v.clone(), ConfigSource::DynamicBroker));
        }
        if let Some(v) = dynamic.default.get(key) {
            return Some((v.clone(), ConfigSource::DynamicDefault));
        }
        static_broker_value(&self.config, key).map(|v| (v, ConfigSource::Broker))
    }

    /// The broker's configs with their effective values (DescribeConfigs, resource BROKER).
    pub fn broker_configs(&self) -> Vec<ConfigValue> {
        let dynamic = self.dynamic();
        let mut out = static_broker_configs(&self.config);
        for c in &mut out {
            if let Some((v, src)) = self.broker_value(&dynamic, &c.name) {
                if matches!(
                    src,
                    ConfigSource::DynamicBroker | ConfigSource::DynamicDefault
                ) {
                    c.value = v;
                    c.source = src;
                }
            }
        }
        out
    }

    /// AlterConfigs / IncrementalAlterConfigs on resource BROKER: `name` "0" (this broker) or
    /// "" (the cluster-wide default). Only [`DYNAMIC_BROKER_CONFIGS`] can change; the change
    /// takes effect at once and is kept in the data dir.
    pub fn alter_broker_configs(
        &self,
        name: &str,
        ops: &[(String, u8, Option<String>)],
        replace: bool,
        validate_only: bool,
    ) -> Result<()> {
        if !name.is_empty() && name != "0" {
            return Err(Error::InvalidRequest(format!(
                "Broker {name} does not exist; kafkabox is broker 0."
            )));
        }
        let mut all = self.dynamic();
        let map = if name.is_empty() {
            &mut all.default
        } else {
            &mut all.broker
        };
        if replace {
            map.clear();
        }
        for (key, op, value) in ops {
            let Some((_, topic_key)) = DYNAMIC_BROKER_CONFIGS.iter().find(|(k, _)| k == key) else {
                return Err(
                    if static_broker_configs(&self.config)
                        .iter()
                        .any(|c| &c.name == key)
                    {
                        Error::InvalidRequest(format!(
                        "Cannot update these configs dynamically: {key}. kafkabox sets it at start-up (config file, KAFKABOX_* variables, flags)."
                    ))
                    } else {
                        Error::InvalidConfig(format!("Unknown broker config name: {key}"))
                    },
                );
            };
            match op {
                0 => {
                    let v = value.clone().ok_or_else(|| {
                        Error::InvalidRequest(format!("Null value not supported for {key}"))
                    })?;
                    validate_config(topic_key, &v)
                        .map_err(|e| Error::InvalidConfig(e.to_string().replace(topic_key, key)))?;
                    map.insert(key.clone(), v);
                }
                1 => {
                    map.remove(key);
                }
                other => {
                    return Err(Error::InvalidRequest(format!(
                        "Config operation {other} is not supported on broker config {key}"
                    )))
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&all)
            .map_err(|e| Error::Storage(StoreError::Corrupt(e.to_string())))?;
        self.store.set_broker_configs(&bytes)?;
        if let Ok(mut d) = self.dynamic.write() {
            *d = all;
        }
        tracing::info!(broker = name, "dynamic broker configs changed");
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.store.topic(name)
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.store.topics()
    }

    /// The topic with this id (DeleteTopics v6+, Metadata v10+).
    pub fn by_id(&self, id: [u8; 16]) -> Option<Arc<Topic>> {
        self.store.topics().into_iter().find(|t| t.meta.id == id)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The settings kafkabox acts on for `topic`: its own configs, else the broker's.
    /// On the produce path: reads the dynamic configs in place rather than copying them.
    pub fn settings(&self, topic: &Topic) -> TopicSettings {
        let guard = self.dynamic.read();
        let none = DynamicConfigs::default();
        let dynamic = match &guard {
            Ok(d) => &**d,
            Err(_) => &none,
        };
        TopicSettings::of(|k| {
            topic.meta.configs.get(k).cloned().or_else(|| {
                let broker_key = config_def(k)?.broker_synonym?;
                self.broker_value(dynamic, broker_key).map(|(v, _)| v)
            })
        })
    }

    /// Checks a CreateTopics entry; returns the partition count and configs it would create.
    pub fn check_new(&self, t: &NewTopic) -> Result<(u32, BTreeMap<String, String>)> {
        let name = t.name.as_str();
        validate_topic_name(name).map_err(Error::InvalidTopic)?;
        if let Some(why) = self.reserved(name) {
            return Err(Error::PolicyViolation(why));
        }
        if self.store.topic(name).is_some() {
            return Err(Error::TopicExists(format!(
                "Topic '{name}' already exists."
            )));
        }
        let partitions = match t.partitions {
            -1 if t.assignments.is_empty() => self.config.num_partitions,
            -1 => t.assignments.len() as u32,
            n if (1..=MAX_PARTITIONS).contains(&n) => n as u32,
            n => {
                return Err(Error::InvalidPartitions(format!(
                    "Number of partitions must be between 1 and {MAX_PARTITIONS}, got {n}."
                )))
            }
        };
        if t.replication_factor != -1 && t.replication_factor != 1 {
            return Err(Error::InvalidReplicationFactor(format!(
                "Replication factor {} is larger than the number of brokers (1): kafkabox is a single broker.",
                t.replication_factor
            )));
        }
        if !t.assignments.is_empty() && (t.partitions != -1 || t.replication_factor != -1) {
            return Err(Error::InvalidRequest(
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        // As Kafka: partitions numbered 0..n-1 once each, each with a replica list without
        // repeats; and here the only broker is 0.
        let mut numbers: Vec<i32> = t.assignments.iter().map(|(p, _)| *p).collect();
        numbers.sort_unstable();
        if numbers.iter().enumerate().any(|(i, p)| *p != i as i32) {
            return Err(Error::InvalidReplicaAssignment(format!(
                "Partitions should be a consecutive 0-based integer sequence, got {numbers:?}."
            )));
        }
        for (p, brokers) in &t.assignments {
            if brokers.is_empty() {
                return Err(Error::InvalidReplicaAssignment(format!(
                    "Partition {p} has an empty replica assignment."
                )));
            }
            if brokers.len() > 1 {
                return Err(Error::InvalidReplicaAssignment(format!(
                    "Duplicate brokers not allowed in replica assignment of partition {p}: {brokers:?}."
                )));
            }
        }
        if t.assignments
            .iter()
            .any(|(_, brokers)| brokers.iter().any(|b| *b != super::NODE_ID))
        {
            return Err(Error::InvalidReplicaAssignment(
                "Replica assignments may only name broker 0.".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some((dup, _)) = t.configs.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(Error::InvalidConfig(format!(
                "Duplicate config key '{dup}' in the request."
            )));
        }
        let mut configs = BTreeMap::new();
        for (key, value) in &t.configs {
            match value {
                Some(v) => {
                    validate_config(key, v)?;
                    configs.insert(key.clone(), v.clone());
                }
                None => {
                    validate_config(key, config_def(key).map(|d| d.default).unwrap_or(""))?;
                }
            }
        }
        Ok((partitions, configs))
    }

    /// Creates a topic (blocking: it flushes the catalog).
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name).map_err(Error::InvalidTopic)?;
        self.store
            .create_topic(name, partitions, configs)
            .map_err(|e| match e {
                StoreError::TopicExists(_) => {
                    Error::TopicExists(format!("Topic '{name}' already exists."))
                }
                other => other.into(),
            })
    }

    /// Why clients may not create or write `name`, if they may not: a dead-letter topic
    /// (`<topic>.dlq`) while `dead.letter.topics.reserved` holds. The box's stages create and
    /// write their own.
    pub fn reserved(&self, name: &str) -> Option<String> {
        let base = name.strip_suffix(super::dead_letters::DEAD_LETTER_SUFFIX)?;
        self.config.dead_letter_topics_reserved.then(|| {
            format!(
                "Topic '{name}' is reserved: names ending in '{}' are dead-letter topics, which only kafkabox's stages create and write (the one of '{base}' is created with the stage that handles '{base}'; dead.letter.topics.reserved=false lifts this on a box that stands in for the cluster of `kafkabox handle`).",
                super::dead_letters::DEAD_LETTER_SUFFIX
            )
        })
    }

    /// A client's auto-creation of `name` (Metadata): `ensure`, within the budget of
    /// `auto.create.topics.per.second` new topics per second (a token bucket holding one
    /// second's worth). `Ok(None)` when the budget is spent: the client asks again, as it does
    /// for a topic whose leader is not elected yet, so one client naming many topics cannot
    /// fill `max.partitions` in seconds.
    pub fn auto_create(&self, name: &str) -> Result<Option<Arc<Topic>>> {
        if let Some(t) = self.store.topic(name) {
            return Ok(Some(t));
        }
        let rate = f64::from(self.config.auto_create_topics_per_second);
        {
            let Ok(mut b) = self.auto_creations.lock() else {
                return Ok(None);
            };
            let now = std::time::Instant::now();
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
            b.1 = now;
            if b.0 < 1.0 {
                return Ok(None);
            }
            b.0 -= 1.0;
        }
        self.ensure(name).map(Some)
    }

    /// Creates `name` with the broker's defaults unless it exists (auto-creation, the
    /// appliance's topics). Losing a race with another creator is success.
    pub fn ensure(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.store.topic(name) {
            return Ok(t);
        }
        match self.create(name, self.config.num_partitions, BTreeMap::new()) {
            Err(Error::TopicExists(m)) => self.store.topic(name).ok_or(Error::TopicExists(m)),
            other => other,
        }
    }

    /// Deletes a topic and all its data, offsets and producer state (blocking).
    pub fn delete(&self, name: &str) -> Result<()> {
        self.store.delete_topic(name).map_err(|e| match e {
            StoreError::UnknownTopic(_) => {
                Error::UnknownTopic(format!("This server does not host topic '{name}'."))
            }
            other => other.into(),
        })
    }

    /// Grows a topic to `count` partitions (blocking). Kafka never shrinks a topic.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<()> {
        let Some(t) = self.store.topic(name) else {
            return Err(Error::UnknownTopic(format!(
                "This server does not host topic '{name}'."
            )));
        };
        let have = t.partitions.len() as i32;
        if count <= have {
            return Err(Error::InvalidPartitions(format!(
                "Topic currently has {have} partitions, which is higher than the requested {count}."
            )));
        }
        if count > MAX_PARTITIONS {
            return Err(Error::InvalidPartitions(format!(
                "Number of partitions must be at most {MAX_PARTITIONS}, got {count}."
            )));
        }
        if validate_only {
            return Ok(());
        }
        self.store.add_partitions(name, count as u32)?;
        Ok(())
    }

    /// Every config of a topic with its effective value and source, in name order; `only`
    /// restricts the names (unknown names are left out, as Kafka does).
    pub fn describe_configs(&self, topic: &Topic, only: Option<&[String]>) -> Vec<ConfigValue> {
        let mut out = Vec::new();
        let dynamic = self.dynamic();
        let wanted = |n: &str| only.is_none_or(|o| o.iter().any(|x| x == n));
        for d in TOPIC_CONFIGS.iter().filter(|d| wanted(d.name)) {
            let broker = d
                .broker_synonym
                .map(|s| match self.broker_value(&dynamic, s) {
                    Some((v, src)) => (s, v, src),
                    None => (s, d.default.to_string(), ConfigSource::Default),
                });
            let (value, source) = match topic.meta.configs.get(d.name) {
                Some(v) => (v.clone(), ConfigSource::Topic),
                None => match &broker {
                    Some((_, v, src)) => (v.clone(), *src),
                    None => (d.default.to_string(), ConfigSource::Default),
                },
            };
            out.push(ConfigValue {
                name: d.name.to_string(),
                value,
                source,
                ty: d.ty,
                synonym: broker,
                read_only: false,
            });
        }
        for (k, v) in &topic.meta.configs {
            if LEGACY_TOPIC_CONFIGS.contains(&k.as_str()) && wanted(k) {
                out.push(ConfigValue {
                    name: k.clone(),
                    value: v.clone(),
                    source: ConfigSource::Topic,
                    ty: ConfigType::String,
                    synonym: None,
                    read_only: false,
                });
            }
        }
        out
    }

    /// Replaces or edits a topic's configs (blocking). `ops` are (name, op, value): op 0 set,
    /// 1 delete (back to the default), 2 append to a list, 3 subtract from a list. With
    /// `replace` every config not named goes back to its default (AlterConfigs).
    pub fn alter_configs(
        &self,
        name: &str,
        ops: &[(String, u8, Option<String>)],
        replace: bool,
        validate_only: bool,
    ) -> Result<()> {
        let Some(t) = self.store.topic(name) else {
            return Err(Error::UnknownTopic(format!(
                "This server does not host topic '{name}'."
            )));
        };
        let mut configs = if replace {
            BTreeMap::new()
        } else {
            t.meta.configs.clone()
        };
        for (key, op, value) in ops {
            if config_def(key).is_none() && !LEGACY_TOPIC_CONFIGS.contains(&key.as_str()) {
                return Err(Error::InvalidConfig(format!(
                    "Unknown topic config name: {key}"
                )));
            }
            match op {
                0 => {
                    let v = value.clone().ok_or_else(|| {
                        Error::InvalidRequest(format!("Null value not supported for {key}"))
                    })?;
                    validate_config(key, &v)?;
                    configs.insert(key.clone(), v);
                }
                1 => {
                    configs.remove(key);
                }
                2 | 3 => {
                    let d = config_def(key);
                    if d.map(|d| d.ty) != Some(ConfigType::List) {
                        return Err(Error::InvalidConfig(format!(
                            "Config {key} is not a list; APPEND and SUBTRACT apply to lists only"
                        )));
                    }
                    let current = configs
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| d.map(|d| d.default.to_string()).unwrap_or_default());
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for v in value.as_deref().unwrap_or("").split(',').map(str::trim) {
                        if v.is_empty() {
                            continue;
                        }
                        if *op == 2 && !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        } else if *op == 3 {
                            items.retain(|i| i != v);
                        }
                    }
                    let joined = items.join(",");
                    validate_config(key, &joined)?;
                    configs.insert(key.clone(), joined);
                }
                other => {
                    return Err(Error::InvalidRequest(format!(
                        "Unknown config operation {other}"
                    )))
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        self.store.set_topic_configs(name, configs)?;
        Ok(())
    }
}

impl Topics {
    /// The first record in the batch at `base` (or later) that satisfies `want`, at or after
    /// the log start.
    fn find_record(
        &self,
        part: &Partition,
        base: i64,
        want: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>> {
        let log_start = self.store.offsets(part).log_start;
        let mut buf = bytes::BytesMut::new();
        if self
            .store
            .read(part, base.max(log_start), 1, true, &mut buf)?
            .is_none()
        {
            return Ok(None);
        }
        for b in batch::split_batches(&buf) {
            let (_, bytes) = b.map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))?;
            let (_, records) = batch::decode_batch(bytes, self.config.max_inflated_batch_bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))?;
            for r in records {
                if r.offset >= log_start && want(r.timestamp) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets by time: the earliest offset whose record timestamp is at or after
    /// `timestamp`, with that record's timestamp, exact to the record.
    pub fn offset_for_timestamp(
        &self,
        part: &Partition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut from = self.store.offsets(part).log_start;
        // The first batch whose max timestamp reaches the target holds the answer, unless the
        // log start cut it: then look further.
        loop {
            let Some((base, _)) = self
                .store
                .offset_for_timestamp_from(part, timestamp, from)?
            else {
                return Ok(None);
            };
            if let Some(found) = self.find_record(part, base, |ts| ts >= timestamp)? {
                return Ok(Some(found));
            }
            let end = self.store.offsets(part).log_end;
            let next = self.store.batch_end(part, base)?;
            if next <= from || next >= end {
                return Ok(None);
            }
            from = next;
        }
    }

    /// ListOffsets -3: the offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(&self, part: &Partition) -> Result<Option<(i64, i64)>> {
        let Some((base, max)) = self.store.max_timestamp(part)? else {
            return Ok(None);
        };
        self.find_record(part, base, |ts| ts == max)
    }

    /// DeleteRecords: moves the log start of `part` to `offset` (-1: the high watermark).
    /// Returns the new low watermark.
    pub fn delete_records(&self, part: &Partition, offset: i64) -> Result<i64> {
        let o = self.store.offsets(part);
        let target = if offset == -1 { o.log_end } else { offset };
        if target < 0 || target > o.log_end {
            return Err(Error::OffsetOutOfRange(format!(
                "Cannot delete records of {}-{} before offset {offset}: the log ends at {}.",
                part.topic, part.index, o.log_end
            )));
        }
        Ok(self.store.delete_records_before(part, target)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("customer-events").is_ok());
        assert!(validate_topic_name("customer-events.dlq").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }

    #[test]
    fn configs_are_checked_by_type() {
        assert!(validate_config("retention.ms", "1000").is_ok());
        assert!(validate_config("retention.ms", "soon").is_err());
        assert!(validate_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_config("cleanup.policy", "shred").is_err());
        assert!(validate_config("segment.jitter.ms", "0").is_ok());
        assert!(validate_config("no.such.config", "1").is_err());
        assert!(validate_config("message.timestamp.type", "LogAppendTime").is_ok());
    }
}
