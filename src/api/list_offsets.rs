//! ListOffsets (v1-10): earliest (-2), latest (-1), max timestamp (-3), earliest local (-4),
//! latest tiered (-5, no tiered storage: -1), and by timestamp. Lookups by time are exact to
//! the record, as Kafka's: the earliest offset whose record timestamp reaches the target, and
//! for -3 the record with the largest timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::Session;
use super::{blocking, errors, LEADER_EPOCH};
use crate::api::{Call, KafkaApi, Pending};
use crate::services::Services;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

/// ListOffsets, declared for the API table.
pub struct ListOffsets;

impl KafkaApi for ListOffsets {
    const NAME: &'static str = "ListOffsets";
    type Request = ListOffsetsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 10;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &ListOffsetsRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: ListOffsetsRequest) -> Pending {
        handle(session, call, req)
    }
}

const LIST_OFFSETS_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition_index
    f(Ty::I32, 4, ALL), // current_leader_epoch
    f(Ty::I64, 0, ALL), // timestamp
];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                           // name
    f(Ty::Array(LIST_OFFSETS_PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::I32, 0, ALL),                       // replica_id
        f(Ty::I8, 2, ALL),                        // isolation_level
        f(Ty::Array(LIST_OFFSETS_TOPIC), 0, ALL), // topics
        f(Ty::I32, 10, ALL),                      // timeout_ms
    ],
    6,
);

fn handle(session: &mut Session, call: Call, req: ListOffsetsRequest) -> Pending {
    let services = session.services.clone();
    let access = super::Access::of(session);
    blocking(call, "ListOffsets", move || {
        let topics = answer(&services, call, &req, &access);
        ListOffsetsResponse::default().with_topics(topics)
    })
}

/// Looks every partition up (blocking: lookups by time read and decode batches).
fn answer(
    services: &Services,
    call: Call,
    req: &ListOffsetsRequest,
    access: &super::Access,
) -> Vec<ListOffsetsTopicResponse> {
    let service = &services.topics;
    let committed = call.version >= 2 && req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for lt in &req.topics {
        let name = lt.name.0.as_str();
        let topic = service.get(name);
        let may = access.allowed(super::Operation::Describe, super::ResourceType::Topic, name);
        let mut parts = Vec::with_capacity(lt.partitions.len());
        for lp in &lt.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if call.version >= 4 {
                r.leader_epoch = LEADER_EPOCH;
            }
            if !may {
                r.error_code = ResponseError::TopicAuthorizationFailed.code();
                parts.push(r);
                continue;
            }
            let part = topic.as_ref().and_then(|t| t.partition(lp.partition_index));
            let Some(part) = part else {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
                parts.push(r);
                continue;
            };
            // A damaged partition has no trustworthy end: say so rather than a wrong offset.
            if let Some((from, what)) = service.damage(part) {
                tracing::debug!(topic = name, partition = lp.partition_index, from, reason = %what, "ListOffsets on a damaged partition");
                r.error_code = ResponseError::KafkaStorageError.code();
                parts.push(r);
                continue;
            }
            let offsets = service.offsets(part);
            // read_committed sees up to the last stable offset (Kafka's lastFetchableOffset).
            let fetchable = if committed {
                service
                    .last_stable_offset(part)
                    .unwrap_or(offsets.log_end)
                    .min(offsets.log_end)
            } else {
                offsets.log_end
            };
            let found = match lp.timestamp {
                -1 => Ok(Some((fetchable, -1))),
                -2 | -4 => Ok(Some((offsets.log_start, -1))),
                -3 => service.max_timestamp(part),
                -5 => Ok(None),
                ts if ts >= 0 => service.offset_for_timestamp(part, ts),
                other => {
                    tracing::info!(
                        timestamp = other,
                        "ListOffsets with an unknown special timestamp"
                    );
                    r.error_code = ResponseError::InvalidRequest.code();
                    parts.push(r);
                    continue;
                }
            };
            match found {
                // A time found at or past what this reader may fetch is "not found".
                Ok(Some((offset, _)))
                    if committed
                        && (lp.timestamp >= 0 || lp.timestamp == -3)
                        && offset >= fetchable => {}
                Ok(Some((offset, ts))) => {
                    r.offset = offset;
                    r.timestamp = ts;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = name, error = %e, "ListOffsets read failed");
                    r.error_code = errors::code(&e).code();
                }
            }
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(lt.name.clone())
                .with_partitions(parts),
        );
    }
    topics
}

super::partition_error_codes!(kafka_protocol::messages::ListOffsetsResponse);

/// An injected error for every partition of the request.
fn error_answer(call: Call, req: &ListOffsetsRequest, code: i16) -> crate::api::Reply {
    let mut resp = ListOffsetsResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                                .with_timestamp(-1)
                                .with_offset(-1)
                                .with_leader_epoch(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    call.respond(&resp)
}
