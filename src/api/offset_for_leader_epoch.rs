//! OffsetForLeaderEpoch (v2-4): kafkabox's partitions have one leader epoch (0), which ends at
//! the log end. Consumers use it to check for truncation after a leader change.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{Call, KafkaApi, Pending, LEADER_EPOCH};

/// OffsetForLeaderEpoch, declared for the API table.
pub struct OffsetForLeaderEpoch;

impl KafkaApi for OffsetForLeaderEpoch {
    const NAME: &'static str = "OffsetForLeaderEpoch";
    type Request = OffsetForLeaderEpochRequest;
    const MIN: i16 = 2;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: OffsetForLeaderEpochRequest) -> Pending {
        let service = &session.services.topics;
        let access = super::Access::of(session);
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let may = access.allowed(
                    super::Operation::Describe,
                    super::ResourceType::Topic,
                    t.topic.0.as_str(),
                );
                let topic = service.get(t.topic.0.as_str()).filter(|_| may);
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut r = EpochEndOffset::default()
                                    .with_partition(p.partition)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1);
                                match topic.as_ref().and_then(|t| t.partition(p.partition)) {
                                    None if !may => {
                                        r.error_code =
                                            ResponseError::TopicAuthorizationFailed.code()
                                    }
                                    None => {
                                        r.error_code = ResponseError::UnknownTopicOrPartition.code()
                                    }
                                    Some(_) if p.current_leader_epoch > LEADER_EPOCH => {
                                        r.error_code = ResponseError::UnknownLeaderEpoch.code()
                                    }
                                    Some(part) if p.leader_epoch <= LEADER_EPOCH => {
                                        r.leader_epoch = LEADER_EPOCH;
                                        r.end_offset = service.offsets(part).log_end;
                                    }
                                    // An epoch newer than any: undefined, as Kafka answers.
                                    Some(_) => {}
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        call.ready(&OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}

const OFFSET_FOR_LEADER_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition
    f(Ty::I32, 0, ALL), // current_leader_epoch
    f(Ty::I32, 0, ALL), // leader_epoch
];
const OFFSET_FOR_LEADER_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                                // topic
    f(Ty::Array(OFFSET_FOR_LEADER_PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::I32, 3, ALL),                            // replica_id
        f(Ty::Array(OFFSET_FOR_LEADER_TOPIC), 0, ALL), // topics
    ],
    4,
);

super::partition_error_codes!(kafka_protocol::messages::OffsetForLeaderEpochResponse);
