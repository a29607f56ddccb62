//! DeleteRecords (v0-2): advances a partition's log start offset (-1: to the high watermark).

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, Call, KafkaApi, Pending, Reply};

/// DeleteRecords, declared for the API table.
pub struct DeleteRecords;

impl KafkaApi for DeleteRecords {
    const NAME: &'static str = "DeleteRecords";
    type Request = DeleteRecordsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 2;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DeleteRecordsRequest) -> Pending {
        let services = session.services.clone();
        let access = super::Access::of(session);
        Box::pin(async move {
            let s = services.clone();
            let job = tokio::task::spawn_blocking(move || {
                req.topics
                    .iter()
                    .map(|t| {
                        let may = access.allowed(
                            super::Operation::Delete,
                            super::ResourceType::Topic,
                            t.name.0.as_str(),
                        );
                        let topic = s.topics.get(t.name.0.as_str());
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let mut r = DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p.partition_index)
                                    .with_low_watermark(-1);
                                if !may {
                                    r.error_code = ResponseError::TopicAuthorizationFailed.code();
                                    return r;
                                }
                                match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                                    None => {
                                        r.error_code = ResponseError::UnknownTopicOrPartition.code()
                                    }
                                    Some(part) => match s.topics.delete_records(part, p.offset) {
                                        Ok(low) => r.low_watermark = low,
                                        Err(e) => {
                                            tracing::info!(error = %e, "DeleteRecords refused");
                                            r.error_code = errors::code(&e).code();
                                        }
                                    },
                                }
                                r
                            })
                            .collect();
                        DeleteRecordsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_partitions(parts)
                    })
                    .collect::<Vec<_>>()
            });
            let topics = match job.await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "DeleteRecords task failed");
                    return Reply::Close;
                }
            };
            // Durable before the answer, as Kafka's is replicated.
            if let Err(e) = services.all_durable().await {
                tracing::error!(error = %e, "DeleteRecords flush failed");
            }
            call.respond(&DeleteRecordsResponse::default().with_topics(topics))
        })
    }
}

const DELETE_RECORDS_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL), // partition_index
    f(Ty::I64, 0, ALL), // offset
];
const DELETE_RECORDS_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),                             // name
    f(Ty::Array(DELETE_RECORDS_PARTITION), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(DELETE_RECORDS_TOPIC), 0, ALL), // topics
        f(Ty::I32, 0, ALL),                         // timeout_ms
    ],
    2,
);

super::partition_error_codes!(kafka_protocol::messages::DeleteRecordsResponse);
