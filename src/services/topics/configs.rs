//! The topic config catalog: every topic config of Kafka 4.1 with its type, default and the
//! broker setting that supplies the default ([`TOPIC_CONFIGS`]), kafkabox's own
//! ([`RETENTION_WAITS_FOR_HANDLERS`]), the configs 4.0 removed that are still accepted, the
//! checks of a value ([`validate_config`]), the settings kafkabox acts on ([`TopicSettings`]),
//! and a topic's configs described and altered (DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs on resource TOPIC). Kafka's numbering of types and sources is the
//! API layer's (`api::describe_configs`).

use std::collections::BTreeMap;

use kafkabox_storage::Topic;

use super::Topics;
use crate::services::error::{Error, Result};

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
    /// None: no value (a null default, or hidden because it is sensitive).
    pub value: Option<String>,
    pub source: ConfigSource,
    pub ty: ConfigType,
    /// The broker setting that supplies the default, with its value.
    pub synonym: Option<(&'static str, String, ConfigSource)>,
    /// Whether AlterConfigs may change it.
    pub read_only: bool,
    /// A password or a custom config: its value is never shown.
    pub sensitive: bool,
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
    pub(super) fn of(value: impl Fn(&str) -> Option<String>) -> TopicSettings {
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

impl Topics {
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
                value: Some(value),
                source,
                ty: d.ty,
                synonym: broker,
                read_only: false,
                sensitive: false,
            });
        }
        for (k, v) in &topic.meta.configs {
            if LEGACY_TOPIC_CONFIGS.contains(&k.as_str()) && wanted(k) {
                out.push(ConfigValue {
                    name: k.clone(),
                    value: Some(v.clone()),
                    source: ConfigSource::Topic,
                    ty: ConfigType::String,
                    synonym: None,
                    read_only: false,
                    sensitive: false,
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

#[cfg(test)]
mod tests {
    use super::*;

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
