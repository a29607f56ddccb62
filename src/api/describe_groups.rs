//! DescribeGroups (v0-6): state, protocol and members (metadata and assignment) of each group.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::Session;
use super::{str_bytes, Call, KafkaApi, Pending};

/// KIP-430 operations on a group, with no ACLs: READ(3), DELETE(6), DESCRIBE(8).
pub const GROUP_OPERATIONS: &[super::Operation] = &[
    super::Operation::Read,
    super::Operation::Delete,
    super::Operation::Describe,
];

/// DescribeGroups, declared for the API table.
pub struct DescribeGroups;

impl KafkaApi for DescribeGroups {
    const NAME: &'static str = "DescribeGroups";
    type Request = DescribeGroupsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 6;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeGroupsRequest) -> Pending {
        let groups = &session.services.groups;
        let access = super::Access::of(session);
        let described = req
            .groups
            .iter()
            .map(|id| {
                let mut d = DescribedGroup::default().with_group_id(id.clone());
                if req.include_authorized_operations && call.version >= 3 {
                    d.authorized_operations = access.operations(
                        super::ResourceType::Group,
                        id.0.as_str(),
                        GROUP_OPERATIONS,
                    );
                }
                if !access.allowed(
                    super::Operation::Describe,
                    super::ResourceType::Group,
                    id.0.as_str(),
                ) {
                    d.error_code = ResponseError::GroupAuthorizationFailed.code();
                    return d;
                }
                match groups.describe(id.0.as_str()) {
                    Some(g) => {
                        d.group_state = str_bytes(g.state.name());
                        d.protocol_type = str_bytes(&g.protocol_type);
                        d.protocol_data = str_bytes(&g.protocol);
                        d.members = g
                            .members
                            .iter()
                            .map(|m| {
                                let mut dm = DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata.clone())
                                    .with_member_assignment(m.assignment.clone());
                                if call.version >= 4 {
                                    dm.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                                }
                                dm
                            })
                            .collect();
                    }
                    None => {
                        d.group_state = str_bytes("Dead");
                        if call.version >= 6 {
                            d.error_code = ResponseError::GroupIdNotFound.code();
                            d.error_message =
                                Some(str_bytes(&format!("Group {} not found.", id.0.as_str())));
                        }
                    }
                }
                d
            })
            .collect();
        call.ready(&DescribeGroupsResponse::default().with_groups(described))
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 0, ALL), // groups
        f(Ty::I8, 3, ALL),       // include_authorized_operations
    ],
    5,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::DescribeGroupsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.groups.iter().map(|g| g.error_code))
    }
}
