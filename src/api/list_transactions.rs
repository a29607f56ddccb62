//! ListTransactions (v0-1, KIP-664): the transactional ids the caller may describe, filtered by
//! state, producer id and (v1) how long their transaction has run.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::{str_bytes, Call, KafkaApi, Pending, Session};
use crate::services::transactions::TxnState;

/// ListTransactions, declared for the API table.
pub struct ListTransactions;

impl KafkaApi for ListTransactions {
    const NAME: &'static str = "ListTransactions";
    type Request = ListTransactionsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 1;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        _req: &ListTransactionsRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(call.respond(&ListTransactionsResponse::default().with_error_code(code)))
    }

    fn handle(session: &mut Session, call: Call, req: ListTransactionsRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 0, ALL),      // state_filters
        f(Ty::ArrayFixed(8), 0, ALL), // producer_id_filters
        f(Ty::I64, 1, ALL),           // duration_filter
        f(Ty::Str, 2, ALL),           // transactional_id_pattern
    ],
    0,
);

fn handle(session: &mut Session, call: Call, req: ListTransactionsRequest) -> Pending {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for s in &req.state_filters {
        match TxnState::from_name(s.as_str()) {
            Some(state) => states.push(state),
            None => unknown.push(s.clone()),
        }
    }
    let now = crate::services::now_ms();
    let listed = if !unknown.is_empty() && states.is_empty() {
        // Only names no state has: nothing matches them.
        Vec::new()
    } else {
        session
            .services
            .transactions
            .list()
            .into_iter()
            .filter(|v| states.is_empty() || states.contains(&v.meta.state))
            .filter(|v| {
                req.producer_id_filters.is_empty()
                    || req
                        .producer_id_filters
                        .iter()
                        .any(|p| p.0 == v.meta.producer_id)
            })
            .filter(|v| req.duration_filter < 0 || now - v.meta.start_ms > req.duration_filter)
            .filter(|v| {
                super::allowed(
                    session,
                    super::Operation::Describe,
                    super::ResourceType::TransactionalId,
                    &v.transactional_id,
                )
            })
            .map(|v| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(&v.transactional_id)))
                    .with_producer_id(ProducerId(v.meta.producer_id))
                    .with_transaction_state(str_bytes(v.meta.state.name()))
            })
            .collect()
    };
    call.ready(
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}

impl crate::api::ErrorCodes for ListTransactionsResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
