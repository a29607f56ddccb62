//! Metadata: one broker (node 0, also the controller), every partition led by it, a cluster id
//! stable for the data dir, and topic auto-creation when both the broker setting
//! (`auto.create.topics.enable`) and the request's `allow_auto_topic_creation` allow it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use kafkabox_storage::{Store, Topic};

use super::{create_topics, str_bytes, topic_name, topic_uuid, LEADER_EPOCH, NODE_ID};
use crate::broker::{respond, ConnCtx, Pending, Reply};

fn describe(topic: &Topic) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.meta.name)))
        .with_topic_id(topic_uuid(topic))
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(BrokerId(NODE_ID))
                        .with_leader_epoch(LEADER_EPOCH)
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect(),
        )
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(code.code())
}

/// Answers for the requested topics, creating missing ones when allowed (blocking).
fn resolve(
    store: &Store,
    req: &MetadataRequest,
    version: i16,
    auto_create: bool,
    partitions: u32,
) -> Vec<MetadataResponseTopic> {
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    if all {
        return store.topics().iter().map(|t| describe(t)).collect();
    }
    let allow_create = auto_create && req.allow_auto_topic_creation;
    let mut out = Vec::new();
    for rt in req.topics.iter().flatten() {
        let Some(name) = rt.name.as_ref().map(|n| n.0.as_str()) else {
            // Lookup by topic id (v10+).
            match store
                .topics()
                .into_iter()
                .find(|t| topic_uuid(t) == rt.topic_id)
            {
                Some(t) => out.push(describe(&t)),
                None => out.push(error_topic(
                    None,
                    rt.topic_id,
                    ResponseError::UnknownTopicId,
                )),
            }
            continue;
        };
        if let Some(t) = store.topic(name) {
            out.push(describe(&t));
            continue;
        }
        if let Err(msg) = super::validate_topic_name(name) {
            tracing::info!(topic = name, error = %msg, "Metadata for an invalid topic name");
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::InvalidTopicException,
            ));
            continue;
        }
        if !allow_create {
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ));
            continue;
        }
        match create_topics::create(store, name, partitions, BTreeMap::new()) {
            Ok(t) => out.push(describe(&t)),
            // Lost a race with another creator: it exists now.
            Err((ResponseError::TopicAlreadyExists, _)) => match store.topic(name) {
                Some(t) => out.push(describe(&t)),
                None => out.push(error_topic(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::LeaderNotAvailable,
                )),
            },
            Err((code, _)) => out.push(error_topic(Some(name), uuid::Uuid::nil(), code)),
        }
    }
    out
}

pub fn handle(
    ctx: &Arc<ConnCtx>,
    correlation_id: i32,
    version: i16,
    req: MetadataRequest,
) -> Pending {
    let store = ctx.broker.store.clone();
    let config = ctx.broker.config.clone();
    let (host, port) = ctx.advertised();
    Box::pin(async move {
        let cluster_id = store.cluster_id().to_string();
        let job = tokio::task::spawn_blocking(move || {
            resolve(
                &store,
                &req,
                version,
                config.auto_create_topics,
                config.num_partitions,
            )
        });
        let topics = match job.await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "metadata task failed");
                return Reply::Close;
            }
        };
        let resp = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(str_bytes(&host))
                .with_port(i32::from(port))])
            .with_cluster_id(Some(str_bytes(&cluster_id)))
            .with_controller_id(BrokerId(NODE_ID))
            .with_topics(topics);
        respond(correlation_id, version, &resp)
    })
}
