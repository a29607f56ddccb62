//! DescribeProducers (v0): the idempotent producers each partition remembers.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{Call, KafkaApi, Pending};

/// DescribeProducers, declared for the API table.
pub struct DescribeProducers;

impl KafkaApi for DescribeProducers {
    const NAME: &'static str = "DescribeProducers";
    type Request = DescribeProducersRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 0;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeProducersRequest) -> Pending {
        let services = &session.services;
        let access = super::Access::of(session);
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let may = access.allowed(
                    super::Operation::Read,
                    super::ResourceType::Topic,
                    t.name.0.as_str(),
                );
                let topic = services.topics.get(t.name.0.as_str()).filter(|_| may);
                TopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|&p| {
                                let mut r = PartitionResponse::default().with_partition_index(p);
                                match topic.as_ref().and_then(|t| t.partition(p)) {
                                    None if !may => {
                                        r.error_code =
                                            ResponseError::TopicAuthorizationFailed.code()
                                    }
                                    None => {
                                        r.error_code = ResponseError::UnknownTopicOrPartition.code()
                                    }
                                    Some(part) => {
                                        r.active_producers = services
                                            .producer_states(part)
                                            .into_iter()
                                            .map(|s| {
                                                ProducerState::default()
                                                    .with_producer_id(ProducerId(s.producer_id))
                                                    .with_producer_epoch(i32::from(s.epoch))
                                                    .with_last_sequence(s.last_sequence)
                                                    .with_last_timestamp(s.last_timestamp)
                                                    .with_coordinator_epoch(s.coordinator_epoch)
                                                    .with_current_txn_start_offset(
                                                        s.current_txn_start_offset,
                                                    )
                                            })
                                            .collect()
                                    }
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        call.ready(&DescribeProducersResponse::default().with_topics(topics))
    }
}

const TOPIC_REQUEST: &[Field] = &[
    f(Ty::Str, 0, ALL),           // name
    f(Ty::ArrayFixed(4), 0, ALL), // partition_indexes
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(TOPIC_REQUEST), 0, ALL), // topics
    ],
    0,
);

super::partition_error_codes!(kafka_protocol::messages::DescribeProducersResponse);
