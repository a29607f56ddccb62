//! ConsumerGroupHeartbeat (v0-1): the KIP-848 consumer protocol. The broker assigns (uniform or
//! range) and reconciles; a thin translation to `services::groups` between topic ids and names.

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{errors, str_bytes, Call, KafkaApi, Pending};
use crate::services::groups::consumer::{Heartbeat, Tp};
use crate::services::mono_ms;

/// ConsumerGroupHeartbeat, declared for the API table.
pub struct ConsumerGroupHeartbeat;

impl KafkaApi for ConsumerGroupHeartbeat {
    const NAME: &'static str = "ConsumerGroupHeartbeat";
    type Request = ConsumerGroupHeartbeatRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 1;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: ConsumerGroupHeartbeatRequest) -> Pending {
        if let Some(code) = super::group_refused(session, super::Operation::Read, &req.group_id) {
            return call.ready(&ConsumerGroupHeartbeatResponse::default().with_error_code(code));
        }
        let resp = answer(session, call, req);
        let services = session.services.clone();
        Box::pin(async move {
            // A new group's record is durable before the member hears of it.
            match services.groups.records_durable().await {
                Ok(()) => call.respond(&resp),
                Err(e) => call.respond(
                    &ConsumerGroupHeartbeatResponse::default()
                        .with_error_code(errors::storage(&e).code()),
                ),
            }
        })
    }
}

const TOPIC_PARTITIONS: &[Field] = &[
    f(Ty::Uuid, 0, ALL),          // topic_id
    f(Ty::ArrayFixed(4), 0, ALL), // partitions
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL),                     // group_id
        f(Ty::Str, 0, ALL),                     // member_id
        f(Ty::I32, 0, ALL),                     // member_epoch
        f(Ty::Str, 0, ALL),                     // instance_id
        f(Ty::Str, 0, ALL),                     // rack_id
        f(Ty::I32, 0, ALL),                     // rebalance_timeout_ms
        f(Ty::ArrayStr, 0, ALL),                // subscribed_topic_names
        f(Ty::Str, 1, ALL),                     // subscribed_topic_regex
        f(Ty::Str, 0, ALL),                     // server_assignor
        f(Ty::Array(TOPIC_PARTITIONS), 0, ALL), // topic_partitions
    ],
    0,
);

fn error(code: ResponseError, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(&message)))
}

fn answer(
    session: &Session,
    call: Call,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let topics = &session.services.topics;
    tracing::debug!(version = call.version, member_id = %req.member_id.as_str(), epoch = req.member_epoch,
        topics = ?req.subscribed_topic_names, regex = ?req.subscribed_topic_regex, assignor = ?req.server_assignor,
        owned = ?req.topic_partitions.as_ref().map(|t| t.len()), "ConsumerGroupHeartbeat");
    let mut member_id = req.member_id.to_string();
    if member_id.is_empty() {
        if call.version >= 1 || req.member_epoch != 0 {
            return error(
                ResponseError::InvalidRequest,
                "MemberId can't be empty.".into(),
            );
        }
        // v0: the broker names a new member.
        member_id = uuid::Uuid::new_v4().to_string();
    }
    // librdkafka sends an empty regex for "none".
    if req
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return error(
            ResponseError::InvalidRequest,
            "kafkabox does not support regular expression subscriptions yet; subscribe to topic names".into(),
        );
    }
    if req.member_epoch == 0 && req.subscribed_topic_names.is_none() {
        return error(
            ResponseError::InvalidRequest,
            "SubscribedTopicNames must be set in first request.".into(),
        );
    }
    // What the member leaves with the coordinator (its subscription, the partitions it owns,
    // each kept with its topic's name) is bounded like a classic member's metadata.
    let limit = session.services.config.group_max_member_metadata_bytes;
    let subscription: usize = req
        .subscribed_topic_names
        .as_ref()
        .map(|ts| ts.iter().map(|t| t.0.as_str().len()).sum())
        .unwrap_or(0);
    let owned_size: usize = req
        .topic_partitions
        .as_ref()
        .map(|tps| tps.iter().map(|tp| 16 + 4 * tp.partitions.len()).sum())
        .unwrap_or(0);
    if subscription + owned_size > limit {
        return error(
            ResponseError::InvalidRequest,
            format!(
                "the member's subscribed topic names and owned partitions take {} bytes, over group.max.member.metadata.bytes ({limit})",
                subscription + owned_size
            ),
        );
    }
    let owned: Option<Vec<Tp>> = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .filter_map(|tp| {
                topics
                    .by_id(*tp.topic_id.as_bytes())
                    .map(|t| (t.meta.name.clone(), tp.partitions.clone()))
            })
            .flat_map(|(name, ps)| ps.into_iter().map(move |p| (name.clone(), p)))
            .collect()
    });
    let hb = Heartbeat {
        member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: session.client_id.clone(),
        client_host: format!("/{}", session.peer.ip()),
    };
    match session
        .services
        .groups
        .consumer_heartbeat(req.group_id.0.as_str(), hb, mono_ms())
    {
        Ok(a) => {
            let mut resp = ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(str_bytes(&a.member_id)))
                .with_member_epoch(a.member_epoch)
                .with_heartbeat_interval_ms(a.heartbeat_interval_ms);
            resp.assignment = a.assignment.map(|tps| {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in tps {
                    by_topic.entry(t).or_default().push(p);
                }
                Assignment::default().with_topic_partitions(
                    by_topic
                        .into_iter()
                        .filter_map(|(t, ps)| {
                            topics.get(&t).map(|topic| {
                                TopicPartitions::default()
                                    .with_topic_id(uuid::Uuid::from_bytes(topic.meta.id))
                                    .with_partitions(ps)
                            })
                        })
                        .collect(),
                )
            });
            resp
        }
        Err(e) => {
            tracing::debug!(group = %req.group_id.0.as_str(), error = %e, "ConsumerGroupHeartbeat refused");
            error(errors::code(&e), e.to_string())
        }
    }
}

impl crate::api::ErrorCodes for kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
