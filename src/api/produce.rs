//! Produce (v3+): each partition's record batch is validated and appended as the client sent
//! it, with only the base offset (and leader epoch) rewritten. acks=all answers after the flush
//! that covers the batch (group commit, `flush.on.acks.all`); acks=1 after the append; acks=0
//! never, and a failed acks=0 request closes the connection as Kafka does.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::batch;
use kafkabox_storage::{AppendError, StoreError};

use super::str_bytes;
use crate::broker::{ready, respond, ConnCtx, Pending, Reply};

/// Result of one partition: (error, base offset, log start offset, message).
struct Outcome {
    error: Option<(ResponseError, String)>,
    base_offset: i64,
    log_start_offset: i64,
    write_seq: Option<u64>,
}

impl Outcome {
    fn err(code: ResponseError, message: String) -> Outcome {
        Outcome {
            error: Some((code, message)),
            base_offset: -1,
            log_start_offset: -1,
            write_seq: None,
        }
    }
}

fn produce_one(ctx: &ConnCtx, topic: &str, index: i32, records: Option<&bytes::Bytes>) -> Outcome {
    let broker = &ctx.broker;
    let Some(t) = broker.store.topic(topic) else {
        return Outcome::err(
            ResponseError::UnknownTopicOrPartition,
            format!("This server does not host topic '{topic}'."),
        );
    };
    let Some(part) = t.partition(index) else {
        return Outcome::err(
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{topic}' has no partition {index}."),
        );
    };
    let Some(records) = records else {
        return Outcome::err(
            ResponseError::InvalidRecord,
            "Produce request without records.".into(),
        );
    };
    let header = match batch::validate_produce_batch(
        records,
        broker.config.message_max_bytes,
        broker.config.inflate_limit(),
    ) {
        Ok(h) => h,
        Err(e) => return Outcome::err(e.kafka_error(), e.to_string()),
    };
    if header.base_offset != 0 {
        return Outcome::err(
            ResponseError::InvalidRecord,
            format!(
                "Record batch base offset must be 0 in a produce request, got {}.",
                header.base_offset
            ),
        );
    }
    if let Some(contract) = broker.reject_contracts.get(topic) {
        if let Err(message) =
            check_records(contract, records, broker.config.max_inflated_batch_bytes)
        {
            return Outcome::err(ResponseError::InvalidRecord, message);
        }
    }
    if header.is_transactional() {
        return Outcome::err(
            ResponseError::InvalidRecord,
            "Transactional record batches are not supported by kafkabox.".into(),
        );
    }
    match broker.store.append(part, records, &header) {
        Ok(a) => Outcome {
            error: None,
            base_offset: a.base_offset,
            log_start_offset: a.log_start_offset,
            write_seq: Some(a.write_seq),
        },
        Err(AppendError::OutOfOrderSequence { expected, got }) => Outcome::err(
            ResponseError::OutOfOrderSequenceNumber,
            format!(
                "Out of order sequence number for producer {}: expected {expected}, got {got}.",
                header.producer_id
            ),
        ),
        Err(e @ AppendError::InvalidProducerEpoch { .. }) => {
            Outcome::err(ResponseError::InvalidProducerEpoch, e.to_string())
        }
        Err(e @ AppendError::UnknownProducerId(_)) => {
            Outcome::err(ResponseError::UnknownProducerId, e.to_string())
        }
        Err(AppendError::Store(e)) => {
            tracing::error!(topic, partition = index, error = %e, "append failed");
            Outcome::err(
                ResponseError::KafkaStorageError,
                format!("Storage error: {e}"),
            )
        }
    }
}

/// The reject policy: every record of the batch must satisfy the contract; the first that does
/// not fails the whole batch, as Kafka fails a batch with an invalid record.
fn check_records(
    contract: &crate::contract::Contract,
    batch: &[u8],
    inflate_limit: usize,
) -> Result<(), String> {
    let (_, records) = batch::decode_batch(batch, inflate_limit).map_err(|e| e.to_string())?;
    for (i, r) in records.iter().enumerate() {
        if let Err(rejection) = contract.check(r.value.as_deref()) {
            return Err(format!(
                "record {i} breaks the customer-events contract: {}",
                rejection.reason
            ));
        }
    }
    Ok(())
}

pub fn handle(
    ctx: &Arc<ConnCtx>,
    correlation_id: i32,
    version: i16,
    req: ProduceRequest,
) -> Pending {
    let acks = req.acks;
    let refuse_all = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            format!("acks must be 0, 1 or -1 (all), got {acks}."),
        ))
    } else if req.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "kafkabox does not support transactions.".to_string(),
        ))
    } else {
        None
    };
    let mut any_error = false;
    let mut max_seq: Option<u64> = None;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for td in &req.topic_data {
        let topic = td.name.0.as_str();
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in &td.partition_data {
            let o = match &refuse_all {
                Some((code, msg)) => Outcome::err(*code, msg.clone()),
                None => produce_one(ctx, topic, pd.index, pd.records.as_ref()),
            };
            let mut r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(o.base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(o.log_start_offset);
            if let Some((code, msg)) = &o.error {
                any_error = true;
                tracing::warn!(topic, partition = pd.index, error = ?code, "{msg}");
                r.error_code = code.code();
                r.error_message = Some(str_bytes(msg));
            }
            if let Some(s) = o.write_seq {
                max_seq = Some(max_seq.map_or(s, |m| m.max(s)));
            }
            parts.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(td.name.clone())
                .with_partition_responses(parts),
        );
    }
    if acks == 0 {
        return ready(if any_error {
            Reply::Close
        } else {
            Reply::Nothing
        });
    }
    let resp = ProduceResponse::default().with_responses(responses);
    match max_seq {
        Some(seq) if acks == -1 && ctx.broker.config.flush_on_acks_all => {
            let store = ctx.broker.store.clone();
            Box::pin(async move {
                let mut resp = resp;
                if let Err(e) = store.wait_durable(seq).await {
                    mark_unflushed(&mut resp, &e);
                }
                respond(correlation_id, version, &resp)
            })
        }
        _ => ready(respond(correlation_id, version, &resp)),
    }
}

/// A failed flush: every partition that was appended reports KAFKA_STORAGE_ERROR, so the
/// producer retries (it is retriable) instead of believing the data durable.
fn mark_unflushed(resp: &mut ProduceResponse, e: &StoreError) {
    tracing::error!(error = %e, "flush failed; acks=all batches answered with KAFKA_STORAGE_ERROR");
    for t in &mut resp.responses {
        for p in &mut t.partition_responses {
            if p.error_code == 0 {
                p.error_code = ResponseError::KafkaStorageError.code();
                p.error_message = Some(str_bytes(&format!("Flush to disk failed: {e}")));
            }
        }
    }
}
