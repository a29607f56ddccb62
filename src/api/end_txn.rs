//! EndTxn (v0-4): commits or aborts the producer's transaction. Answered once the markers are
//! on every partition of the transaction and its offsets are committed, durably.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::{errors, Call, KafkaApi, Pending, Session};

/// EndTxn, declared for the API table.
pub struct EndTxn;

impl KafkaApi for EndTxn {
    const NAME: &'static str = "EndTxn";
    type Request = EndTxnRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, _req: &EndTxnRequest, code: i16) -> Option<crate::api::Reply> {
        Some(call.respond(&response(code)))
    }

    fn handle(session: &mut Session, call: Call, req: EndTxnRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL), // transactional_id
        f(Ty::I64, 0, ALL), // producer_id
        f(Ty::I16, 0, ALL), // producer_epoch
        f(Ty::I8, 0, ALL),  // committed
    ],
    3,
);

fn response(code: i16) -> EndTxnResponse {
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn handle(session: &mut Session, call: Call, req: EndTxnRequest) -> Pending {
    let id = req.transactional_id.0.as_str();
    if !super::allowed(
        session,
        super::Operation::Write,
        super::ResourceType::TransactionalId,
        id,
    ) {
        return call.ready(&response(
            ResponseError::TransactionalIdAuthorizationFailed.code(),
        ));
    }
    let code = match session.services.transactions.end(
        id,
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
    ) {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(transactional_id = %id, commit = req.committed, error = %e, "EndTxn refused");
            errors::txn_code(&e, call.version, 2).code()
        }
    };
    call.ready(&response(code))
}

impl crate::api::ErrorCodes for EndTxnResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
