//! TxnOffsetCommit (v0-4): offsets a transaction commits for a consumer group, visible to
//! OffsetFetch only once the transaction commits (and dropped if it aborts). The committer is
//! checked as for OffsetCommit (generation, member, static instance) from v3 on.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::{errors, Call, KafkaApi, Pending, Session};
use crate::services::groups::{Committer, OffsetToCommit};
use crate::services::Error;

/// TxnOffsetCommit, declared for the API table.
pub struct TxnOffsetCommit;

impl KafkaApi for TxnOffsetCommit {
    const NAME: &'static str = "TxnOffsetCommit";
    type Request = TxnOffsetCommitRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &TxnOffsetCommitRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(call.respond(&answer(req, |_, _| code)))
    }

    fn handle(session: &mut Session, call: Call, req: TxnOffsetCommitRequest) -> Pending {
        handle(session, call, req)
    }
}

const PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition_index
    f(Ty::I64, 0, ALL), // committed_offset
    f(Ty::I32, 2, ALL), // committed_leader_epoch
    f(Ty::Str, 0, ALL), // committed_metadata
];
const TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),              // name
    f(Ty::Array(PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),          // transactional_id
        f(Ty::Str, 0, ALL),          // group_id
        f(Ty::I64, 0, ALL),          // producer_id
        f(Ty::I16, 0, ALL),          // producer_epoch
        f(Ty::I32, 3, ALL),          // generation_id
        f(Ty::Str, 3, ALL),          // member_id
        f(Ty::Str, 3, ALL),          // group_instance_id
        f(Ty::Array(TOPIC), 0, ALL), // topics
    ],
    3,
);

/// The response with `code(topic, partition)` for every partition of the request.
fn answer(
    req: &TxnOffsetCommitRequest,
    code: impl Fn(&str, i32) -> i16,
) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code(t.name.0.as_str(), p.partition_index))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn handle(session: &mut Session, call: Call, req: TxnOffsetCommitRequest) -> Pending {
    let id = req.transactional_id.0.as_str();
    let group = req.group_id.0.as_str();
    if !super::allowed(
        session,
        super::Operation::Write,
        super::ResourceType::TransactionalId,
        id,
    ) {
        let code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return call.ready(&answer(&req, |_, _| code));
    }
    if let Some(code) = super::group_refused(session, super::Operation::Read, group) {
        return call.ready(&answer(&req, |_, _| code));
    }
    let denied: Vec<String> = req
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|t| {
            !super::allowed(
                session,
                super::Operation::Read,
                super::ResourceType::Topic,
                t,
            )
        })
        .collect();
    let who = Committer {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
    };
    let offsets: Vec<OffsetToCommit> = req
        .topics
        .iter()
        .filter(|t| !denied.iter().any(|d| d == t.name.0.as_str()))
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
    let outcome = session.services.transactions.commit_offsets(
        id,
        req.producer_id.0,
        req.producer_epoch,
        group,
        &who,
        offsets,
    );
    match outcome {
        Ok(results) => call.ready(&answer(&req, |t, p| {
            if denied.iter().any(|d| d == t) {
                return ResponseError::TopicAuthorizationFailed.code();
            }
            match results.iter().find(|(rt, rp, _)| rt == t && *rp == p) {
                Some((_, _, Ok(()))) => 0,
                Some((_, _, Err(e))) => errors::code(e).code(),
                None => ResponseError::UnknownServerError.code(),
            }
        })),
        Err(e) => {
            tracing::info!(transactional_id = %id, group = %group, error = %e, "TxnOffsetCommit refused");
            let code = match &e {
                // KIP-890: v4 says "abort the transaction" with its own code.
                Error::InvalidTxnState(_) if call.version >= 4 => {
                    ResponseError::TransactionAbortable
                }
                _ => errors::txn_code(&e, call.version, i16::MAX),
            }
            .code();
            call.ready(&answer(&req, |_, _| code))
        }
    }
}

super::partition_error_codes!(kafka_protocol::messages::TxnOffsetCommitResponse);
