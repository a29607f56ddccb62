//! AddPartitionsToTxn: partitions join the producer's transaction before its first batch to
//! each. Versions 0-3 are the client's form (one transaction; WRITE on the transactional id
//! and on each topic). Versions 4-5 are the batched form of KIP-890 that brokers send to the
//! coordinator (CLUSTER_ACTION on the cluster): several transactions, each adding its
//! partitions or, with `verify_only`, asking whether they are in its open transaction
//! (`TRANSACTION_ABORTABLE` for those that are not), as Kafka's coordinator answers it.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::{errors, Call, KafkaApi, Pending, Session};

/// AddPartitionsToTxn, declared for the API table.
pub struct AddPartitionsToTxn;

impl KafkaApi for AddPartitionsToTxn {
    const NAME: &'static str = "AddPartitionsToTxn";
    type Request = AddPartitionsToTxnRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 5;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &AddPartitionsToTxnRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        if call.version >= 4 {
            // The batched form carries a request-level error, as Kafka's error response.
            return Some(
                call.respond(&AddPartitionsToTxnResponse::default().with_error_code(code)),
            );
        }
        Some(call.respond(&answer(req, |_, _| code)))
    }

    fn handle(session: &mut Session, call: Call, req: AddPartitionsToTxnRequest) -> Pending {
        handle(session, call, req)
    }
}

const TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),           // name
    f(Ty::ArrayFixed(4), 0, ALL), // partitions
];
const TRANSACTION: &[Field] = &[
    f(Ty::Str, 0, ALL),          // transactional_id
    f(Ty::I64, 0, ALL),          // producer_id
    f(Ty::I16, 0, ALL),          // producer_epoch
    f(Ty::I8, 0, ALL),           // verify_only
    f(Ty::Array(TOPIC), 0, ALL), // topics
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(TRANSACTION), 4, ALL), // transactions
        f(Ty::Str, 0, 3),                  // v3_and_below_transactional_id
        f(Ty::I64, 0, 3),                  // v3_and_below_producer_id
        f(Ty::I16, 0, 3),                  // v3_and_below_producer_epoch
        f(Ty::Array(TOPIC), 0, 3),         // v3_and_below_topics
    ],
    3,
);

/// The results of `topics` with `code(topic, partition)` for every partition.
fn results(
    topics: &[AddPartitionsToTxnTopic],
    code: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code(t.name.0.as_str(), *p))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// The client's form of the response (v0-3) with `code(topic, partition)` for every
/// partition of the request.
fn answer(
    req: &AddPartitionsToTxnRequest,
    code: impl Fn(&str, i32) -> i16,
) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse::default()
        .with_results_by_topic_v3_and_below(results(&req.v3_and_below_topics, &code))
}

/// One transaction's partitions: each one's error code (`check_topics`: WRITE on each topic,
/// the client's form), added to the transaction, or with `verify_only` looked up in it.
#[allow(clippy::too_many_arguments)]
fn one_transaction(
    session: &Session,
    version: i16,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    check_topics: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    // Every partition checked first; if one fails, the others are not attempted.
    let mut failed: Vec<(String, i32, i16)> = Vec::new();
    let mut partitions = Vec::new();
    for t in topics {
        let name = t.name.0.as_str();
        let writable = !check_topics
            || super::allowed(
                session,
                super::Operation::Write,
                super::ResourceType::Topic,
                name,
            );
        let topic = session.services.topics.get(name);
        for p in &t.partitions {
            let code = if !writable {
                ResponseError::TopicAuthorizationFailed.code()
            } else if topic.as_ref().and_then(|t| t.partition(*p)).is_none() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                partitions.push((name.to_string(), *p));
                continue;
            };
            failed.push((name.to_string(), *p, code));
        }
    }
    if !failed.is_empty() {
        let not_attempted = ResponseError::OperationNotAttempted.code();
        return results(topics, |t, p| {
            failed
                .iter()
                .find(|(ft, fp, _)| ft == t && *fp == p)
                .map_or(not_attempted, |(_, _, c)| *c)
        });
    }
    let txns = &session.services.transactions;
    if verify_only {
        return match txns.verify_partitions(id, producer_id, epoch, &partitions) {
            Ok(found) => {
                let abortable = ResponseError::TransactionAbortable.code();
                results(topics, |t, p| {
                    partitions
                        .iter()
                        .zip(&found)
                        .find(|((pt, pp), _)| pt == t && *pp == p)
                        .map_or(abortable, |(_, in_txn)| if *in_txn { 0 } else { abortable })
                })
            }
            Err(e) => {
                let code = errors::txn_code(&e, version, 2).code();
                results(topics, |_, _| code)
            }
        };
    }
    let code = match txns.add_partitions(id, producer_id, epoch, &partitions) {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(transactional_id = %id, error = %e, "AddPartitionsToTxn refused");
            errors::txn_code(&e, version, 2).code()
        }
    };
    results(topics, |_, _| code)
}

fn handle(session: &mut Session, call: Call, req: AddPartitionsToTxnRequest) -> Pending {
    if call.version >= 4 {
        // The batched form is the brokers' (KIP-890): CLUSTER_ACTION, as Kafka asks.
        if !super::cluster_allowed(session, super::Operation::ClusterAction) {
            let resp = AddPartitionsToTxnResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
            return call.ready(&resp);
        }
        let mut out = Vec::with_capacity(req.transactions.len());
        for t in &req.transactions {
            let id = t.transactional_id.0.as_str();
            let topic_results = if id.is_empty() {
                let invalid = ResponseError::InvalidRequest.code();
                results(&t.topics, |_, _| invalid)
            } else {
                one_transaction(
                    session,
                    call.version,
                    id,
                    t.producer_id.0,
                    t.producer_epoch,
                    &t.topics,
                    t.verify_only,
                    false,
                )
            };
            out.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results),
            );
        }
        return call.ready(&AddPartitionsToTxnResponse::default().with_results_by_transaction(out));
    }
    let id = req.v3_and_below_transactional_id.0.as_str();
    if !super::allowed(
        session,
        super::Operation::Write,
        super::ResourceType::TransactionalId,
        id,
    ) {
        let code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return call.ready(&answer(&req, |_, _| code));
    }
    let topic_results = one_transaction(
        session,
        call.version,
        id,
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        &req.v3_and_below_topics,
        false,
        true,
    );
    call.ready(
        &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topic_results),
    )
}

impl crate::api::ErrorCodes for AddPartitionsToTxnResponse {
    fn first_error(&self) -> i16 {
        let partitions = |t: &AddPartitionsToTxnTopicResult| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
                .collect::<Vec<_>>()
        };
        crate::api::first(
            std::iter::once(self.error_code)
                .chain(
                    self.results_by_topic_v3_and_below
                        .iter()
                        .flat_map(partitions),
                )
                .chain(
                    self.results_by_transaction
                        .iter()
                        .flat_map(|t| t.topic_results.iter().flat_map(partitions)),
                ),
        )
    }
}
