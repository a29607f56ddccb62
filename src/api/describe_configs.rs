//! DescribeConfigs (v1-4): every config of a topic (Kafka's names, values, sources, synonyms,
//! types) and the broker's configs (most set at start-up; the dynamic ones also at runtime).
//! Also what the config APIs share: Kafka's resource types, the ACL check of a config
//! resource, and Kafka's numbering of config sources and types (CreateTopics v5+ reports
//! sources too).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{str_bytes, Call, KafkaApi, Pending};
use crate::services::topics::{ConfigSource, ConfigType, ConfigValue};

/// Kafka's resource types (ConfigResource.Type).
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;
pub const BROKER_LOGGER: i8 = 8;

/// Kafka's number for where a config value comes from (DescribeConfigsResponse.ConfigSource).
pub fn config_source_code(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::Topic => 1,
        ConfigSource::DynamicBroker => 2,
        ConfigSource::DynamicDefault => 3,
        ConfigSource::Broker => 4,
        ConfigSource::Default => 5,
    }
}

/// Kafka's number for a config's value type (DescribeConfigsResponse.ConfigType, v3+).
pub fn config_type_code(ty: ConfigType) -> i8 {
    match ty {
        ConfigType::Boolean => 1,
        ConfigType::String => 2,
        ConfigType::Int => 3,
        ConfigType::Short => 4,
        ConfigType::Long => 5,
        ConfigType::Double => 6,
        ConfigType::List => 7,
        ConfigType::Class => 8,
        ConfigType::Password => 9,
    }
}

/// Whether `access` may do `op` (DESCRIBE_CONFIGS, ALTER_CONFIGS) on a config resource: a
/// topic's are the topic's, the broker's are the cluster's.
pub fn config_allowed(
    access: &super::Access,
    op: super::Operation,
    resource_type: i8,
    name: &str,
) -> bool {
    match resource_type {
        TOPIC => access.allowed(op, super::ResourceType::Topic, name),
        _ => access.allowed(
            op,
            super::ResourceType::Cluster,
            crate::services::acl::CLUSTER_NAME,
        ),
    }
}

/// DescribeConfigs, declared for the API table.
pub struct DescribeConfigs;

impl KafkaApi for DescribeConfigs {
    const NAME: &'static str = "DescribeConfigs";
    type Request = DescribeConfigsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeConfigsRequest) -> Pending {
        let topics = &session.services.topics;
        let access = super::Access::of(session);
        let results = req
            .resources
            .iter()
            .map(|res| {
                let mut r = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let name = res.resource_name.as_str();
                let keys: Option<Vec<String>> = res
                    .configuration_keys
                    .as_ref()
                    .map(|k| k.iter().map(|s| s.to_string()).collect());
                let values: Result<Vec<ConfigValue>, (ResponseError, String)> = match res
                    .resource_type
                {
                    t if !config_allowed(&access, super::Operation::DescribeConfigs, t, name) => {
                        Err((
                            if t == TOPIC {
                                ResponseError::TopicAuthorizationFailed
                            } else {
                                ResponseError::ClusterAuthorizationFailed
                            },
                            "Authorization failed.".to_string(),
                        ))
                    }
                    TOPIC => match topics.get(name) {
                        Some(t) => Ok(topics.describe_configs(&t, keys.as_deref())),
                        None => Err((
                            ResponseError::UnknownTopicOrPartition,
                            format!("Topic {name} does not exist."),
                        )),
                    },
                    BROKER if name.is_empty() || name == "0" => {
                        let all = topics.broker_configs();
                        Ok(all
                            .into_iter()
                            .filter(|c| keys.as_ref().is_none_or(|k| k.contains(&c.name)))
                            .collect())
                    }
                    BROKER => Err((
                        ResponseError::InvalidRequest,
                        format!("Broker {name} does not exist; kafkabox is broker 0."),
                    )),
                    BROKER_LOGGER => Ok(Vec::new()),
                    other => Err((
                        ResponseError::InvalidRequest,
                        format!("Unsupported resource type {other}."),
                    )),
                };
                match values {
                    Ok(values) => {
                        r.configs = values
                            .iter()
                            .map(|c| describe(c, req.include_synonyms, call.version))
                            .collect();
                    }
                    Err((code, message)) => {
                        r.error_code = code.code();
                        r.error_message = Some(str_bytes(&message));
                    }
                }
                r
            })
            .collect();
        call.ready(&DescribeConfigsResponse::default().with_results(results))
    }
}

fn describe(c: &ConfigValue, synonyms: bool, version: i16) -> DescribeConfigsResourceResult {
    // A sensitive value is never sent (Kafka sends null).
    let value = c.value.as_deref().filter(|_| !c.sensitive).map(str_bytes);
    let mut r = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&c.name))
        .with_value(value.clone())
        .with_read_only(c.read_only)
        .with_config_source(config_source_code(c.source))
        .with_is_sensitive(c.sensitive);
    if synonyms {
        let mut syn = Vec::new();
        if c.source != ConfigSource::Default
            && c.source != ConfigSource::Broker
            && c.synonym.as_ref().is_none_or(|(n, _, _)| *n != c.name)
        {
            syn.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(&c.name))
                    .with_value(value.clone())
                    .with_source(config_source_code(c.source)),
            );
        }
        if let Some((name, value, source)) = &c.synonym {
            syn.push(
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(Some(str_bytes(value)))
                    .with_source(config_source_code(*source)),
            );
        }
        r.synonyms = syn;
    }
    if version >= 3 {
        r.config_type = config_type_code(c.ty);
    }
    r
}

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    f(Ty::I8, 0, ALL),       // resource_type
    f(Ty::Str, 0, ALL),      // resource_name
    f(Ty::ArrayStr, 0, ALL), // configuration_keys
];
const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(DESCRIBE_CONFIGS_RESOURCE), 0, ALL), // resources
        f(Ty::I8, 0, ALL),                               // include_synonyms
        f(Ty::I8, 3, ALL),                               // include_documentation
    ],
    4,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::DescribeConfigsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.results.iter().map(|r| r.error_code))
    }
}
