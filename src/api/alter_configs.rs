//! AlterConfigs (v0-2): replaces a topic's configs, or the dynamic configs of the broker
//! (name "0") or of the cluster default (name ""); names not given go back to their defaults.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::describe_configs::{BROKER, TOPIC};
use super::Session;
use super::{blocking, errors, str_bytes, Call, KafkaApi, Pending};

/// AlterConfigs, declared for the API table.
pub struct AlterConfigs;

impl KafkaApi for AlterConfigs {
    const NAME: &'static str = "AlterConfigs";
    type Request = AlterConfigsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 2;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: AlterConfigsRequest) -> Pending {
        let topics = session.services.topics.clone();
        let access = super::Access::of(session);
        blocking(call, "AlterConfigs", move || {
            let r = {
                req.resources
                    .iter()
                    .map(|res| {
                        let ops: Vec<(String, u8, Option<String>)> = res
                            .configs
                            .iter()
                            .map(|c| {
                                (
                                    c.name.to_string(),
                                    0,
                                    c.value.as_ref().map(|v| v.to_string()),
                                )
                            })
                            .collect();
                        let outcome = alter(
                            &topics,
                            &access,
                            res.resource_type,
                            res.resource_name.as_str(),
                            &ops,
                            true,
                            req.validate_only,
                        );
                        let mut r = AlterConfigsResourceResponse::default()
                            .with_resource_type(res.resource_type)
                            .with_resource_name(res.resource_name.clone());
                        if let Err((code, message)) = outcome {
                            r.error_code = code.code();
                            r.error_message = Some(str_bytes(&message));
                        }
                        r
                    })
                    .collect::<Vec<_>>()
            };
            AlterConfigsResponse::default().with_responses(r)
        })
    }
}

/// Shared with IncrementalAlterConfigs: applies `ops` to a topic, or refuses broker changes.
#[allow(clippy::too_many_arguments)]
pub fn alter(
    topics: &crate::services::Topics,
    access: &super::Access,
    resource_type: i8,
    name: &str,
    ops: &[(String, u8, Option<String>)],
    replace: bool,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if !super::describe_configs::config_allowed(
        access,
        super::Operation::AlterConfigs,
        resource_type,
        name,
    ) {
        return Err((
            if resource_type == TOPIC {
                ResponseError::TopicAuthorizationFailed
            } else {
                ResponseError::ClusterAuthorizationFailed
            },
            "Authorization failed.".to_string(),
        ));
    }
    match resource_type {
        TOPIC => topics
            .alter_configs(name, ops, replace, validate_only)
            .map_err(|e| {
                tracing::info!(topic = name, error = %e, "config change refused");
                (errors::code(&e), e.to_string())
            }),
        BROKER => topics
            .alter_broker_configs(name, ops, replace, validate_only)
            .map_err(|e| {
                tracing::info!(broker = name, error = %e, "broker config change refused");
                (errors::code(&e), e.to_string())
            }),
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other}."),
        )),
    }
}

const ALTERABLE_CONFIG: &[Field] = &[
    f(Ty::Str, 0, ALL), // name
    f(Ty::Str, 0, ALL), // value
];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[
    f(Ty::I8, 0, ALL),                      // resource_type
    f(Ty::Str, 0, ALL),                     // resource_name
    f(Ty::Array(ALTERABLE_CONFIG), 0, ALL), // configs
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(ALTER_CONFIGS_RESOURCE), 0, ALL), // resources
        f(Ty::I8, 0, ALL),                            // validate_only
    ],
    2,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::AlterConfigsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.responses.iter().map(|r| r.error_code))
    }
}
