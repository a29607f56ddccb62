//! ApiVersions: advertises exactly the table in `api::APIS`, or the part of it an emulated
//! Kafka release has (`api::emulate`).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::Session;
use crate::api::{Call, KafkaApi, Pending};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

/// Kafka's pattern for client_software_name/version (ApiVersionsRequest.java).
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.';
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner_ok)
}

/// ApiVersions, declared for the API table.
pub struct ApiVersions;

impl KafkaApi for ApiVersions {
    const NAME: &'static str = "ApiVersions";
    type Request = ApiVersionsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 4;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: ApiVersionsRequest) -> Pending {
        handle(session, call, req)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 3, ALL), // client_software_name
        f(Ty::Str, 3, ALL), // client_software_version
    ],
    3,
);

fn handle(session: &mut Session, call: Call, req: ApiVersionsRequest) -> Pending {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = session
        .apis
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    if call.version >= 3
        && !(valid_software_field(&req.client_software_name)
            && valid_software_field(&req.client_software_version))
    {
        tracing::warn!(
            name = %req.client_software_name.as_str(),
            version = %req.client_software_version.as_str(),
            "ApiVersions with an invalid client software name or version: INVALID_REQUEST"
        );
        resp.error_code = ResponseError::InvalidRequest.code();
    }
    call.ready(&resp)
}

impl crate::api::ErrorCodes for kafka_protocol::messages::ApiVersionsResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}

#[cfg(test)]
mod tests {
    use super::valid_software_field;

    #[test]
    fn software_fields() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("2.12.1"));
        assert!(valid_software_field("kafka-python"));
        assert!(!valid_software_field(""));
        assert!(!valid_software_field("-x"));
        assert!(!valid_software_field("a b"));
    }
}
