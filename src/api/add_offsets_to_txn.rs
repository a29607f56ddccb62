//! AddOffsetsToTxn (v0-4): the producer's transaction will commit offsets of a consumer group
//! (sent next with TxnOffsetCommit).

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::{errors, Call, KafkaApi, Pending, Session};

/// AddOffsetsToTxn, declared for the API table.
pub struct AddOffsetsToTxn;

impl KafkaApi for AddOffsetsToTxn {
    const NAME: &'static str = "AddOffsetsToTxn";
    type Request = AddOffsetsToTxnRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        _req: &AddOffsetsToTxnRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(call.respond(&AddOffsetsToTxnResponse::default().with_error_code(code)))
    }

    fn handle(session: &mut Session, call: Call, req: AddOffsetsToTxnRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL), // transactional_id
        f(Ty::I64, 0, ALL), // producer_id
        f(Ty::I16, 0, ALL), // producer_epoch
        f(Ty::Str, 0, ALL), // group_id
    ],
    3,
);

fn handle(session: &mut Session, call: Call, req: AddOffsetsToTxnRequest) -> Pending {
    let id = req.transactional_id.0.as_str();
    let group = req.group_id.0.as_str();
    let code = if !super::allowed(
        session,
        super::Operation::Write,
        super::ResourceType::TransactionalId,
        id,
    ) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if let Some(code) = super::group_refused(session, super::Operation::Read, group) {
        code
    } else {
        match session.services.transactions.add_offsets(
            id,
            req.producer_id.0,
            req.producer_epoch,
            group,
        ) {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(transactional_id = %id, error = %e, "AddOffsetsToTxn refused");
                errors::txn_code(&e, call.version, 2).code()
            }
        }
    };
    call.ready(&AddOffsetsToTxnResponse::default().with_error_code(code))
}

impl crate::api::ErrorCodes for AddOffsetsToTxnResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
