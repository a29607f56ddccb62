//! IncrementalAlterConfigs (v0-1): SET, DELETE, APPEND and SUBTRACT on a topic's configs;
//! SET and DELETE on the dynamic configs of the broker (name "0") or of the cluster default
//! (name "").

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::alter_configs::alter;
use super::Session;
use super::{blocking, str_bytes, Call, KafkaApi, Pending};

/// IncrementalAlterConfigs, declared for the API table.
pub struct IncrementalAlterConfigs;

impl KafkaApi for IncrementalAlterConfigs {
    const NAME: &'static str = "IncrementalAlterConfigs";
    type Request = IncrementalAlterConfigsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 1;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: IncrementalAlterConfigsRequest) -> Pending {
        let topics = session.services.topics.clone();
        let access = super::Access::of(session);
        blocking(call, "IncrementalAlterConfigs", move || {
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
                                    u8::try_from(c.config_operation).unwrap_or(u8::MAX),
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
                            false,
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
            IncrementalAlterConfigsResponse::default().with_responses(r)
        })
    }
}

const ALTERABLE_CONFIG: &[Field] = &[
    f(Ty::Str, 0, ALL), // name
    f(Ty::I8, 0, ALL),  // config_operation
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
    1,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::IncrementalAlterConfigsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.responses.iter().map(|r| r.error_code))
    }
}
