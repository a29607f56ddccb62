//! CreatePartitions (v0-3): grows a topic; Kafka never shrinks one.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{blocking, errors, str_bytes, Call, KafkaApi, Pending, NODE_ID};
use crate::services::Error;

/// CreatePartitions, declared for the API table.
pub struct CreatePartitions;

impl KafkaApi for CreatePartitions {
    const NAME: &'static str = "CreatePartitions";
    type Request = CreatePartitionsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 3;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: CreatePartitionsRequest) -> Pending {
        let topics = session.services.topics.clone();
        let access = super::Access::of(session);
        blocking(call, "CreatePartitions", move || {
            let r = {
                req.topics
                    .iter()
                    .map(|t| {
                        let bad_assignment = t.assignments.iter().flatten().any(|a| {
                            a.broker_ids.iter().any(|b| b.0 != NODE_ID)
                        });
                        let outcome = if !access.allowed(
                            super::Operation::Alter,
                            super::ResourceType::Topic,
                            t.name.0.as_str(),
                        ) {
                            Err(Error::TopicAuthorization("Authorization failed.".into()))
                        } else if bad_assignment {
                            Err(Error::InvalidReplicaAssignment(
                                "Replica assignments may only name broker 0.".into(),
                            ))
                        } else {
                            topics.create_partitions(t.name.0.as_str(), t.count, req.validate_only)
                        };
                        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                        if let Err(e) = outcome {
                            tracing::info!(topic = %t.name.0.as_str(), error = %e, "CreatePartitions refused");
                            r.error_code = errors::code(&e).code();
                            r.error_message = Some(str_bytes(&e.to_string()));
                        }
                        r
                    })
                    .collect::<Vec<_>>()
            };
            CreatePartitionsResponse::default().with_results(r)
        })
    }
}

const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[
    f(Ty::ArrayFixed(4), 0, ALL), // broker_ids
];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                                 // name
    f(Ty::I32, 0, ALL),                                 // count
    f(Ty::Array(CREATE_PARTITIONS_ASSIGNMENT), 0, ALL), // assignments
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(CREATE_PARTITIONS_TOPIC), 0, ALL), // topics
        f(Ty::I32, 0, ALL),                            // timeout_ms
        f(Ty::I8, 0, ALL),                             // validate_only
    ],
    2,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::CreatePartitionsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.results.iter().map(|r| r.error_code))
    }
}
