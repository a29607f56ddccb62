//! InitProducerId: a new producer id (epoch 0) for every idempotent producer, bound to the
//! principal that asked (`Services::new_producer_id`: no other principal can write with it,
//! and ids cannot be guessed from one another); for a transactional producer, the producer id
//! and epoch of its transactional id from the transaction coordinator (which fences the
//! previous instance).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Session;
use crate::api::{Call, KafkaApi, Pending};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

/// InitProducerId, declared for the API table.
pub struct InitProducerId;

impl KafkaApi for InitProducerId {
    const NAME: &'static str = "InitProducerId";
    type Request = InitProducerIdRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 5;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &InitProducerIdRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: InitProducerIdRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL), // transactional_id
        f(Ty::I32, 0, ALL), // transaction_timeout_ms
        f(Ty::I64, 3, ALL), // producer_id
        f(Ty::I16, 3, ALL), // producer_epoch
    ],
    2,
);

fn handle(session: &mut Session, call: Call, req: InitProducerIdRequest) -> Pending {
    let services = session.services.clone();
    let owner = session.principal.clone();
    // Kafka: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (when ACLs are enforced).
    let may = req.transactional_id.is_some()
        || super::Access::of(session).may(
            super::Operation::IdempotentWrite,
            super::ResourceType::Cluster,
            crate::services::acl::CLUSTER_NAME,
        )
        || session.services.acl.authorize_any(
            &session.principal,
            session.peer.ip(),
            super::Operation::Write,
            super::ResourceType::Topic,
        );
    let txn_allowed = req.transactional_id.as_ref().is_some_and(|id| {
        super::allowed(
            session,
            super::Operation::Write,
            super::ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });
    Box::pin(async move {
        let mut resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if let Some(txn) = req.transactional_id.as_ref().filter(|t| t.0.is_empty()) {
            // Kafka's TransactionCoordinator: an empty transactional id is an invalid request.
            tracing::warn!(transactional_id = %txn.0.as_str(), "InitProducerId with an empty transactional id");
            resp.error_code = ResponseError::InvalidRequest.code();
            return call.respond(&resp);
        }
        if let Some(txn) = &req.transactional_id {
            let id = txn.0.to_string();
            let expected = match (req.producer_id.0, req.producer_epoch) {
                (-1, -1) => None,
                (-1, _) | (_, -1) => {
                    resp.error_code = ResponseError::InvalidRequest.code();
                    return call.respond(&resp);
                }
                (pid, epoch) => Some((pid, epoch)),
            };
            if !txn_allowed {
                resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
                return call.respond(&resp);
            }
            let timeout = req.transaction_timeout_ms;
            let r = tokio::task::spawn_blocking(move || {
                services
                    .transactions
                    .init_producer_id(&id, timeout, expected, &owner)
            })
            .await;
            match r {
                Ok(Ok((pid, epoch))) => {
                    resp.producer_id = ProducerId(pid);
                    resp.producer_epoch = epoch;
                }
                Ok(Err(e)) => {
                    tracing::info!(transactional_id = %txn.0.as_str(), error = %e, "InitProducerId refused");
                    resp.error_code = super::errors::txn_code(&e, call.version, 4).code();
                }
                Err(e) => {
                    tracing::error!(error = %e, "InitProducerId task failed");
                    resp.error_code = ResponseError::UnknownServerError.code();
                }
            }
            return call.respond(&resp);
        }
        if !may {
            resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
            return call.respond(&resp);
        }
        match tokio::task::spawn_blocking(move || services.new_producer_id(&owner)).await {
            Ok(Ok(id)) => {
                resp.producer_id = ProducerId(id);
                resp.producer_epoch = 0;
            }
            Ok(Err(e)) => {
                tracing::error!("cannot allocate a producer id");
                resp.error_code = super::errors::code(&e).code();
            }
            Err(e) => {
                tracing::error!(error = %e, "producer id task failed");
                resp.error_code = ResponseError::UnknownServerError.code();
            }
        }
        call.respond(&resp)
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::InitProducerIdResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}

/// An injected error.
fn error_answer(call: Call, _req: &InitProducerIdRequest, code: i16) -> crate::api::Reply {
    call.respond(
        &InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
}
