//! Heartbeat (v0-4): keeps a member's session; REBALANCE_IN_PROGRESS asks it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::Session;
use super::{errors, Call, KafkaApi, Pending};
use crate::services::mono_ms;

/// Heartbeat, declared for the API table.
pub struct Heartbeat;

impl KafkaApi for Heartbeat {
    const NAME: &'static str = "Heartbeat";
    type Request = HeartbeatRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &HeartbeatRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: HeartbeatRequest) -> Pending {
        if let Some(code) = super::group_refused(session, super::Operation::Read, &req.group_id) {
            return call.ready(
                &kafka_protocol::messages::HeartbeatResponse::default().with_error_code(code),
            );
        }
        let r = session.services.groups.heartbeat(
            req.group_id.0.as_str(),
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.generation_id,
            mono_ms(),
        );
        let code = match r {
            Ok(()) => 0,
            Err(e) => errors::code(&e).code(),
        };
        call.ready(&HeartbeatResponse::default().with_error_code(code))
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL), // group_id
        f(Ty::I32, 0, ALL), // generation_id
        f(Ty::Str, 0, ALL), // member_id
        f(Ty::Str, 3, ALL), // group_instance_id
    ],
    4,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::HeartbeatResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}

/// An injected error.
fn error_answer(call: Call, _req: &HeartbeatRequest, code: i16) -> crate::api::Reply {
    call.respond(&HeartbeatResponse::default().with_error_code(code))
}
