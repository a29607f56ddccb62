//! OffsetDelete (v0): forgets a group's offsets on partitions it does not subscribe to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL, NEVER};

use super::Session;
use super::{blocking, errors, Call, KafkaApi, Pending};

/// OffsetDelete, declared for the API table.
pub struct OffsetDelete;

impl KafkaApi for OffsetDelete {
    const NAME: &'static str = "OffsetDelete";
    type Request = OffsetDeleteRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 0;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: OffsetDeleteRequest) -> Pending {
        let groups = session.services.groups.clone();
        if !super::allowed(
            session,
            super::Operation::Delete,
            super::ResourceType::Group,
            req.group_id.0.as_str(),
        ) {
            return call.ready(
                &OffsetDeleteResponse::default().with_error_code(
                    kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                ),
            );
        }
        blocking(call, "OffsetDelete", move || {
            let resp = {
                let parts: Vec<(String, i32)> = req
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|p| (t.name.0.to_string(), p.partition_index))
                    })
                    .collect();
                let mut resp = OffsetDeleteResponse::default();
                match groups.delete_offsets(req.group_id.0.as_str(), parts) {
                    Ok(results) => {
                        resp.topics = req
                            .topics
                            .iter()
                            .map(|t| {
                                let name = t.name.0.as_str();
                                OffsetDeleteResponseTopic::default()
                                    .with_name(t.name.clone())
                                    .with_partitions(
                                        t.partitions
                                            .iter()
                                            .map(|p| {
                                                let code = results
                                                    .iter()
                                                    .find(|(tn, pi, _)| {
                                                        tn == name && *pi == p.partition_index
                                                    })
                                                    .map(|(_, _, r)| match r {
                                                        Ok(()) => 0,
                                                        Err(e) => errors::code(e).code(),
                                                    })
                                                    .unwrap_or(0);
                                                OffsetDeleteResponsePartition::default()
                                                    .with_partition_index(p.partition_index)
                                                    .with_error_code(code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect();
                    }
                    Err(e) => resp.error_code = errors::code(&e).code(),
                }
                resp
            };
            resp
        })
    }
}

const OFFSET_DELETE_REQUEST_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition_index
];
const OFFSET_DELETE_REQUEST_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                                    // name
    f(Ty::Array(OFFSET_DELETE_REQUEST_PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                                // group_id
        f(Ty::Array(OFFSET_DELETE_REQUEST_TOPIC), 0, ALL), // topics
    ],
    NEVER,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::OffsetDeleteResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(
                self.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.error_code),
            ),
        )
    }
}
