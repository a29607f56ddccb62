//! ListOffsets (v1-10): earliest (-2), latest (-1), max timestamp (-3), earliest local (-4),
//! latest tiered (-5, no tiered storage: -1), and by timestamp. Lookups by timestamp have batch
//! granularity: the answer is the base offset of the first batch whose max timestamp reaches
//! the target, and the client skips earlier records while consuming.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::LEADER_EPOCH;
use crate::broker::{ready, respond, ConnCtx, Pending};

pub fn handle(
    ctx: &Arc<ConnCtx>,
    correlation_id: i32,
    version: i16,
    req: ListOffsetsRequest,
) -> Pending {
    let store = &ctx.broker.store;
    let mut topics = Vec::with_capacity(req.topics.len());
    for lt in &req.topics {
        let name = lt.name.0.as_str();
        let topic = store.topic(name);
        let mut parts = Vec::with_capacity(lt.partitions.len());
        for lp in &lt.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if version >= 4 {
                r.leader_epoch = LEADER_EPOCH;
            }
            let part = topic.as_ref().and_then(|t| t.partition(lp.partition_index));
            let Some(part) = part else {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
                parts.push(r);
                continue;
            };
            let offsets = store.offsets(part);
            let found = match lp.timestamp {
                -1 => Ok(Some((offsets.log_end, -1))),
                -2 | -4 => Ok(Some((offsets.log_start, -1))),
                -3 => store.max_timestamp(part),
                -5 => Ok(None),
                ts if ts >= 0 => store.offset_for_timestamp(part, ts),
                other => {
                    tracing::info!(
                        timestamp = other,
                        "ListOffsets with an unknown special timestamp"
                    );
                    r.error_code = ResponseError::InvalidRequest.code();
                    parts.push(r);
                    continue;
                }
            };
            match found {
                Ok(Some((offset, ts))) => {
                    r.offset = offset;
                    r.timestamp = ts;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = name, error = %e, "ListOffsets read failed");
                    r.error_code = ResponseError::KafkaStorageError.code();
                }
            }
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(lt.name.clone())
                .with_partitions(parts),
        );
    }
    ready(respond(
        correlation_id,
        version,
        &ListOffsetsResponse::default().with_topics(topics),
    ))
}
