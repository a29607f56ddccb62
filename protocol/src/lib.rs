//! kafkabox-protocol: the Kafka wire protocol, sans IO.
//!
//! Bytes in, typed requests and checked batch headers out, and bytes out again. No tokio, no
//! sled, no global state. Every request body is walked by [`precheck`] before the kafka-protocol
//! crate decodes it (see that module for why).

pub mod batch;
pub mod compression;
pub mod precheck;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

pub use kafka_protocol;

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// An API kafkabox implements: its key, the versions it answers, and the schema that bounds a
/// request body before decoding. ApiVersions advertises exactly this table.
#[derive(Debug, Clone, Copy)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    schema: precheck::Schema,
}

/// Every API kafkabox answers. Produce stops at 12 and Fetch at 12: v13 addresses topics by id.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    SupportedApi {
        key: ApiKey::Produce,
        min: 3,
        max: 12,
        schema: precheck::PRODUCE,
    },
    SupportedApi {
        key: ApiKey::Fetch,
        min: 4,
        max: 12,
        schema: precheck::FETCH,
    },
    SupportedApi {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 10,
        schema: precheck::LIST_OFFSETS,
    },
    SupportedApi {
        key: ApiKey::Metadata,
        min: 0,
        max: 13,
        schema: precheck::METADATA,
    },
    SupportedApi {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 4,
        schema: precheck::API_VERSIONS,
    },
    SupportedApi {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
        schema: precheck::CREATE_TOPICS,
    },
    SupportedApi {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 5,
        schema: precheck::INIT_PRODUCER_ID,
    },
    // Advertised because librdkafka enables lz4 only for brokers that list FindCoordinator
    // (rdkafka_feature.c). Answers COORDINATOR_NOT_AVAILABLE: no consumer groups yet.
    SupportedApi {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 4,
        schema: precheck::FIND_COORDINATOR,
    },
];

/// Looks up an API kafkabox implements.
pub fn supported(key: ApiKey) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|a| a.key == key)
}

/// The fixed first 8 bytes of every request header, read by hand so that the correlation id is
/// known even when the rest cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn parse(frame: &[u8]) -> Option<RequestPrefix> {
        if frame.len() < 8 {
            return None;
        }
        Some(RequestPrefix {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }
}

/// A decoded request body.
#[derive(Debug)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    InitProducerId(InitProducerIdRequest),
    CreateTopics(CreateTopicsRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    FindCoordinator(FindCoordinatorRequest),
}

/// A request frame after header parsing.
#[derive(Debug)]
pub struct Decoded {
    pub prefix: RequestPrefix,
    pub api_key: ApiKey,
    pub client_id: Option<String>,
    pub request: Request,
}

/// Why a frame could not become a [`Request`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {key:?} is not supported by kafkabox")]
    UnsupportedApi { key: ApiKey },
    #[error("API {key:?} version {version} is not supported (kafkabox supports {min}..={max})")]
    UnsupportedVersion {
        key: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed request header: {0}")]
    Header(precheck::PrecheckError),
    #[error("malformed {key:?} v{version} body: {source}")]
    Precheck {
        key: ApiKey,
        version: i16,
        source: precheck::PrecheckError,
    },
    #[error("malformed {key:?} v{version} body: {message}")]
    Body {
        key: ApiKey,
        version: i16,
        message: String,
    },
}

/// Parses a whole request frame (without its size prefix).
pub fn decode_request(frame: Bytes) -> Result<Decoded, DecodeError> {
    let prefix = RequestPrefix::parse(&frame).ok_or(DecodeError::TooShort(frame.len()))?;
    let api_key = ApiKey::try_from(prefix.api_key)
        .map_err(|()| DecodeError::UnknownApiKey(prefix.api_key))?;
    let api = supported(api_key).ok_or(DecodeError::UnsupportedApi { key: api_key })?;
    let version = prefix.api_version;
    if version < api.min || version > api.max {
        return Err(DecodeError::UnsupportedVersion {
            key: api_key,
            version,
            min: api.min,
            max: api.max,
        });
    }
    let flexible_header = api_key.request_header_version(version) >= 2;
    let tail = &frame[8..];
    let header_len =
        precheck::check_header_tail(tail, flexible_header).map_err(DecodeError::Header)?;
    let client_id = client_id_of(tail);
    let body = frame.slice(8 + header_len..);
    api.schema
        .check(&body, version)
        .map_err(|source| DecodeError::Precheck {
            key: api_key,
            version,
            source,
        })?;
    let request = decode_body(api_key, version, body).map_err(|e| DecodeError::Body {
        key: api_key,
        version,
        message: format!("{e:#}"),
    })?;
    Ok(Decoded {
        prefix,
        api_key,
        client_id,
        request,
    })
}

fn client_id_of(tail: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes([*tail.first()?, *tail.get(1)?]);
    if len < 0 {
        return None;
    }
    let s = tail.get(2..2 + len as usize)?;
    Some(String::from_utf8_lossy(s).into_owned())
}

fn decode_body(key: ApiKey, version: i16, mut body: Bytes) -> anyhow::Result<Request> {
    let b = &mut body;
    Ok(match key {
        ApiKey::ApiVersions => Request::ApiVersions(ApiVersionsRequest::decode(b, version)?),
        ApiKey::Metadata => Request::Metadata(MetadataRequest::decode(b, version)?),
        ApiKey::Produce => Request::Produce(ProduceRequest::decode(b, version)?),
        ApiKey::InitProducerId => {
            Request::InitProducerId(InitProducerIdRequest::decode(b, version)?)
        }
        ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest::decode(b, version)?),
        ApiKey::Fetch => Request::Fetch(FetchRequest::decode(b, version)?),
        ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest::decode(b, version)?),
        ApiKey::FindCoordinator => {
            Request::FindCoordinator(FindCoordinatorRequest::decode(b, version)?)
        }
        other => anyhow::bail!("{other:?} has no decoder"),
    })
}

/// Encodes a response frame: size prefix, response header at the version the API requires,
/// then the body.
pub fn encode_response<R>(correlation_id: i32, version: i16, body: &R) -> Result<BytesMut, String>
where
    R: Encodable + HeaderVersion,
{
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0, 0, 0, 0]);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encoding response header: {e:#}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("encoding response body v{version}: {e:#}"))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Kafka's answer to an ApiVersions request at a version the broker lacks: a v0 response with
/// UNSUPPORTED_VERSION that still lists ApiVersions' own range (KIP-511), so the client retries
/// at a version both sides know. Byte-exact with Kafka (KAFKA-PROTOCOL-NOTES.md §4).
pub fn api_versions_fallback(correlation_id: i32) -> BytesMut {
    let api = supported(ApiKey::ApiVersions)
        .map(|a| (a.min, a.max))
        .unwrap_or((0, 0));
    let mut buf = BytesMut::with_capacity(20);
    buf.extend_from_slice(&16i32.to_be_bytes());
    buf.extend_from_slice(&correlation_id.to_be_bytes());
    buf.extend_from_slice(&35i16.to_be_bytes());
    buf.extend_from_slice(&1i32.to_be_bytes());
    buf.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    buf.extend_from_slice(&api.0.to_be_bytes());
    buf.extend_from_slice(&api.1.to_be_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(key: i16, version: i16, body: &[u8]) -> Bytes {
        let mut f = Vec::new();
        f.extend_from_slice(&key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&[0, 4]);
        f.extend_from_slice(b"test");
        f.extend_from_slice(body);
        Bytes::from(f)
    }

    #[test]
    fn api_versions_fallback_is_byte_exact() {
        let b = api_versions_fallback(7);
        assert_eq!(
            &b[..],
            &[0, 0, 0, 0x10, 0, 0, 0, 7, 0, 0x23, 0, 0, 0, 1, 0, 0x12, 0, 0, 0, 4]
        );
    }

    #[test]
    fn the_154gb_metadata_frame_is_refused() {
        let f = frame(3, 1, &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61]);
        let e = decode_request(f).unwrap_err();
        assert!(matches!(e, DecodeError::Precheck { .. }), "{e}");
    }

    #[test]
    fn metadata_round_trip() {
        let f = frame(3, 1, &[0, 0, 0, 1, 0, 1, b'a']);
        let d = decode_request(f).unwrap();
        assert_eq!(d.client_id.as_deref(), Some("test"));
        let Request::Metadata(m) = d.request else {
            panic!("not metadata")
        };
        assert_eq!(m.topics.unwrap()[0].name.as_ref().unwrap().as_str(), "a");
    }

    #[test]
    fn unknown_key_and_version() {
        assert!(matches!(
            decode_request(frame(999, 0, &[])),
            Err(DecodeError::UnknownApiKey(999))
        ));
        assert!(matches!(
            decode_request(frame(0, 2, &[])),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            decode_request(frame(11, 0, &[])),
            Err(DecodeError::UnsupportedApi { .. })
        ));
    }
}
