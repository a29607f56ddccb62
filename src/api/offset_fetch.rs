//! OffsetFetch (v1-9): committed offsets of one group (v1-7) or several (v8+), of named
//! partitions or of every partition the group committed. Pipeline stages answer as the
//! read-only groups `kafkabox.<stage>`.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};
use kafkabox_storage::CommittedOffset;

use super::Session;
use super::{blocking, errors, str_bytes, topic_name, Call, KafkaApi, Pending};
use crate::services::groups::Coordinator;

/// OffsetFetch, declared for the API table.
pub struct OffsetFetch;

impl KafkaApi for OffsetFetch {
    const NAME: &'static str = "OffsetFetch";
    type Request = OffsetFetchRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 9;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &OffsetFetchRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: OffsetFetchRequest) -> Pending {
        handle(session, call, req)
    }
}

const OFFSET_FETCH_REQUEST_TOPIC: &[Field] = &[
    f(Ty::Str, 0, 7),           // name
    f(Ty::ArrayFixed(4), 0, 7), // partition_indexes
];
const OFFSET_FETCH_REQUEST_TOPICS: &[Field] = &[
    f(Ty::Str, 8, ALL),           // name
    f(Ty::ArrayFixed(4), 8, ALL), // partition_indexes
];
const OFFSET_FETCH_REQUEST_GROUP: &[Field] = &[
    f(Ty::Str, 8, ALL),                                // group_id
    f(Ty::Str, 9, ALL),                                // member_id
    f(Ty::I32, 9, ALL),                                // member_epoch
    f(Ty::Array(OFFSET_FETCH_REQUEST_TOPICS), 8, ALL), // topics
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, 7),                                 // group_id
        f(Ty::Array(OFFSET_FETCH_REQUEST_TOPIC), 0, 7),   // topics
        f(Ty::Array(OFFSET_FETCH_REQUEST_GROUP), 8, ALL), // groups
        f(Ty::I8, 7, ALL),                                // require_stable
    ],
    6,
);

type Fetched = Result<Vec<(String, i32, Option<CommittedOffset>)>, i16>;

/// A group's committed offsets: DESCRIBE on the group needed, and only topics the client may
/// DESCRIBE are shown (when ACLs are enforced).
fn fetch(
    groups: &Coordinator,
    access: &super::Access,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Fetched {
    if !access.allowed(
        super::Operation::Describe,
        super::ResourceType::Group,
        group,
    ) {
        return Err(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let mut rows = groups
        .fetch_offsets(group, topics)
        .map_err(|e| errors::code(&e).code())?;
    rows.retain(|(t, _, _)| access.may(super::Operation::Describe, super::ResourceType::Topic, t));
    Ok(rows)
}

/// (topic -> [(partition, offset, epoch, metadata)]) in request order of topics.
fn by_topic(
    rows: &[(String, i32, Option<CommittedOffset>)],
) -> BTreeMap<String, Vec<(i32, i64, i32, String)>> {
    let mut m: BTreeMap<String, Vec<(i32, i64, i32, String)>> = BTreeMap::new();
    for (t, p, c) in rows {
        let (o, e, md) = match c {
            Some(c) => (c.offset, c.leader_epoch, c.metadata.clone()),
            None => (-1, -1, String::new()),
        };
        m.entry(t.clone()).or_default().push((*p, o, e, md));
    }
    m
}

fn handle(session: &mut Session, call: Call, req: OffsetFetchRequest) -> Pending {
    let groups = session.services.groups.clone();
    let transactions = session.services.transactions.clone();
    let access = super::Access::of(session);
    let version = call.version;
    // KIP-447: a consumer that asks for stable offsets waits (retries) while a transaction
    // holds offsets of its group that it has not committed yet.
    let require_stable = version >= 7 && req.require_stable;
    blocking(call, "OffsetFetch", move || {
        let resp = {
            let mut resp = OffsetFetchResponse::default();
            if version < 8 {
                let topics = req.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                match fetch(&groups, &access, req.group_id.0.as_str(), topics) {
                    Ok(rows) => {
                        resp.topics = by_topic(&rows)
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopic::default()
                                    .with_name(topic_name(&t))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o, e, md)| {
                                                let mut r = OffsetFetchResponsePartition::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_metadata(Some(str_bytes(&md)));
                                                if version >= 5 {
                                                    r.committed_leader_epoch = e;
                                                }
                                                r
                                            })
                                            .collect(),
                                    )
                            })
                            .collect();
                    }
                    Err(code) => {
                        if version >= 2 {
                            resp.error_code = code;
                        }
                    }
                }
            } else {
                for g in &req.groups {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let mut out =
                        OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                    match fetch(&groups, &access, g.group_id.0.as_str(), topics) {
                        Ok(rows) => {
                            out.topics = by_topic(&rows)
                                .into_iter()
                                .map(|(t, ps)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(topic_name(&t))
                                        .with_partitions(
                                            ps.into_iter()
                                                .map(|(p, o, e, md)| {
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(p)
                                                        .with_committed_offset(o)
                                                        .with_committed_leader_epoch(e)
                                                        .with_metadata(Some(str_bytes(&md)))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect();
                        }
                        Err(code) => out.error_code = code,
                    }
                    resp.groups.push(out);
                }
            }
            resp
        };
        let mut resp = resp;
        if require_stable {
            let unstable = ResponseError::UnstableOffsetCommit.code();
            let group = req.group_id.0.as_str();
            for t in &mut resp.topics {
                for p in &mut t.partitions {
                    if transactions.holds_offset(group, t.name.0.as_str(), p.partition_index) {
                        p.error_code = unstable;
                        p.committed_offset = -1;
                    }
                }
            }
            for g in &mut resp.groups {
                let group = g.group_id.0.to_string();
                for t in &mut g.topics {
                    for p in &mut t.partitions {
                        if transactions.holds_offset(&group, t.name.0.as_str(), p.partition_index) {
                            p.error_code = unstable;
                            p.committed_offset = -1;
                        }
                    }
                }
            }
        }
        resp
    })
}

impl crate::api::ErrorCodes for kafka_protocol::messages::OffsetFetchResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code)
                .chain(
                    self.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code),
                )
                .chain(self.groups.iter().flat_map(|g| {
                    std::iter::once(g.error_code).chain(
                        g.topics
                            .iter()
                            .flat_map(|t| &t.partitions)
                            .map(|p| p.error_code),
                    )
                })),
        )
    }
}

/// An injected error: the top-level (v2-7) or each group's (v8+) error code.
fn error_answer(call: Call, req: &OffsetFetchRequest, code: i16) -> crate::api::Reply {
    let mut resp = OffsetFetchResponse::default();
    if call.version >= 8 {
        resp.groups = req
            .groups
            .iter()
            .map(|g| {
                kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code)
            })
            .collect();
    } else {
        resp.error_code = code;
    }
    call.respond(&resp)
}
