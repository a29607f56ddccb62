//! ConsumerGroupDescribe (v0-1): KIP-848 groups with their epochs, assignor and each member's
//! current and target assignment.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::describe_groups::GROUP_OPERATIONS;
use super::Session;
use super::{errors, str_bytes, Call, KafkaApi, Pending};
use crate::services::groups::consumer::Tp;
use crate::services::Topics;

/// ConsumerGroupDescribe, declared for the API table.
pub struct ConsumerGroupDescribe;

impl KafkaApi for ConsumerGroupDescribe {
    const NAME: &'static str = "ConsumerGroupDescribe";
    type Request = ConsumerGroupDescribeRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 1;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: ConsumerGroupDescribeRequest) -> Pending {
        let services = &session.services;
        let access = super::Access::of(session);
        let groups = req
            .group_ids
            .iter()
            .map(|id| {
                let mut d = DescribedGroup::default().with_group_id(id.clone());
                if req.include_authorized_operations {
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
                    d.error_code = kafka_protocol::ResponseError::GroupAuthorizationFailed.code();
                    return d;
                }
                match services.groups.consumer_describe(id.0.as_str()) {
                    Ok(Some(g)) => {
                        d.group_state = str_bytes(g.state);
                        d.group_epoch = g.epoch;
                        d.assignment_epoch = g.assignment_epoch;
                        d.assignor_name = str_bytes(g.assignor);
                        d.members = g
                            .members
                            .iter()
                            .map(|m| {
                                Member::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                                    .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_subscribed_topic_names(
                                        m.subscribed
                                            .iter()
                                            .map(|t| TopicName(str_bytes(t)))
                                            .collect(),
                                    )
                                    .with_assignment(assignment(&services.topics, &m.assignment))
                                    .with_target_assignment(assignment(&services.topics, &m.target))
                                    .with_member_type(1)
                            })
                            .collect();
                    }
                    Ok(None) => {
                        d.error_code = ResponseError::GroupIdNotFound.code();
                        d.error_message =
                            Some(str_bytes(&format!("Group {} not found.", id.0.as_str())));
                    }
                    Err(e) => {
                        d.error_code = errors::code(&e).code();
                        d.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
                d
            })
            .collect();
        call.ready(&ConsumerGroupDescribeResponse::default().with_groups(groups))
    }
}

fn assignment(topics: &Topics, tps: &[Tp]) -> Assignment {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    Assignment::default().with_topic_partitions(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic_id(
                        topics
                            .get(t)
                            .map(|x| uuid::Uuid::from_bytes(x.meta.id))
                            .unwrap_or_default(),
                    )
                    .with_topic_name(TopicName(str_bytes(t)))
                    .with_partitions(ps)
            })
            .collect(),
    )
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 0, ALL), // group_ids
        f(Ty::I8, 0, ALL),       // include_authorized_operations
    ],
    0,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::ConsumerGroupDescribeResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.groups.iter().map(|g| g.error_code))
    }
}
