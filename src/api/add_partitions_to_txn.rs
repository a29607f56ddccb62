//! AddPartitionsToTxn (v0-3, the client's form): partitions join the producer's transaction
//! before its first batch to each. Versions 4-5 are Kafka's broker-to-broker form (KIP-890),
//! which a single node never sends itself.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
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
    const MAX: i16 = 3;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &AddPartitionsToTxnRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
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

/// The response with `code(topic, partition)` for every partition of the request.
fn answer(
    req: &AddPartitionsToTxnRequest,
    code: impl Fn(&str, i32) -> i16,
) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
        req.v3_and_below_topics
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
            .collect(),
    )
}

fn handle(session: &mut Session, call: Call, req: AddPartitionsToTxnRequest) -> Pending {
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
    // Every partition checked first; if one fails, the others are not attempted.
    let mut failed: Vec<(String, i32, i16)> = Vec::new();
    let mut partitions = Vec::new();
    for t in &req.v3_and_below_topics {
        let name = t.name.0.as_str();
        let writable = super::allowed(
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
        return call.ready(&answer(&req, |t, p| {
            failed
                .iter()
                .find(|(ft, fp, _)| ft == t && *fp == p)
                .map_or(not_attempted, |(_, _, c)| *c)
        }));
    }
    let result = session.services.transactions.add_partitions(
        id,
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        &partitions,
    );
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(transactional_id = %id, error = %e, "AddPartitionsToTxn refused");
            errors::txn_code(&e, call.version, 2).code()
        }
    };
    call.ready(&answer(&req, |_, _| code))
}

impl crate::api::ErrorCodes for AddPartitionsToTxnResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(std::iter::once(self.error_code).chain(
            self.results_by_topic_v3_and_below.iter().flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            }),
        ))
    }
}
