//! Broker configs (DescribeConfigs, AlterConfigs and IncrementalAlterConfigs on resource
//! BROKER): kafkabox's settings under Kafka's names, the few that change at runtime
//! ([`DYNAMIC_BROKER_CONFIGS`], for broker 0 or as the cluster-wide default, kept in the data
//! dir), and a broker key's effective value, which is the default of its topic config.

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
    ("message.max.bytes", "max.message.bytes"),
];

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
}
