//! CreateTopics, and the topic creation that Metadata's auto-creation shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;
use kafkabox_storage::{Store, StoreError, Topic};

use super::{str_bytes, topic_name, topic_uuid, validate_topic_name};
use crate::broker::{respond, ConnCtx, Pending};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Topic-level settings kafkabox accepts at creation (stored with the topic).
const TOPIC_CONFIGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "max.message.bytes",
    "min.insync.replicas",
    "segment.bytes",
    "segment.ms",
    "compression.type",
    "message.timestamp.type",
];

/// A refused creation: Kafka's error and a message for the client.
pub type CreateError = (ResponseError, String);

/// Creates a topic (blocking: it flushes the catalog).
pub fn create(
    store: &Store,
    name: &str,
    partitions: u32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<Topic>, CreateError> {
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    store
        .create_topic(name, partitions, configs)
        .map_err(|e| match e {
            StoreError::TopicExists(_) => (
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ),
            other => {
                tracing::error!(topic = name, error = %other, "topic creation failed");
                (ResponseError::KafkaStorageError, other.to_string())
            }
        })
}

fn check_one(
    store: &Store,
    default_partitions: u32,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<(u32, BTreeMap<String, String>), CreateError> {
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    if store.topic(name).is_some() {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let partitions = match t.num_partitions {
        -1 if t.assignments.is_empty() => default_partitions,
        -1 => t.assignments.len() as u32,
        n if (1..=MAX_PARTITIONS).contains(&n) => n as u32,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS}, got {n}."),
            ))
        }
    };
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "Replication factor {} is larger than the number of brokers (1): kafkabox is a single broker.",
                t.replication_factor
            ),
        ));
    }
    if t.assignments
        .iter()
        .any(|a| a.broker_ids.iter().any(|b| b.0 != super::NODE_ID))
    {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "Replica assignments may only name broker 0.".into(),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.as_str();
        if !TOPIC_CONFIGS.contains(&key) {
            return Err((
                ResponseError::InvalidConfig,
                format!(
                    "Unknown or unsupported topic config '{key}'; supported: {}.",
                    TOPIC_CONFIGS.join(", ")
                ),
            ));
        }
        if let Some(v) = &c.value {
            configs.insert(key.to_string(), v.as_str().to_string());
        }
    }
    if let Some(v) = configs.get("retention.ms") {
        match v.parse::<i64>() {
            Ok(ms) if ms == -1 || ms > 0 => {}
            _ => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("retention.ms must be a positive number or -1, got '{v}'."),
                ))
            }
        }
    }
    Ok((partitions, configs))
}

pub fn handle(
    ctx: &Arc<ConnCtx>,
    correlation_id: i32,
    version: i16,
    req: CreateTopicsRequest,
) -> Pending {
    let store = ctx.broker.store.clone();
    let default_partitions = ctx.broker.config.num_partitions;
    Box::pin(async move {
        let job = tokio::task::spawn_blocking(move || {
            let mut results = Vec::with_capacity(req.topics.len());
            for t in &req.topics {
                let name = t.name.0.as_str();
                let mut r = CreatableTopicResult::default()
                    .with_name(topic_name(name))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                let outcome =
                    check_one(&store, default_partitions, t).and_then(|(partitions, configs)| {
                        if req.validate_only {
                            Ok((partitions, configs, None))
                        } else {
                            let topic = create(&store, name, partitions, configs.clone())?;
                            Ok((partitions, configs, Some(topic)))
                        }
                    });
                match outcome {
                    Ok((partitions, configs, topic)) => {
                        r.num_partitions = partitions as i32;
                        r.replication_factor = 1;
                        if let Some(topic) = topic {
                            r.topic_id = topic_uuid(&topic);
                        }
                        // Configs are in the response from v5; earlier versions refuse them.
                        r.configs = (version >= 5).then(|| {
                            configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(str_bytes(k))
                                        .with_value(Some(str_bytes(v)))
                                        .with_config_source(1)
                                })
                                .collect()
                        });
                    }
                    Err((code, message)) => {
                        tracing::info!(topic = name, error = %message, "CreateTopics refused");
                        r.error_code = code.code();
                        if version >= 1 {
                            r.error_message = Some(str_bytes(&message));
                        }
                    }
                }
                results.push(r);
            }
            results
        });
        let topics = match job.await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "CreateTopics task failed");
                return crate::broker::Reply::Close;
            }
        };
        respond(
            correlation_id,
            version,
            &CreateTopicsResponse::default().with_topics(topics),
        )
    })
}
