//! LeaveGroup (v0-5): one member (v0-2) or a batch of members, by id or group.instance.id.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, str_bytes, Call, KafkaApi, Pending};
use crate::services::mono_ms;

/// LeaveGroup, declared for the API table.
pub struct LeaveGroup;

impl KafkaApi for LeaveGroup {
    const NAME: &'static str = "LeaveGroup";
    type Request = LeaveGroupRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 5;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &LeaveGroupRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: LeaveGroupRequest) -> Pending {
        if let Some(code) = super::group_refused(session, super::Operation::Read, &req.group_id) {
            return call.ready(
                &kafka_protocol::messages::LeaveGroupResponse::default().with_error_code(code),
            );
        }
        let members: Vec<(String, Option<String>)> = if call.version < 3 {
            vec![(req.member_id.to_string(), None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let mut resp = LeaveGroupResponse::default();
        match session
            .services
            .groups
            .leave(req.group_id.0.as_str(), &members, mono_ms())
        {
            Ok(results) => {
                if call.version < 3 {
                    if let Some((_, _, Err(e))) = results.first() {
                        resp.error_code = errors::code(e).code();
                    }
                } else {
                    resp.members = results
                        .iter()
                        .map(|(m, i, r)| {
                            MemberResponse::default()
                                .with_member_id(str_bytes(m))
                                .with_group_instance_id(i.as_deref().map(str_bytes))
                                .with_error_code(match r {
                                    Ok(()) => 0,
                                    Err(e) => errors::code(e).code(),
                                })
                        })
                        .collect();
                }
            }
            Err(e) => resp.error_code = errors::code(&e).code(),
        }
        let services = session.services.clone();
        Box::pin(async move {
            if let Err(e) = services.groups.records_durable().await {
                resp.error_code = errors::storage(&e).code();
            }
            call.respond(&resp)
        })
    }
}

const MEMBER_IDENTITY: &[Field] = &[
    f(Ty::Str, 3, ALL), // member_id
    f(Ty::Str, 3, ALL), // group_instance_id
    f(Ty::Str, 5, ALL), // reason
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                    // group_id
        f(Ty::Str, 0, 2),                      // member_id
        f(Ty::Array(MEMBER_IDENTITY), 3, ALL), // members
    ],
    4,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::LeaveGroupResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(self.members.iter().map(|m| m.error_code)),
        )
    }
}

/// An injected error.
fn error_answer(call: Call, _req: &LeaveGroupRequest, code: i16) -> crate::api::Reply {
    call.respond(&LeaveGroupResponse::default().with_error_code(code))
}
