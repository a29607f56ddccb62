//! Fetch (v4-12): serves stored batches unchanged, starting with the batch that holds the fetch
//! offset (the client skips the records before it). Long polling waits for an append, not a
//! timer, up to `max_wait_ms`. Byte limits follow KIP-74: the first batch of the response is
//! returned whole even past the limits, then batches stop at them. No fetch sessions: the
//! response's session id is always 0, which clients treat as "full fetches only".
//! read_committed fetches (isolation level 1) stop at the last stable offset and name the
//! aborted transactions of what they return, so the client drops those records.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Session;
use crate::api::{Call, KafkaApi, Pending, Reply};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

/// Kafka's broker-side `fetch.max.bytes` default: the most one response carries.
const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;
/// Longest long poll honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);

struct Built {
    resp: FetchResponse,
    bytes: usize,
    has_error: bool,
}

fn build(
    broker: &crate::services::Services,
    req: &FetchRequest,
    denied: &std::collections::HashSet<String>,
) -> Built {
    let store = &broker.topics;
    let mut remaining = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(FETCH_MAX_BYTES);
    let mut total = 0usize;
    let mut has_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let name = ft.topic.0.as_str();
        let topic = store.get(name);
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(bytes::Bytes::new()));
            if denied.contains(name) {
                has_error = true;
                pd.error_code = ResponseError::TopicAuthorizationFailed.code();
                parts.push(pd);
                continue;
            }
            let part = topic.as_ref().and_then(|t| t.partition(fp.partition));
            let Some(part) = part else {
                has_error = true;
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                parts.push(pd);
                continue;
            };
            let pmax = usize::try_from(fp.partition_max_bytes)
                .unwrap_or(0)
                .min(remaining);
            let mut buf = BytesMut::new();
            let committed = req.isolation_level == 1;
            // read_uncommitted answers no aborted transactions (null), read_committed a list.
            let mut aborted = None;
            let read = if pmax == 0 && total > 0 {
                Ok(Some(store.offsets(part)))
            } else if committed {
                store
                    .read_committed(part, fp.fetch_offset, pmax, total == 0, &mut buf)
                    .map(|r| {
                        r.map(|r| {
                            aborted = Some(
                                r.aborted
                                    .iter()
                                    .map(|t| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(t.producer_id))
                                            .with_first_offset(t.first_offset)
                                    })
                                    .collect(),
                            );
                            r.offsets
                        })
                    })
            } else {
                store.read(part, fp.fetch_offset, pmax, total == 0, &mut buf)
            };
            match read {
                Ok(Some(offsets)) => {
                    pd.high_watermark = offsets.log_end;
                    // Kafka reports the last stable offset whatever the isolation level.
                    pd.last_stable_offset = store
                        .last_stable_offset(part)
                        .unwrap_or(offsets.log_end)
                        .min(offsets.log_end);
                    pd.aborted_transactions = if committed {
                        Some(aborted.unwrap_or_default())
                    } else {
                        None
                    };
                    pd.log_start_offset = offsets.log_start;
                    total += buf.len();
                    remaining = remaining.saturating_sub(buf.len());
                    pd.records = Some(buf.freeze());
                }
                Ok(None) => {
                    has_error = true;
                    let offsets = store.offsets(part);
                    tracing::debug!(
                        topic = name,
                        partition = fp.partition,
                        offset = fp.fetch_offset,
                        log_start = offsets.log_start,
                        log_end = offsets.log_end,
                        "fetch offset out of range"
                    );
                    pd.error_code = ResponseError::OffsetOutOfRange.code();
                    pd.high_watermark = offsets.log_end;
                    pd.last_stable_offset = offsets.log_end;
                    pd.log_start_offset = offsets.log_start;
                }
                Err(e) => {
                    has_error = true;
                    pd.error_code = super::errors::storage(&e).code();
                }
            }
            parts.push(pd);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_partitions(parts),
        );
    }
    Built {
        resp: FetchResponse::default().with_responses(topics),
        bytes: total,
        has_error,
    }
}

/// Fetch, declared for the API table.
pub struct Fetch;

impl KafkaApi for Fetch {
    const NAME: &'static str = "Fetch";
    type Request = FetchRequest;
    const MIN: i16 = 4;
    const MAX: i16 = 12;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(call: Call, req: &FetchRequest, code: i16) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: FetchRequest) -> Pending {
        handle(session, call, req)
    }
}

const FETCH_PARTITION: &[Field] = &[
    f(Ty::I32, 0, ALL),  // partition
    f(Ty::I32, 9, ALL),  // current_leader_epoch
    f(Ty::I64, 0, ALL),  // fetch_offset
    f(Ty::I32, 12, ALL), // last_fetched_epoch
    f(Ty::I64, 5, ALL),  // log_start_offset
    f(Ty::I32, 0, ALL),  // partition_max_bytes
];
const FETCH_TOPIC: &[Field] = &[
    f(Ty::Str, 0, 12),                     // topic
    f(Ty::Uuid, 13, ALL),                  // topic_id
    f(Ty::Array(FETCH_PARTITION), 0, ALL), // partitions
];
const FORGOTTEN_TOPIC: &[Field] = &[
    f(Ty::Str, 7, 12),            // topic
    f(Ty::Uuid, 13, ALL),         // topic_id
    f(Ty::ArrayFixed(4), 7, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::I32, 0, 14),                     // replica_id
        f(Ty::I32, 0, ALL),                    // max_wait_ms
        f(Ty::I32, 0, ALL),                    // min_bytes
        f(Ty::I32, 0, ALL),                    // max_bytes
        f(Ty::I8, 0, ALL),                     // isolation_level
        f(Ty::I32, 7, ALL),                    // session_id
        f(Ty::I32, 7, ALL),                    // session_epoch
        f(Ty::Array(FETCH_TOPIC), 0, ALL),     // topics
        f(Ty::Array(FORGOTTEN_TOPIC), 7, ALL), // forgotten_topics_data
        f(Ty::Str, 11, ALL),                   // rack_id
    ],
    12,
);

fn handle(session: &mut Session, call: Call, req: FetchRequest) -> Pending {
    let broker = session.services.clone();
    // Which groups read committed is learnt from their clients' fetches (lag is measured
    // against the last stable offset for them).
    broker.groups.note_fetch(
        &session.client_id,
        session.peer.ip(),
        req.isolation_level == 1,
    );
    // READ on each topic (when ACLs are enforced); refused partitions answer
    // TOPIC_AUTHORIZATION_FAILED.
    let denied: std::collections::HashSet<String> = req
        .topics
        .iter()
        .map(|t| t.topic.0.as_str())
        .filter(|t| {
            !super::allowed(
                session,
                super::Operation::Read,
                super::ResourceType::Topic,
                t,
            )
        })
        .map(str::to_string)
        .collect();
    let denied = std::sync::Arc::new(denied);
    Box::pin(async move {
        if call.version >= 7 && (req.session_id != 0 || req.session_epoch > 0) {
            // kafkabox never hands out a session, so an incremental fetch cannot be one of ours.
            let resp = FetchResponse::default()
                .with_error_code(ResponseError::FetchSessionIdNotFound.code());
            return call.respond(&resp);
        }
        let mut appends = broker.topics.subscribe_appends();
        let mut shutdown = broker.shutdown.clone();
        let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
        // Bounded: every pass waits for an append, and the loop ends at the deadline.
        let req = std::sync::Arc::new(req);
        loop {
            appends.borrow_and_update();
            // Reading the store is blocking work: never on a runtime worker.
            let built = {
                let (broker, req, denied) = (broker.clone(), req.clone(), denied.clone());
                match tokio::task::spawn_blocking(move || build(&broker, &req, &denied)).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "fetch task failed");
                        return Reply::Close;
                    }
                }
            };
            if built.bytes >= min_bytes
                || built.has_error
                || tokio::time::Instant::now() >= deadline
                || *shutdown.borrow()
            {
                return call.respond(&built.resp);
            }
            tokio::select! {
                r = appends.changed() => if r.is_err() { return call.respond(&built.resp) },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::FetchResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(
                self.responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.error_code),
            ),
        )
    }
}

/// An injected error: fetch-session errors at the top, others on every partition.
fn error_answer(call: Call, req: &FetchRequest, code: i16) -> Reply {
    let mut resp = FetchResponse::default();
    let session_error = code == ResponseError::FetchSessionIdNotFound.code()
        || code == ResponseError::InvalidFetchSessionEpoch.code();
    if session_error {
        resp.error_code = code;
    } else {
        resp.session_id = req.session_id.max(0);
        resp.responses = req
            .topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(code)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
    }
    call.respond(&resp)
}
