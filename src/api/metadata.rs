//! Metadata: one broker (node 0, also the controller), every partition led by it, a cluster id
//! stable for the data dir, and topic auto-creation when both the broker setting
//! (`auto.create.topics.enable`) and the request's `allow_auto_topic_creation` allow it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use kafkabox_storage::Topic;

use super::{errors, str_bytes, topic_name, topic_uuid, LEADER_EPOCH, NODE_ID};
use crate::services::topics::{validate_topic_name, Topics};

/// KIP-430 authorized operations: kafkabox has no ACLs, so every client may do everything a
/// topic allows: READ(3) WRITE(4) CREATE(5) DELETE(6) ALTER(7) DESCRIBE(8) DESCRIBE_CONFIGS(10)
/// ALTER_CONFIGS(11), as bits.
pub const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// ... and everything on the cluster: CREATE(5) ALTER(7) DESCRIBE(8) CLUSTER_ACTION(9)
/// DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11) IDEMPOTENT_WRITE(12).
pub const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
use crate::api::{Call, KafkaApi, Pending, Reply};
use crate::listener::Session;
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

/// Answers for the requested topics, creating missing ones when allowed (blocking).
fn resolve(
    topics: &Topics,
    req: &MetadataRequest,
    version: i16,
    auto_create: bool,
) -> Vec<MetadataResponseTopic> {
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    if all {
        return topics.list().iter().map(|t| describe(t)).collect();
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
            out.push(describe(&t));
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
        if !allow_create {
            out.push(error_topic(
                Some(name),
                uuid::Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ));
            continue;
        }
        match topics.ensure(name) {
            Ok(t) => out.push(describe(&t)),
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
    let cluster_id = session.services.store.cluster_id().to_string();
    let (host, port) = session.advertised();
    Box::pin(async move {
        let include_cluster_ops = req.include_cluster_authorized_operations;
        let include_topic_ops = req.include_topic_authorized_operations;
        let job =
            tokio::task::spawn_blocking(move || resolve(&topics, &req, call.version, auto_create));
        let mut topics = match job.await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "metadata task failed");
                return Reply::Close;
            }
        };
        if include_topic_ops && call.version >= 8 {
            for t in &mut topics {
                t.topic_authorized_operations = TOPIC_OPERATIONS;
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
            resp.cluster_authorized_operations = CLUSTER_OPERATIONS;
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
