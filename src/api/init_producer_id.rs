//! InitProducerId: a new, persisted producer id (epoch 0) for every idempotent producer.
//! Transactions are not supported.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::{respond, ConnCtx, Pending};

pub fn handle(
    ctx: &Arc<ConnCtx>,
    correlation_id: i32,
    version: i16,
    req: InitProducerIdRequest,
) -> Pending {
    let store = ctx.broker.store.clone();
    Box::pin(async move {
        let mut resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if let Some(txn) = req.transactional_id.as_ref().filter(|t| t.0.is_empty()) {
            // Kafka's TransactionCoordinator: an empty transactional id is an invalid request.
            tracing::warn!(transactional_id = %txn.0.as_str(), "InitProducerId with an empty transactional id");
            resp.error_code = ResponseError::InvalidRequest.code();
            return respond(correlation_id, version, &resp);
        }
        if let Some(txn) = &req.transactional_id {
            tracing::warn!(
                transactional_id = %txn.0.as_str(),
                "InitProducerId for a transactional producer: kafkabox does not support transactions"
            );
            resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return respond(correlation_id, version, &resp);
        }
        match tokio::task::spawn_blocking(move || store.new_producer_id()).await {
            Ok(Ok(id)) => {
                resp.producer_id = ProducerId(id);
                resp.producer_epoch = 0;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot allocate a producer id");
                resp.error_code = ResponseError::KafkaStorageError.code();
            }
            Err(e) => {
                tracing::error!(error = %e, "producer id task failed");
                resp.error_code = ResponseError::UnknownServerError.code();
            }
        }
        respond(correlation_id, version, &resp)
    })
}
