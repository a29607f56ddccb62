//! Produce (v3+): each partition's record batch is validated and appended as the client sent
//! it, with only the base offset (and leader epoch) rewritten. acks=all and acks=1 answer after
//! the flush that covers the batch (group commit, `flush.on.acks.all`); acks=0 never, and a
//! failed acks=0 request closes the connection as Kafka does. Consumers see a batch once a
//! flush covered it (the high watermark), whatever the acks.

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use kafkabox_storage::StoreError;

use super::Session;
use super::{errors, str_bytes};
use crate::api::{ready, Call, KafkaApi, Pending, Reply};
use crate::services::produce::ProduceError;
use crate::services::Services;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

/// Result of one partition.
struct Outcome {
    error: Option<(ResponseError, String)>,
    /// Records refused individually (index in the batch, why), as Kafka reports them (v8+).
    record_errors: Vec<(i32, String)>,
    base_offset: i64,
    log_start_offset: i64,
    log_append_time: i64,
    write_seq: Option<u64>,
}

impl Outcome {
    fn err(code: ResponseError, message: String) -> Outcome {
        Outcome {
            error: Some((code, message)),
            record_errors: Vec::new(),
            base_offset: -1,
            log_start_offset: -1,
            log_append_time: -1,
            write_seq: None,
        }
    }
}

fn produce_one(
    services: &Services,
    principal: &str,
    transactional_id: Option<&str>,
    version: i16,
    topic: &str,
    index: i32,
    records: Option<&bytes::Bytes>,
) -> Outcome {
    let Some(records) = records else {
        return Outcome::err(
            ResponseError::InvalidRecord,
            "Produce request without records.".into(),
        );
    };
    match services.produce_in(principal, transactional_id, topic, index, records) {
        Ok(p) => Outcome {
            error: None,
            record_errors: Vec::new(),
            base_offset: p.base_offset,
            log_start_offset: p.log_start_offset,
            log_append_time: p.log_append_time,
            write_seq: Some(p.write_seq),
        },
        Err(e) => {
            let (mut code, message) = errors::produce(&e);
            // Produce v11 (KIP-890) says "abort the transaction" with its own code.
            if code == ResponseError::InvalidTxnState && version >= 11 {
                code = ResponseError::TransactionAbortable;
            }
            let mut o = Outcome::err(code, message);
            if let ProduceError::InvalidRecord { record_errors, .. } = e {
                o.record_errors = record_errors;
            }
            o
        }
    }
}

/// Produce, declared for the API table.
pub struct Produce;

impl KafkaApi for Produce {
    const NAME: &'static str = "Produce";
    type Request = ProduceRequest;
    const MIN: i16 = 3;
    const MAX: i16 = 12;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &ProduceRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: ProduceRequest) -> Pending {
        handle(session, call, req)
    }
}

const PARTITION_PRODUCE_DATA: &[Field] = &[
    f(Ty::I32, 0, ALL),   // index
    f(Ty::Bytes, 0, ALL), // records
];
const TOPIC_PRODUCE_DATA: &[Field] = &[
    f(Ty::Str, 0, 12),                            // name
    f(Ty::Uuid, 13, ALL),                         // topic_id
    f(Ty::Array(PARTITION_PRODUCE_DATA), 0, ALL), // partition_data
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                       // transactional_id
        f(Ty::I16, 0, ALL),                       // acks
        f(Ty::I32, 0, ALL),                       // timeout_ms
        f(Ty::Array(TOPIC_PRODUCE_DATA), 0, ALL), // topic_data
    ],
    9,
);

/// WRITE on the topic (once per topic of a request; the ACLs are in memory).
fn write_allowed(session: &Session, topic: &str) -> bool {
    super::allowed(
        session,
        super::Operation::Write,
        super::ResourceType::Topic,
        topic,
    )
}

fn handle(session: &mut Session, call: Call, req: ProduceRequest) -> Pending {
    let acks = req.acks;
    let refuse_all = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            format!("acks must be 0, 1 or -1 (all), got {acks}."),
        ))
    } else {
        req.transactional_id
            .as_ref()
            .filter(|id| {
                !super::allowed(
                    session,
                    super::Operation::Write,
                    super::ResourceType::TransactionalId,
                    id.0.as_str(),
                )
            })
            .map(|id| {
                (
                    ResponseError::TransactionalIdAuthorizationFailed,
                    format!(
                        "Not authorized to write as transactional id '{}'.",
                        crate::services::truncate(id.0.as_str(), 256)
                    ),
                )
            })
    };
    let mut any_error = false;
    let mut max_seq: Option<u64> = None;
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for td in &req.topic_data {
        let topic = td.name.0.as_str();
        let may_write = refuse_all.is_some() || write_allowed(session, topic);
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in &td.partition_data {
            let o = match &refuse_all {
                Some((code, msg)) => Outcome::err(*code, msg.clone()),
                None if !may_write => Outcome::err(
                    ResponseError::TopicAuthorizationFailed,
                    format!(
                        "Not authorized to write to topic '{}'.",
                        crate::services::truncate(topic, 256)
                    ),
                ),
                None => produce_one(
                    &session.services,
                    &session.principal,
                    req.transactional_id.as_ref().map(|id| id.0.as_str()),
                    call.version,
                    topic,
                    pd.index,
                    pd.records.as_ref(),
                ),
            };
            let mut r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(o.base_offset)
                .with_log_append_time_ms(o.log_append_time)
                .with_log_start_offset(o.log_start_offset);
            if let Some((code, msg)) = &o.error {
                any_error = true;
                // Storage errors are logged where they arise (a full disk once, not per batch).
                if *code != ResponseError::KafkaStorageError {
                    tracing::warn!(topic, partition = pd.index, error = ?code, "{msg}");
                }
                r.error_code = code.code();
                r.error_message = Some(str_bytes(msg));
                if call.version >= 8 {
                    r.record_errors = o
                        .record_errors
                        .iter()
                        .map(|(i, m)| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(*i)
                                .with_batch_index_error_message(Some(str_bytes(m)))
                        })
                        .collect();
                }
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
        // acks=1 too: sled has no step between its in-memory buffer and the flush, so the
        // group flush is the first point a kill -9 cannot undo (docs/operations.md).
        Some(seq) if session.services.config.flush_on_acks_all => {
            let services = session.services.clone();
            Box::pin(async move {
                let mut resp = resp;
                if let Err(e) = services.durable(seq).await {
                    mark_unflushed(&mut resp, &e);
                }
                call.respond(&resp)
            })
        }
        _ => call.ready(&resp),
    }
}

/// A failed flush: every partition that was appended reports KAFKA_STORAGE_ERROR, so the
/// producer retries (it is retriable) instead of believing the data durable.
fn mark_unflushed(resp: &mut ProduceResponse, e: &StoreError) {
    tracing::error!("flush failed; acks=1 and acks=all batches answered with KAFKA_STORAGE_ERROR");
    let code = errors::storage(e);
    for t in &mut resp.responses {
        for p in &mut t.partition_responses {
            if p.error_code == 0 {
                p.error_code = code.code();
                p.error_message = Some(str_bytes(&format!("Flush to disk failed: {e}")));
            }
        }
    }
}

impl crate::api::ErrorCodes for kafka_protocol::messages::ProduceResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            self.responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .map(|p| p.error_code),
        )
    }
}

/// An injected error for every partition of the request (acks=0: the connection closes, as
/// Kafka closes it on a failed acks=0 produce).
fn error_answer(call: Call, req: &ProduceRequest, code: i16) -> Reply {
    if req.acks == 0 {
        return Reply::Close;
    }
    let mut resp = ProduceResponse::default();
    resp.responses = req
        .topic_data
        .iter()
        .map(|td| {
            TopicProduceResponse::default()
                .with_name(td.name.clone())
                .with_topic_id(td.topic_id)
                .with_partition_responses(
                    td.partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(code)
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    call.respond(&resp)
}
