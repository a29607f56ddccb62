//! Broker configs (DescribeConfigs, AlterConfigs and IncrementalAlterConfigs on resource
//! BROKER): kafkabox's settings under Kafka's names, the few it applies at runtime
//! ([`DYNAMIC_BROKER_CONFIGS`], for broker 0 or as the cluster-wide default, kept in the data
//! dir), and a broker key's effective value, which is the default of its topic config.
//!
//! Every other broker config name Kafka knows (`kafka_broker_configs.tsv`) is accepted as
//! Kafka accepts it: one Kafka may change at runtime is checked against its type and stored
//! (DescribeConfigs reports it; kafkabox does nothing with it), one Kafka changes only with a
//! restart is refused with Kafka's INVALID_REQUEST. A name Kafka does not know is stored, as
//! Kafka stores custom configs, and described as sensitive (its value hidden).

use std::collections::BTreeMap;

use kafkabox_storage::StoreError;

use super::configs::{validate_config, ConfigSource, ConfigType, ConfigValue};
use super::Topics;
use crate::config::Config;
use crate::services::error::{Error, Result};

use ConfigType as T;

/// Broker configs that can change at runtime (resource BROKER, name "0" or "" for the
/// cluster-wide default), each with the topic config it supplies the default of.
pub const DYNAMIC_BROKER_CONFIGS: &[(&str, &str)] = &[
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.roll.ms", "segment.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("message.max.bytes", "max.message.bytes"),
];

/// kafkabox's own settings that Kafka changes at runtime but kafkabox reads at start-up only:
/// refused, rather than stored and ignored.
const START_UP_ONLY: &[&str] = &[
    "listeners",
    "log.flush.interval.ms",
    "max.connections",
    "producer.id.expiration.ms",
];

/// How Kafka lets a broker config change (its DynamicBrokerConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// For one broker only (resource name "0").
    PerBroker,
    /// For one broker or as the cluster-wide default (resource name "").
    ClusterWide,
    /// Only in the broker's config file, with a restart.
    ReadOnly,
}

/// A broker config Kafka defines.
#[derive(Debug, Clone)]
pub struct KafkaBrokerConfig {
    pub name: &'static str,
    pub ty: ConfigType,
    pub mode: UpdateMode,
    pub default: Option<&'static str>,
}

/// Kafka's broker config names, types, update modes and defaults (3.7 to 4.2).
pub fn kafka_broker_configs() -> &'static [KafkaBrokerConfig] {
    static CATALOG: std::sync::LazyLock<Vec<KafkaBrokerConfig>> = std::sync::LazyLock::new(|| {
        include_str!("kafka_broker_configs.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut f = l.splitn(4, '\t');
                let (name, ty, mode, default) = (f.next()?, f.next()?, f.next()?, f.next()?);
                let ty = match ty {
                    "boolean" => T::Boolean,
                    "string" => T::String,
                    "int" => T::Int,
                    "short" => T::Short,
                    "long" => T::Long,
                    "double" => T::Double,
                    "list" => T::List,
                    "class" => T::Class,
                    "password" => T::Password,
                    _ => return None,
                };
                let mode = match mode {
                    "per-broker" => UpdateMode::PerBroker,
                    "cluster-wide" => UpdateMode::ClusterWide,
                    "read-only" => UpdateMode::ReadOnly,
                    _ => return None,
                };
                Some(KafkaBrokerConfig {
                    name,
                    ty,
                    mode,
                    default: (default != "-").then_some(default),
                })
            })
            .collect()
    });
    &CATALOG
}

fn kafka_broker_config(name: &str) -> Option<&'static KafkaBrokerConfig> {
    kafka_broker_configs().iter().find(|c| c.name == name)
}

/// Checks a value against a Kafka broker config's type, as Kafka's ConfigDef does.
fn check_type(key: &str, ty: ConfigType, value: &str) -> Result<()> {
    let v = value.trim();
    let ok = match ty {
        T::Boolean => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
        T::Int => v.parse::<i32>().is_ok(),
        T::Short => v.parse::<i16>().is_ok(),
        T::Long => v.parse::<i64>().is_ok(),
        T::Double => v.parse::<f64>().is_ok(),
        T::String | T::List | T::Class | T::Password => true,
    };
    if ok {
        return Ok(());
    }
    let expected = match ty {
        T::Boolean => "Expected value to be either true or false",
        T::Int => "Not a number of type INT",
        T::Short => "Not a number of type SHORT",
        T::Long => "Not a number of type LONG",
        _ => "Not a number of type DOUBLE",
    };
    Err(Error::InvalidConfig(format!(
        "Invalid value {value} for configuration {key}: {expected}"
    )))
}

/// What AlterConfigs may do with a broker config name.
enum Kind {
    /// kafkabox applies it at once: the broker default of this topic config.
    Applied(&'static str),
    /// Kafka's name for a setting kafkabox reads at start-up only.
    StartUp,
    /// A name Kafka defines: stored when Kafka may change it at runtime.
    Kafka(&'static KafkaBrokerConfig),
    /// A name Kafka does not define (a custom config): stored.
    Custom,
}

fn kind(key: &str) -> Kind {
    if let Some((_, topic_key)) = DYNAMIC_BROKER_CONFIGS.iter().find(|(k, _)| *k == key) {
        return Kind::Applied(topic_key);
    }
    if START_UP_ONLY.contains(&key) {
        return Kind::StartUp;
    }
    match kafka_broker_config(key) {
        Some(c) => Kind::Kafka(c),
        None => Kind::Custom,
    }
}

/// Whether AlterConfigs may change `key` on the broker resource.
fn changeable(key: &str) -> bool {
    match kind(key) {
        Kind::Applied(_) | Kind::Custom => true,
        Kind::StartUp => false,
        Kind::Kafka(c) => c.mode != UpdateMode::ReadOnly,
    }
}

/// Broker configs set at runtime: for broker 0, and as the cluster-wide default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DynamicConfigs {
    pub broker: BTreeMap<String, String>,
    pub default: BTreeMap<String, String>,
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
            "group.initial.rebalance.delay.ms",
            T::Int,
            config.group_initial_rebalance_delay_ms.to_string(),
            config.group_initial_rebalance_delay_ms != d.group_initial_rebalance_delay_ms,
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
            "transaction.max.timeout.ms",
            T::Int,
            config.transaction_max_timeout_ms.to_string(),
            config.transaction_max_timeout_ms != d.transaction_max_timeout_ms,
        ),
        (
            "transactional.id.expiration.ms",
            T::Int,
            config.transactional_id_expiration_ms.to_string(),
            config.transactional_id_expiration_ms != d.transactional_id_expiration_ms,
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            T::Int,
            config.transaction_abort_interval.as_millis().to_string(),
            config.transaction_abort_interval != d.transaction_abort_interval,
        ),
        (
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            T::Int,
            config.transaction_remove_interval.as_millis().to_string(),
            config.transaction_remove_interval != d.transaction_remove_interval,
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
                value: Some(value.clone()),
                source,
                ty,
                synonym: None,
                read_only: !changeable(name),
                sensitive: false,
            }
        })
        .collect()
}

impl Topics {
    /// A broker key's effective value and its source: set for broker 0, set as the cluster
    /// default, kafkabox's settings, or Kafka's default (None).
    pub(super) fn broker_value(
        &self,
        dynamic: &DynamicConfigs,
        key: &str,
    ) -> Option<(String, ConfigSource)> {
        if let Some(v) = dynamic.broker.get(key) {
            return Some((v.clone(), ConfigSource::DynamicBroker));
        }
        if let Some(v) = dynamic.default.get(key) {
            return Some((v.clone(), ConfigSource::DynamicDefault));
        }
        static_broker_value(&self.config, key).map(|v| (v, ConfigSource::Broker))
    }

    /// The broker's configs with their effective values (DescribeConfigs, resource BROKER):
    /// kafkabox's settings, every other config Kafka defines (its default unless set at
    /// runtime), and the custom names set at runtime (sensitive: Kafka hides their values).
    pub fn broker_configs(&self) -> Vec<ConfigValue> {
        let dynamic = self.dynamic();
        let mut out = static_broker_configs(&self.config);
        let mut named: std::collections::HashSet<String> =
            out.iter().map(|c| c.name.clone()).collect();
        for k in kafka_broker_configs() {
            if named.insert(k.name.to_string()) {
                out.push(ConfigValue {
                    name: k.name.to_string(),
                    value: k.default.map(str::to_string),
                    source: ConfigSource::Default,
                    ty: k.ty,
                    synonym: None,
                    read_only: !changeable(k.name),
                    sensitive: k.ty == T::Password,
                });
            }
        }
        for c in &mut out {
            if let Some((v, src)) = self.broker_value(&dynamic, &c.name) {
                if matches!(
                    src,
                    ConfigSource::DynamicBroker | ConfigSource::DynamicDefault
                ) {
                    c.value = Some(v);
                    c.source = src;
                }
            }
        }
        let custom: std::collections::BTreeSet<&String> = dynamic
            .broker
            .keys()
            .chain(dynamic.default.keys())
            .filter(|k| !named.contains(*k))
            .collect();
        for k in custom {
            let source = if dynamic.broker.contains_key(k) {
                ConfigSource::DynamicBroker
            } else {
                ConfigSource::DynamicDefault
            };
            out.push(ConfigValue {
                name: k.clone(),
                value: None,
                source,
                ty: T::String,
                synonym: None,
                read_only: false,
                sensitive: true,
            });
        }
        out
    }

    /// AlterConfigs / IncrementalAlterConfigs on resource BROKER: `name` "0" (this broker) or
    /// "" (the cluster-wide default). [`DYNAMIC_BROKER_CONFIGS`] take effect at once; the other
    /// names Kafka changes at runtime, and custom names, are stored; names Kafka changes only
    /// with a restart are refused as Kafka refuses them. Kept in the data dir.
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
            let kind = kind(key);
            let refuse = |why: &str| {
                Err(Error::InvalidRequest(format!(
                    "Cannot update these configs dynamically: Set({key}){why}"
                )))
            };
            match (&kind, op) {
                // Deleting what was never set is harmless; Kafka does not refuse it.
                (_, 1) => {
                    map.remove(key);
                    continue;
                }
                (Kind::StartUp, _) => {
                    return refuse(
                        ". kafkabox sets it at start-up (config file, KAFKABOX_* variables, --set).",
                    )
                }
                (Kind::Kafka(c), _) if c.mode == UpdateMode::ReadOnly => {
                    return refuse(if static_broker_value(&self.config, key).is_some()
                        || static_broker_configs(&self.config)
                            .iter()
                            .any(|c| &c.name == key)
                    {
                        ". kafkabox sets it at start-up (config file, KAFKABOX_* variables, --set)."
                    } else {
                        ""
                    })
                }
                (Kind::Kafka(c), _) if c.mode == UpdateMode::PerBroker && name.is_empty() => {
                    return Err(Error::InvalidRequest(format!(
                        "Cannot update these configs at default cluster level, broker id must be specified: Set({key})"
                    )))
                }
                _ => {}
            }
            let ty = match &kind {
                Kind::Kafka(c) => Some(c.ty),
                Kind::Applied(topic_key) => super::config_def(topic_key).map(|d| d.ty),
                _ => None,
            };
            let v = match op {
                0 => value.clone().ok_or_else(|| {
                    Error::InvalidRequest(format!("Null value not supported for {key}"))
                })?,
                2 | 3 => {
                    if ty != Some(T::List) {
                        return Err(Error::InvalidConfig(format!(
                            "Config value append or subtract is not allowed for config key {key} since it is not a list"
                        )));
                    }
                    let current = map
                        .get(key)
                        .cloned()
                        .or_else(|| {
                            kafka_broker_config(key).and_then(|c| c.default.map(str::to_string))
                        })
                        .unwrap_or_default();
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|i| i.trim().to_string())
                        .filter(|i| !i.is_empty())
                        .collect();
                    let given = value.clone().unwrap_or_default();
                    for item in given.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        if *op == 2 && !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        } else if *op == 3 {
                            items.retain(|i| i != item);
                        }
                    }
                    items.join(",")
                }
                other => {
                    return Err(Error::InvalidRequest(format!(
                        "Config operation {other} is not supported on broker config {key}"
                    )))
                }
            };
            match &kind {
                Kind::Applied(topic_key) => validate_config(topic_key, &v)
                    .map_err(|e| Error::InvalidConfig(e.to_string().replace(topic_key, key)))?,
                Kind::Kafka(c) => check_type(key, c.ty, &v)?,
                _ => {}
            }
            map.insert(key.clone(), v);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_kafkas_catalog_is_read() {
        let lines = include_str!("kafka_broker_configs.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(kafka_broker_configs().len(), lines);
        let relogin = kafka_broker_config("sasl.kerberos.min.time.before.relogin").unwrap();
        assert_eq!(relogin.mode, UpdateMode::PerBroker);
        assert_eq!(relogin.ty, T::Long);
        assert_eq!(relogin.default, Some("60000"));
        assert_eq!(kafka_broker_config("log.dirs").unwrap().default, None);
    }

    #[test]
    fn values_are_checked_against_kafkas_types() {
        assert!(check_type("k", T::Int, "16").is_ok());
        assert!(check_type("k", T::Int, "3000000000").is_err());
        assert!(check_type("k", T::Boolean, "TRUE").is_ok());
        assert!(check_type("k", T::Boolean, "yes").is_err());
        assert!(check_type("k", T::Double, "0.5").is_ok());
        assert!(check_type("k", T::List, "a,b").is_ok());
    }
}
