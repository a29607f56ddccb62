//! FindCoordinator (v0-6): kafkabox is the coordinator of every group (and answers for
//! transactional ids too, so that a transactional producer reaches InitProducerId and gets its
//! clear refusal there). Batched keys from v4.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::Session;
use super::{str_bytes, NODE_ID};
use crate::api::{Call, KafkaApi, Pending};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

/// FindCoordinator, declared for the API table.
pub struct FindCoordinator;

impl KafkaApi for FindCoordinator {
    const NAME: &'static str = "FindCoordinator";
    type Request = FindCoordinatorRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 6;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &FindCoordinatorRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: FindCoordinatorRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, 3),        // key
        f(Ty::I8, 1, ALL),       // key_type
        f(Ty::ArrayStr, 4, ALL), // coordinator_keys
    ],
    3,
);

fn handle(session: &mut Session, call: Call, req: FindCoordinatorRequest) -> Pending {
    let (host, port) = session.advertised();
    let mut resp = FindCoordinatorResponse::default();
    let access = super::Access::of(session);
    let answer = |key: &str| -> (i16, Option<String>) {
        match req.key_type {
            0 if !key.is_empty()
                && !access.allowed(super::Operation::Describe, super::ResourceType::Group, key) =>
            {
                (
                    ResponseError::GroupAuthorizationFailed.code(),
                    Some("Not authorized to describe this group.".into()),
                )
            }
            1 if !key.is_empty()
                && !access.allowed(
                    super::Operation::Describe,
                    super::ResourceType::TransactionalId,
                    key,
                ) =>
            {
                (
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    Some("Not authorized to describe this transactional id.".into()),
                )
            }
            0 | 1 if key.is_empty() => (
                ResponseError::InvalidRequest.code(),
                Some("The coordinator key is empty.".into()),
            ),
            0 | 1 => (0, None),
            other => (
                ResponseError::InvalidRequest.code(),
                Some(format!(
                    "kafkabox coordinates consumer groups (key type 0) and transactions (key type 1), not key type {other}."
                )),
            ),
        }
    };
    if call.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, message) = answer(k.as_str());
                let mut c = Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(code)
                    .with_error_message(message.as_deref().map(str_bytes));
                if code == 0 {
                    c.node_id = BrokerId(NODE_ID);
                    c.host = str_bytes(&host);
                    c.port = i32::from(port);
                } else {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                c
            })
            .collect();
    } else {
        let (code, message) = answer(req.key.as_str());
        resp.error_code = code;
        if code == 0 {
            resp.node_id = BrokerId(NODE_ID);
            resp.host = str_bytes(&host);
            resp.port = i32::from(port);
        } else {
            resp.node_id = BrokerId(-1);
            resp.port = -1;
        }
        if call.version >= 1 {
            resp.error_message = message.as_deref().map(str_bytes);
        }
    }
    call.ready(&resp)
}

impl crate::api::ErrorCodes for kafka_protocol::messages::FindCoordinatorResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(self.coordinators.iter().map(|c| c.error_code)),
        )
    }
}

/// An injected error, for the one key (v0-3) or each key (v4+).
fn error_answer(call: Call, req: &FindCoordinatorRequest, code: i16) -> crate::api::Reply {
    let mut resp = FindCoordinatorResponse::default();
    if call.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code)
            })
            .collect();
    } else {
        resp.error_code = code;
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    call.respond(&resp)
}
