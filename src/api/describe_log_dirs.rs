//! DescribeLogDirs (v1-4): one log dir, the data directory, with each partition's stored size.

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, str_bytes, topic_name, Call, KafkaApi, Pending, Reply};

/// DescribeLogDirs, declared for the API table.
pub struct DescribeLogDirs;

impl KafkaApi for DescribeLogDirs {
    const NAME: &'static str = "DescribeLogDirs";
    type Request = DescribeLogDirsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeLogDirsRequest) -> Pending {
        let services = session.services.clone();
        if !super::cluster_allowed(session, super::Operation::Describe) {
            return call.ready(&DescribeLogDirsResponse::default().with_error_code(
                kafka_protocol::ResponseError::ClusterAuthorizationFailed.code(),
            ));
        }
        Box::pin(async move {
            let job = tokio::task::spawn_blocking(move || {
                let topics = &services.topics;
                let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                        .collect()
                });
                let mut out = Vec::new();
                for t in topics.list() {
                    let parts: Vec<i32> = match &wanted {
                        None => t.partitions.iter().map(|p| p.index).collect(),
                        Some(w) => match w.iter().find(|(n, _)| *n == t.meta.name) {
                            Some((_, ps)) => ps.clone(),
                            None => continue,
                        },
                    };
                    let mut partitions = Vec::new();
                    for index in parts {
                        let Some(part) = t.partition(index) else {
                            continue;
                        };
                        let size = topics.partition_size(part).map_err(|e| errors::code(&e))?;
                        partitions.push(
                            DescribeLogDirsPartition::default()
                                .with_partition_index(index)
                                .with_partition_size(size as i64),
                        );
                    }
                    out.push(
                        DescribeLogDirsTopic::default()
                            .with_name(topic_name(&t.meta.name))
                            .with_partitions(partitions),
                    );
                }
                let mut result = DescribeLogDirsResult::default()
                    .with_log_dir(str_bytes(&topics.log_dir().display().to_string()))
                    .with_topics(out);
                if call.version >= 4 {
                    result.total_bytes = -1;
                    result.usable_bytes = -1;
                }
                Ok::<_, kafka_protocol::ResponseError>(result)
            });
            let resp = match job.await {
                Ok(Ok(r)) => DescribeLogDirsResponse::default().with_results(vec![r]),
                Ok(Err(code)) => DescribeLogDirsResponse::default().with_error_code(code.code()),
                Err(e) => {
                    tracing::error!(error = %e, "DescribeLogDirs task failed");
                    return Reply::Close;
                }
            };
            call.respond(&resp)
        })
    }
}

const DESCRIBABLE_LOG_DIR_TOPIC: &[Field] = &[
    f(Ty::Str, 0, ALL),           // topic
    f(Ty::ArrayFixed(4), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(DESCRIBABLE_LOG_DIR_TOPIC), 0, ALL), // topics
    ],
    2,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::DescribeLogDirsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(self.results.iter().map(|r| r.error_code)),
        )
    }
}
