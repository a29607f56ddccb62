//! DeleteTopics (v1-6): by name, or by topic id from v6. The topic's batches, offsets and
//! producer state go with it.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{blocking, errors, str_bytes, topic_name, Call, KafkaApi, Pending};
use crate::services::Topics;

/// DeleteTopics, declared for the API table.
pub struct DeleteTopics;

impl KafkaApi for DeleteTopics {
    const NAME: &'static str = "DeleteTopics";
    type Request = DeleteTopicsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 6;
    const SCHEMA: Schema = SCHEMA;

    const TAKES_ERRORS: bool = true;

    fn error_response(
        call: Call,
        req: &DeleteTopicsRequest,
        code: i16,
    ) -> Option<crate::api::Reply> {
        Some(error_answer(call, req, code))
    }

    fn handle(session: &mut Session, call: Call, req: DeleteTopicsRequest) -> Pending {
        let topics = session.services.topics.clone();
        let access = super::Access::of(session);
        blocking(call, "DeleteTopics", move || {
            let r = delete_all(&topics, call, &req, &access);
            DeleteTopicsResponse::default().with_responses(r)
        })
    }
}

const DELETE_TOPIC_STATE: &[Field] = &[
    f(Ty::Str, 6, ALL),  // name
    f(Ty::Uuid, 6, ALL), // topic_id
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(DELETE_TOPIC_STATE), 6, ALL), // topics
        f(Ty::ArrayStr, 0, 5),                    // topic_names
        f(Ty::I32, 0, ALL),                       // timeout_ms
    ],
    4,
);

fn delete_all(
    topics: &Topics,
    call: Call,
    req: &DeleteTopicsRequest,
    access: &super::Access,
) -> Vec<DeletableTopicResult> {
    // (name, id) pairs as asked: names before v6, names or ids from v6.
    let asked: Vec<(Option<String>, uuid::Uuid)> = if call.version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    asked
        .into_iter()
        .map(|(name, id)| {
            let mut r = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
            let target = match &name {
                Some(n) => Some(n.clone()),
                None => topics.by_id(*id.as_bytes()).map(|t| t.meta.name.clone()),
            };
            let outcome = match target {
                Some(n)
                    if !access.allowed(
                        super::Operation::Delete,
                        super::ResourceType::Topic,
                        &n,
                    ) =>
                {
                    Err((
                        ResponseError::TopicAuthorizationFailed,
                        "Authorization failed.".to_string(),
                    ))
                }
                Some(n) => {
                    if call.version >= 6 {
                        if let Some(t) = topics.get(&n) {
                            r.topic_id = uuid::Uuid::from_bytes(t.meta.id);
                            r.name = Some(topic_name(&n));
                        }
                    }
                    topics
                        .delete(&n)
                        .map_err(|e| (errors::code(&e), e.to_string()))
                }
                None => Err((
                    ResponseError::UnknownTopicId,
                    format!("No topic with id {id}."),
                )),
            };
            if let Err((code, message)) = outcome {
                tracing::info!(topic = ?name, error = %message, "DeleteTopics refused");
                r.error_code = code.code();
                if call.version >= 5 {
                    r.error_message = Some(str_bytes(&message));
                }
            }
            r
        })
        .collect()
}

impl crate::api::ErrorCodes for kafka_protocol::messages::DeleteTopicsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.responses.iter().map(|t| t.error_code))
    }
}

/// An injected error for every topic of the request.
fn error_answer(call: Call, req: &DeleteTopicsRequest, code: i16) -> crate::api::Reply {
    let mut resp = DeleteTopicsResponse::default();
    let names: Vec<_> = if call.version >= 6 {
        req.topics.iter().filter_map(|t| t.name.clone()).collect()
    } else {
        req.topic_names.clone()
    };
    resp.responses = names
        .into_iter()
        .map(|n| {
            DeletableTopicResult::default()
                .with_name(Some(n))
                .with_error_code(code)
        })
        .collect();
    call.respond(&resp)
}
