//! CreateTopics: a thin translation to `services::topics`.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::Session;
use super::{blocking, errors, str_bytes, topic_name, topic_uuid};
use crate::api::{Call, KafkaApi, Pending};
use crate::services::topics::{NewTopic, Topics};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

/// CreateTopics, declared for the API table.
pub struct CreateTopics;

impl KafkaApi for CreateTopics {
    const NAME: &'static str = "CreateTopics";
    type Request = CreateTopicsRequest;
    const MIN: i16 = 2;
    const MAX: i16 = 7;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &CreateTopicsRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: CreateTopicsRequest) -> Pending {
        handle(session, call, req)
    }
}

const CREATABLE_REPLICA_ASSIGNMENT: &[Field] = &[
    f(Ty::I32, 0, ALL),           // partition_index
    f(Ty::ArrayFixed(4), 0, ALL), // broker_ids
];
const CREATABLE_TOPIC_CONFIG: &[Field] = &[
    f(Ty::Str, 0, ALL), // name
    f(Ty::Str, 0, ALL), // value
];
const CREATABLE_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                                 // name
    f(Ty::I32, 0, ALL),                                 // num_partitions
    f(Ty::I16, 0, ALL),                                 // replication_factor
    f(Ty::Array(CREATABLE_REPLICA_ASSIGNMENT), 0, ALL), // assignments
    f(Ty::Array(CREATABLE_TOPIC_CONFIG), 0, ALL),       // configs
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(CREATABLE_TOPIC), 0, ALL), // topics
        f(Ty::I32, 0, ALL),                    // timeout_ms
        f(Ty::I8, 0, ALL),                     // validate_only
    ],
    5,
);

fn new_topic(t: &kafka_protocol::messages::create_topics_request::CreatableTopic) -> NewTopic {
    NewTopic {
        name: t.name.0.to_string(),
        partitions: t.num_partitions,
        replication_factor: t.replication_factor,
        assignments: t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect(),
        configs: t
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect(),
    }
}

fn create_all(
    topics: &Topics,
    req: &CreateTopicsRequest,
    version: i16,
    access: &super::Access,
) -> Vec<CreatableTopicResult> {
    let mut results = Vec::with_capacity(req.topics.len());
    // CREATE on the cluster, or on each topic (when ACLs are enforced).
    let cluster = access.may(
        super::Operation::Create,
        super::ResourceType::Cluster,
        crate::services::acl::CLUSTER_NAME,
    );
    for t in &req.topics {
        let name = t.name.0.as_str();
        let mut r = CreatableTopicResult::default()
            .with_name(topic_name(name))
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if !cluster && !access.allowed(super::Operation::Create, super::ResourceType::Topic, name) {
            r.error_code = kafka_protocol::ResponseError::TopicAuthorizationFailed.code();
            r.error_message = Some(str_bytes("Authorization failed."));
            results.push(r);
            continue;
        }
        let nt = new_topic(t);
        let outcome = topics.check_new(&nt).and_then(|(partitions, configs)| {
            if req.validate_only {
                Ok((partitions, None))
            } else {
                let topic = topics.create(name, partitions, configs)?;
                Ok((partitions, Some(topic)))
            }
        });
        match outcome {
            Ok((partitions, topic)) => {
                r.num_partitions = partitions as i32;
                r.replication_factor = 1;
                if let Some(topic) = &topic {
                    r.topic_id = topic_uuid(topic);
                }
                // Configs are in the response from v5 (all of them, as Kafka reports them).
                if version >= 5 {
                    let described = match &topic {
                        Some(t) => topics.describe_configs(t, None),
                        None => Vec::new(),
                    };
                    r.configs = Some(
                        described
                            .iter()
                            .map(|c| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(&c.name))
                                    .with_value(c.value.as_deref().map(str_bytes))
                                    .with_read_only(false)
                                    .with_config_source(
                                        super::describe_configs::config_source_code(c.source),
                                    )
                                    .with_is_sensitive(false)
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                tracing::info!(topic = name, error = %e, "CreateTopics refused");
                r.error_code = errors::code(&e).code();
                if version >= 1 {
                    r.error_message = Some(str_bytes(&e.to_string()));
                }
            }
        }
        results.push(r);
    }
    results
}

fn handle(session: &mut Session, call: Call, req: CreateTopicsRequest) -> Pending {
    let topics = session.services.topics.clone();
    let access = super::Access::of(session);
    blocking(call, "CreateTopics", move || {
        let results = create_all(&topics, &req, call.version, &access);
        CreateTopicsResponse::default().with_topics(results)
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::CreateTopicsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.topics.iter().map(|t| t.error_code))
    }
}

/// An injected error for every topic of the request.
fn error_answer(call: Call, req: &CreateTopicsRequest, code: i16) -> crate::api::Reply {
    let mut resp = CreateTopicsResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            kafka_protocol::messages::create_topics_response::CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        })
        .collect();
    call.respond(&resp)
}
