//! ApiVersions: advertises exactly the table in `kafkabox_protocol::SUPPORTED_APIS`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::SUPPORTED_APIS;

use crate::broker::{ready, respond, Pending};

/// Kafka's pattern for client_software_name/version (ApiVersionsRequest.java).
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.';
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner_ok)
}

pub fn handle(correlation_id: i32, version: i16, req: &ApiVersionsRequest) -> Pending {
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = SUPPORTED_APIS
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min)
                .with_max_version(a.max)
        })
        .collect();
    if version >= 3
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
    ready(respond(correlation_id, version, &resp))
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
