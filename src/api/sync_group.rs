//! SyncGroup (v0-5): the leader's assignment in, each member's assignment out. Followers wait
//! for the leader.

use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, str_bytes, Call, KafkaApi, Pending};
use crate::services::groups::{Answer, SyncResult};
use crate::services::{mono_ms, Error};

/// SyncGroup, declared for the API table.
pub struct SyncGroup;

impl KafkaApi for SyncGroup {
    const NAME: &'static str = "SyncGroup";
    type Request = SyncGroupRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 5;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &SyncGroupRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: SyncGroupRequest) -> Pending {
        if let Some(code) = super::group_refused(session, super::Operation::Read, &req.group_id) {
            return call.ready(
                &kafka_protocol::messages::SyncGroupResponse::default().with_error_code(code),
            );
        }
        handle(session, call, req)
    }
}

const SYNC_GROUP_REQUEST_ASSIGNMENT: &[Field] = &[
    f(Ty::Str, 0, ALL),   // member_id
    f(Ty::Bytes, 0, ALL), // assignment
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                                  // group_id
        f(Ty::I32, 0, ALL),                                  // generation_id
        f(Ty::Str, 0, ALL),                                  // member_id
        f(Ty::Str, 3, ALL),                                  // group_instance_id
        f(Ty::Str, 5, ALL),                                  // protocol_type
        f(Ty::Str, 5, ALL),                                  // protocol_name
        f(Ty::Array(SYNC_GROUP_REQUEST_ASSIGNMENT), 0, ALL), // assignments
    ],
    4,
);

fn response(call: Call, r: SyncResult) -> SyncGroupResponse {
    match r {
        Ok((protocol_type, protocol, assignment)) => {
            let mut resp = SyncGroupResponse::default().with_assignment(assignment);
            if call.version >= 5 {
                resp.protocol_type = protocol_type.as_deref().map(str_bytes);
                resp.protocol_name = protocol.as_deref().map(str_bytes);
            }
            resp
        }
        Err(e) => SyncGroupResponse::default().with_error_code(errors::code(&e).code()),
    }
}

fn handle(session: &mut Session, call: Call, req: SyncGroupRequest) -> Pending {
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let answer = session.services.groups.sync(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        req.generation_id,
        req.protocol_type.as_deref(),
        req.protocol_name.as_deref(),
        assignments,
        mono_ms(),
    );
    let services = session.services.clone();
    Box::pin(async move {
        let r = match answer {
            Ok(Answer::Now(r)) => r,
            Ok(Answer::Wait(rx)) => rx
                .await
                .unwrap_or_else(|_| Err(Error::CoordinatorNotAvailable("shutting down".into()))),
            Err(e) => Err(e),
        };
        // The group record written when the leader assigned is durable before anyone hears.
        let r = match services.groups.records_durable().await {
            Ok(()) => r,
            Err(e) => Err(Error::Storage(e)),
        };
        call.respond(&response(call, r))
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::SyncGroupResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}

/// An injected error.
fn error_answer(call: Call, _req: &SyncGroupRequest, code: i16) -> crate::api::Reply {
    call.respond(&SyncGroupResponse::default().with_error_code(code))
}
