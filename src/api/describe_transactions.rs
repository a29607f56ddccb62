//! DescribeTransactions (v0, KIP-664): the state of transactional ids (their producer, epoch,
//! timeout, start and partitions), for `kafka-transactions.sh describe` and admin clients.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::{errors, str_bytes, topic_name, Call, KafkaApi, Pending, Session};

/// DescribeTransactions, declared for the API table.
pub struct DescribeTransactions;

impl KafkaApi for DescribeTransactions {
    const NAME: &'static str = "DescribeTransactions";
    type Request = DescribeTransactionsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 0;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &DescribeTransactionsRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        let states = req
            .transactional_ids
            .iter()
            .map(|id| failed(id.clone(), code))
            .collect();
        Some(call.respond(&DescribeTransactionsResponse::default().with_transaction_states(states)))
    }

    fn handle(session: &mut Session, call: Call, req: DescribeTransactionsRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 0, ALL), // transactional_ids
    ],
    0,
);

fn failed(id: kafka_protocol::messages::TransactionalId, code: i16) -> TransactionState {
    TransactionState::default()
        .with_transactional_id(id)
        .with_error_code(code)
        .with_transaction_state(str_bytes(""))
        .with_transaction_timeout_ms(0)
        .with_transaction_start_time_ms(-1)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn handle(session: &mut Session, call: Call, req: DescribeTransactionsRequest) -> Pending {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in &req.transactional_ids {
        let name = id.0.as_str();
        if !super::allowed(
            session,
            super::Operation::Describe,
            super::ResourceType::TransactionalId,
            name,
        ) {
            states.push(failed(
                id.clone(),
                ResponseError::TransactionalIdAuthorizationFailed.code(),
            ));
            continue;
        }
        if name.is_empty() {
            states.push(failed(id.clone(), ResponseError::InvalidRequest.code()));
            continue;
        }
        match session.services.transactions.describe(name) {
            Ok(view) => {
                let m = &view.meta;
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    // Topics the caller may not describe are left out, as Kafka does.
                    if super::allowed(
                        session,
                        super::Operation::Describe,
                        super::ResourceType::Topic,
                        t,
                    ) {
                        topics.entry(t.as_str()).or_default().push(*p);
                    }
                }
                states.push(
                    TransactionState::default()
                        .with_transactional_id(id.clone())
                        .with_transaction_state(str_bytes(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(t, ps)| {
                                    TopicData::default()
                                        .with_topic(topic_name(t))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        ),
                );
            }
            Err(e) => states.push(failed(id.clone(), errors::code(&e).code())),
        }
    }
    call.ready(&DescribeTransactionsResponse::default().with_transaction_states(states))
}

impl crate::api::ErrorCodes for DescribeTransactionsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.transaction_states.iter().map(|s| s.error_code))
    }
}
