//! OffsetCommit (v2-9): a group's positions, stored atomically and answered once durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, Call, KafkaApi, Pending, Reply};
use crate::services::groups::{Committer, OffsetToCommit};

/// OffsetCommit, declared for the API table.
pub struct OffsetCommit;

impl KafkaApi for OffsetCommit {
    const NAME: &'static str = "OffsetCommit";
    type Request = OffsetCommitRequest;
    const MIN: i16 = 2;
    const MAX: i16 = 9;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &OffsetCommitRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: OffsetCommitRequest) -> Pending {
        handle(session, call, req)
    }
}

const OFFSET_COMMIT_REQUEST_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition_index
    f(Ty::I64, 0, ALL), // committed_offset
    f(Ty::I32, 6, ALL), // committed_leader_epoch
    f(Ty::Str, 0, ALL), // committed_metadata
];
const OFFSET_COMMIT_REQUEST_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                                    // name
    f(Ty::Array(OFFSET_COMMIT_REQUEST_PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                                // group_id
        f(Ty::I32, 0, ALL),                                // generation_id_or_member_epoch
        f(Ty::Str, 0, ALL),                                // member_id
        f(Ty::Str, 7, ALL),                                // group_instance_id
        f(Ty::I64, 0, 4),                                  // retention_time_ms
        f(Ty::Array(OFFSET_COMMIT_REQUEST_TOPIC), 0, ALL), // topics
    ],
    8,
);

fn handle(session: &mut Session, call: Call, req: OffsetCommitRequest) -> Pending {
    let services = session.services.clone();
    // A group without members (partitions assigned by the application) is known by the
    // client that commits for it.
    services.groups.note_committer(
        req.group_id.0.as_str(),
        &session.client_id,
        session.peer.ip(),
    );
    // READ on the group, and on each topic committed (when ACLs are enforced).
    let group_allowed = super::allowed(
        session,
        super::Operation::Read,
        super::ResourceType::Group,
        req.group_id.0.as_str(),
    );
    let denied: std::collections::HashSet<String> = req
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|t| {
            group_allowed
                && !super::allowed(
                    session,
                    super::Operation::Read,
                    super::ResourceType::Topic,
                    t,
                )
        })
        .map(str::to_string)
        .collect();
    Box::pin(async move {
        let group_id = req.group_id.0.to_string();
        let who = Committer {
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            generation: req.generation_id_or_member_epoch,
        };
        let offsets: Vec<OffsetToCommit> = req
            .topics
            .iter()
            .filter(|t| !denied.contains(t.name.0.as_str()))
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetToCommit {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect();
        let groups = services.groups.clone();
        let g = group_id.clone();
        let job = tokio::task::spawn_blocking(move || {
            if !group_allowed {
                return Err(crate::services::Error::GroupAuthorization(g));
            }
            groups.commit_offsets(&g, &who, offsets)
        });
        let outcome = match job.await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "OffsetCommit task failed");
                return Reply::Close;
            }
        };
        // Per partition: its own result, or the group-level error for all.
        let (results, group_error) = match outcome {
            Ok((results, seq)) => {
                let flushed = match seq {
                    Some(seq) => services.durable(seq).await.err(),
                    None => None,
                };
                (results, flushed.map(|e| errors::storage(&e)))
            }
            Err(e) => {
                tracing::debug!(group = %group_id, error = %e, "OffsetCommit refused");
                (Vec::new(), Some(errors::code(&e)))
            }
        };
        let topics =
            req.topics
                .iter()
                .map(|t| {
                    let name = t.name.0.as_str();
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let code: ResponseError = match group_error {
                                        Some(c) => c,
                                        None if denied.contains(name) => {
                                            ResponseError::TopicAuthorizationFailed
                                        }
                                        None => match results.iter().find(|(tn, pi, _)| {
                                            tn == name && *pi == p.partition_index
                                        }) {
                                            Some((_, _, Err(e))) => errors::code(e),
                                            _ => ResponseError::UnknownServerError,
                                        },
                                    };
                                    let ok = group_error.is_none()
                                        && results.iter().any(|(tn, pi, r)| {
                                            tn == name && *pi == p.partition_index && r.is_ok()
                                        });
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(if ok { 0 } else { code.code() })
                                })
                                .collect(),
                        )
                })
                .collect();
        call.respond(&OffsetCommitResponse::default().with_topics(topics))
    })
}

super::partition_error_codes!(kafka_protocol::messages::OffsetCommitResponse);

/// An injected error for every partition of the request.
fn error_answer(call: Call, req: &OffsetCommitRequest, code: i16) -> Reply {
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    call.respond(&resp)
}
