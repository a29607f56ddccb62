//! The topics service ([`Topics`]): creation (CreateTopics, auto-creation, the appliance's
//! own topics), deletion, new partitions, the dead-letter names clients may not take, and the
//! settings kafkabox acts on for a topic. Knows no wire types. Its files:
//!
//! - `mod.rs`: [`Topics`], [`NewTopic`] and topic CRUD.
//! - [`configs`]: the topic config catalog, the checks of values, [`TopicSettings`], a topic's
//!   configs described and altered.
//! - [`broker_configs`]: the broker's configs, the dynamic ones kept in the data dir.
//! - `partitions.rs`: a partition's offsets, damage and size, lookups by time, DeleteRecords.
//!
//! Kafka's topic name rule lives in the protocol crate (`kafkabox_protocol::names`).

pub mod broker_configs;
pub mod configs;
mod partitions;

use std::collections::BTreeMap;
use std::sync::Arc;

use kafkabox_storage::{Store, StoreError, Topic};

use super::error::{Error, Result};
use crate::config::Config;
pub use broker_configs::{DynamicConfigs, DYNAMIC_BROKER_CONFIGS};
pub use configs::{
    config_def, validate_config, ConfigSource, ConfigType, ConfigValue, TopicConfigDef,
    TopicSettings, RETENTION_WAITS_FOR_HANDLERS, TOPIC_CONFIGS,
};
pub use kafkabox_protocol::names::validate_topic_name;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

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
    /// Topics the running stages write, with the stage and the topic it runs over: they
    /// cannot be deleted ([`Topics::set_stage_writes`]).
    stage_writes: Arc<std::sync::RwLock<StageWrites>>,
}

/// Topic written by a stage -> (the stage's name, the topic it runs over).
pub type StageWrites = BTreeMap<String, (String, String)>;

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
            stage_writes: Arc::default(),
        })
    }

    fn dynamic(&self) -> DynamicConfigs {
        self.dynamic.read().map(|d| d.clone()).unwrap_or_default()
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
    /// The topics the running stages write (the pipeline says, whenever its topics change).
    pub fn set_stage_writes(&self, writes: StageWrites) {
        if let Ok(mut w) = self.stage_writes.write() {
            *w = writes;
        }
    }

    /// Deletes a topic, unless a running stage writes it (POLICY_VIOLATION, naming the stage,
    /// as Kafka refuses to delete its internal topics).
    pub fn delete(&self, name: &str) -> Result<()> {
        let writer = self
            .stage_writes
            .read()
            .ok()
            .and_then(|w| w.get(name).cloned())
            // Its topic deleted a moment ago: the stage is stopping there.
            .filter(|(_, source)| self.store.topic(source).is_some());
        if let Some((stage, source)) = writer {
            return Err(Error::PolicyViolation(format!(
                "Topic '{name}' holds the dead letters of '{source}', written by kafkabox's \
                 {stage} stage: it cannot be deleted while the stage runs (delete '{source}' \
                 first, or turn the stage off and restart)."
            )));
        }
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
}
