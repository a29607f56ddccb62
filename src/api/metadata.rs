//! Metadata: one broker (node 0, also the controller), every partition led by it, a cluster id
//! stable for the data dir, and topic auto-creation when both the broker setting
//! (`auto.create.topics.enable`) and the request's `allow_auto_topic_creation` allow it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use kafkabox_storage::Topic;

use super::{
    errors, str_bytes, topic_name, topic_uuid, Access, Operation, ResourceType, LEADER_EPOCH,
    NODE_ID,
};
use crate::services::topics::{validate_topic_name, Topics};

/// The operations a topic has (KIP-430 authorized operations are the allowed ones of these).
pub const TOPIC_OPERATIONS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
/// ... and the cluster.
pub const CLUSTER_OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];
use super::Session;
use crate::api::{Call, KafkaApi, Pending, Reply};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

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

/// Answers for the requested topics, creating missing ones when allowed (blocking). With ACLs
/// enforced, a listing shows only the topics the client may DESCRIBE, a named topic it may not
/// is TOPIC_AUTHORIZATION_FAILED, and auto-creation needs CREATE on the cluster or the topic.
fn resolve(
    topics: &Topics,
    req: &MetadataRequest,
    version: i16,
    auto_create: bool,
    access: &Access,
) -> Vec<MetadataResponseTopic> {
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let topic_t = ResourceType::Topic;
    if all {
        return topics
            .list()
            .iter()
            .filter(|t| access.may(Operation::Describe, topic_t, &t.meta.name))
            .map(|t| describe(t))
            .collect();
    }
    let allow_create = auto_create && req.allow_auto_topic_creation;
    let mut out = Vec::new();
    for rt in req.topics.iter().flatten() {
        let Some(name) = rt.name.as_ref().map(|n| n.0.as_str()) else {
            // Lookup by topic id (v10+).
            match topics
                .list()
                .into_iter()
                .find(|t| topic_uuid(t) == rt.topic_id)
            {
                Some(t) if !access.allowed(Operation::Describe, topic_t, &t.meta.name) => out.push(
                    error_topic(None, rt.topic_id, ResponseError::TopicAuthorizationFailed),
                ),
                Some(t) => out.push(describe(&t)),
                None => out.push(error_topic(
                    None,
                    rt.topic_id,
                    ResponseError::UnknownTopicId,
                )),
            }
            continue;
        };
        if let Some(t) = topics.get(name) {
            if access.allowed(Operation::Describe, topic_t, name) {
                out.push(describe(&t));
            } else {
                out.push(error_topic(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::TopicAuthorizationFailed,
                ));
            }
            continue;
        }
        if let Err(msg) = validate_topic_name(name) {
            tracing::info!(topic = name, error = %msg, "Metadata for an invalid topic name");
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::InvalidTopicException,
            ));
            continue;
        }
        let may_create = || {
            access.may(
                Operation::Create,
                ResourceType::Cluster,
                crate::services::acl::CLUSTER_NAME,
            ) || access.allowed(Operation::Create, topic_t, name)
        };
        if (allow_create && !may_create())
            || (!allow_create && !access.allowed(Operation::Describe, topic_t, name))
        {
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::TopicAuthorizationFailed,
            ));
            continue;
        }
        if !allow_create || topics.reserved(name).is_some() {
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ));
            continue;
        }
        match topics.auto_create(name) {
            Ok(Some(t)) => out.push(describe(&t)),
            Ok(None) => {
                tracing::debug!(
                    topic = name,
                    "auto-creation budget spent; the client asks again"
                );
                out.push(error_topic(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::LeaderNotAvailable,
                ))
            }
            Err(e) => out.push(error_topic(Some(name), uuid::Uuid::nil(), errors::code(&e))),
        }
    }
    out
}

/// Metadata, declared for the API table.
pub struct Metadata;

impl KafkaApi for Metadata {
    const NAME: &'static str = "Metadata";
    type Request = MetadataRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 13;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: MetadataRequest) -> Pending {
        handle(session, call, req)
    }
}

const METADATA_REQUEST_TOPIC: &[Field] = &[
    f(Ty::Uuid, 10, ALL), // topic_id
    f(Ty::Str, 0, ALL),   // name
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(METADATA_REQUEST_TOPIC), 0, ALL), // topics
        f(Ty::I8, 4, ALL),                            // allow_auto_topic_creation
        f(Ty::I8, 8, 10),                             // include_cluster_authorized_operations
        f(Ty::I8, 8, ALL),                            // include_topic_authorized_operations
    ],
    9,
);

fn handle(session: &mut Session, call: Call, req: MetadataRequest) -> Pending {
    let topics = session.services.topics.clone();
    let auto_create = session.services.config.auto_create_topics;
    let cluster_id = session.services.cluster_id().to_string();
    let (host, port) = session.advertised();
    let access = Access::of(session);
    Box::pin(async move {
        let include_cluster_ops = req.include_cluster_authorized_operations;
        let include_topic_ops = req.include_topic_authorized_operations;
        let acc = access.clone();
        let job = tokio::task::spawn_blocking(move || {
            resolve(&topics, &req, call.version, auto_create, &acc)
        });
        let mut topics = match job.await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "metadata task failed");
                return Reply::Close;
            }
        };
        if include_topic_ops && call.version >= 8 {
            for t in &mut topics {
                if let Some(name) = &t.name {
                    t.topic_authorized_operations =
                        access.operations(ResourceType::Topic, name.0.as_str(), TOPIC_OPERATIONS);
                }
            }
        }
        let mut resp = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(str_bytes(&host))
                .with_port(i32::from(port))])
            .with_cluster_id(Some(str_bytes(&cluster_id)))
            .with_controller_id(BrokerId(NODE_ID))
            .with_topics(topics);
        if include_cluster_ops && (8..=10).contains(&call.version) {
            resp.cluster_authorized_operations = access.operations(
                ResourceType::Cluster,
                crate::services::acl::CLUSTER_NAME,
                CLUSTER_OPERATIONS,
            );
        }
        call.respond(&resp)
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::MetadataResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(self.topics.iter().flat_map(|t| {
                std::iter::once(t.error_code).chain(t.partitions.iter().map(|p| p.error_code))
            })),
        )
    }
}
