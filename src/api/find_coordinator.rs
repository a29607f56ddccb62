//! FindCoordinator: kafkabox has no group or transaction coordinator yet, so every key gets
//! COORDINATOR_NOT_AVAILABLE (retriable) with a message saying why. The API is advertised only
//! because librdkafka turns lz4 compression on just for brokers that list it.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::{ready, respond, Pending};

const WHY: &str = "kafkabox does not support consumer groups or transactions yet; use assign() with explicit offsets";

pub fn handle(correlation_id: i32, version: i16, req: &FindCoordinatorRequest) -> Pending {
    let code = ResponseError::CoordinatorNotAvailable.code();
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(WHY)))
            })
            .collect();
    } else {
        resp.error_code = code;
        resp.node_id = BrokerId(-1);
        resp.port = -1;
        if version >= 1 {
            resp.error_message = Some(str_bytes(WHY));
        }
    }
    tracing::debug!(key = %req.key.as_str(), "FindCoordinator: {WHY}");
    ready(respond(correlation_id, version, &resp))
}
