//! JoinGroup (v0-9): a thin translation to the group coordinator. The answer waits until the
//! join barrier falls (every member rejoined, or the rebalance timeout passed).

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, str_bytes, Call, KafkaApi, Pending, Reply};
use crate::services::groups::{Answer, JoinCode, JoinRequest, JoinResult};
use crate::services::mono_ms;

/// JoinGroup, declared for the API table.
pub struct JoinGroup;

impl KafkaApi for JoinGroup {
    const NAME: &'static str = "JoinGroup";
    type Request = JoinGroupRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 9;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &JoinGroupRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: JoinGroupRequest) -> Pending {
        if let Some(code) = super::group_refused(session, super::Operation::Read, &req.group_id) {
            return call.ready(
                &kafka_protocol::messages::JoinGroupResponse::default().with_error_code(code),
            );
        }
        handle(session, call, req)
    }
}

const JOIN_GROUP_REQUEST_PROTOCOL: &[Field] = &[
    f(Ty::Str, 0, ALL),   // name
    f(Ty::Bytes, 0, ALL), // metadata
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                                // group_id
        f(Ty::I32, 0, ALL),                                // session_timeout_ms
        f(Ty::I32, 1, ALL),                                // rebalance_timeout_ms
        f(Ty::Str, 0, ALL),                                // member_id
        f(Ty::Str, 5, ALL),                                // group_instance_id
        f(Ty::Str, 0, ALL),                                // protocol_type
        f(Ty::Array(JOIN_GROUP_REQUEST_PROTOCOL), 0, ALL), // protocols
        f(Ty::Str, 8, ALL),                                // reason
    ],
    6,
);

fn response(call: Call, r: JoinResult) -> JoinGroupResponse {
    let code = match r.code {
        JoinCode::None => 0,
        JoinCode::MemberIdRequired => ResponseError::MemberIdRequired.code(),
        JoinCode::UnknownMemberId => ResponseError::UnknownMemberId.code(),
        JoinCode::RebalanceInProgress => ResponseError::RebalanceInProgress.code(),
        JoinCode::FencedInstanceId => ResponseError::FencedInstanceId.code(),
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(r.generation)
        .with_leader(str_bytes(&r.leader))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .iter()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_metadata(m.metadata.clone());
                    if call.version >= 5 {
                        jm.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                    }
                    jm
                })
                .collect(),
        );
    // protocol_name is nullable from v7; earlier versions need a string.
    resp.protocol_name = match (r.protocol, call.version >= 7) {
        (Some(p), _) => Some(str_bytes(&p)),
        (None, true) => None,
        (None, false) => Some(str_bytes("")),
    };
    if call.version >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    }
    if call.version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp
}

fn error(call: Call, e: &crate::services::Error, member_id: &str) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(errors::code(e).code())
        .with_generation_id(-1)
        .with_member_id(str_bytes(member_id));
    if call.version < 7 {
        resp.protocol_name = Some(str_bytes(""));
    }
    resp
}

fn handle(session: &mut Session, call: Call, req: JoinGroupRequest) -> Pending {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: session.client_id.clone(),
        client_host: format!("/{}", session.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if req.rebalance_timeout_ms < 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), Bytes::clone(&p.metadata)))
            .collect(),
        require_known_member_id: call.version >= 4,
        supports_skip_assignment: call.version >= 9,
    };
    let answer = session.services.groups.join(&group_id, join, mono_ms());
    let services = session.services.clone();
    Box::pin(async move {
        let resp = match answer {
            // A static member that took its old place without a rebalance: the group record
            // naming its new member id is durable before it hears (Kafka answers after the
            // append), so a crash cannot bring the old id back and fence the new process.
            Ok(Answer::Now(r)) if r.code == JoinCode::None => {
                match services.groups.records_durable().await {
                    Ok(()) => response(call, r),
                    Err(e) => error(call, &crate::services::Error::Storage(e), &member_id),
                }
            }
            Ok(Answer::Now(r)) => response(call, r),
            Ok(Answer::Wait(rx)) => match rx.await {
                Ok(r) => response(call, r),
                // The coordinator dropped the member (shutdown): tell it to retry.
                Err(_) => error(
                    call,
                    &crate::services::Error::CoordinatorNotAvailable("shutting down".into()),
                    &member_id,
                ),
            },
            Err(e) => {
                tracing::debug!(group = %group_id, error = %e, "JoinGroup refused");
                error(call, &e, &member_id)
            }
        };
        let reply: Reply = call.respond(&resp);
        reply
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::JoinGroupResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}

/// An injected error.
fn error_answer(call: Call, req: &JoinGroupRequest, code: i16) -> Reply {
    call.respond(
        &JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone()),
    )
}
