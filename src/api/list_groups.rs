//! ListGroups (v0-5): every group with its protocol type, state (v4+) and type (v5+), with
//! Kafka's state and type filters (case-insensitive).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::Session;
use super::{str_bytes, Call, KafkaApi, Pending};

/// ListGroups, declared for the API table.
pub struct ListGroups;

impl KafkaApi for ListGroups {
    const NAME: &'static str = "ListGroups";
    type Request = ListGroupsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 5;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: ListGroupsRequest) -> Pending {
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
        // DESCRIBE on the cluster lists every group; otherwise those the client may DESCRIBE.
        let access = super::Access::of(session);
        let all = access.may(
            super::Operation::Describe,
            super::ResourceType::Cluster,
            crate::services::acl::CLUSTER_NAME,
        );
        let groups = session
            .services
            .groups
            .list()
            .into_iter()
            .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
            .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
            .filter(|g| {
                all || access.may(
                    super::Operation::Describe,
                    super::ResourceType::Group,
                    &g.group_id,
                )
            })
            .map(|g| {
                let mut l = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&g.group_id)))
                    .with_protocol_type(str_bytes(&g.protocol_type));
                if call.version >= 4 {
                    l.group_state = str_bytes(&g.state);
                }
                if call.version >= 5 {
                    l.group_type = str_bytes(g.group_type);
                }
                l
            })
            .collect();
        call.ready(&ListGroupsResponse::default().with_groups(groups))
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 4, ALL), // states_filter
        f(Ty::ArrayStr, 5, ALL), // types_filter
    ],
    3,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::ListGroupsResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
