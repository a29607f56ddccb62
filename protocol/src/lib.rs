//! kafkabox-protocol: the Kafka wire protocol, sans IO.
//!
//! Bytes in, typed requests and checked batch headers out, and bytes out again. No tokio, no
//! sled, no global state. Every request body is walked by [`precheck`] before the kafka-protocol
//! crate decodes it (see that module for why).

pub mod batch;
pub mod compression;
pub mod names;
pub mod precheck;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

pub use kafka_protocol;

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

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

/// A request frame whose header has been read; the body is still bytes.
#[derive(Debug)]
pub struct Framed {
    pub prefix: RequestPrefix,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// Why a frame could not become a request.
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

/// Reads a request header: the 8-byte prefix, the client id and (for flexible header versions)
/// the tagged fields. The caller has already checked that it answers `key` at this version.
pub fn decode_header(frame: Bytes, key: ApiKey) -> Result<Framed, DecodeError> {
    let prefix = RequestPrefix::parse(&frame).ok_or(DecodeError::TooShort(frame.len()))?;
    let flexible_header = key.request_header_version(prefix.api_version) >= 2;
    let tail = &frame[8..];
    let header_len =
        precheck::check_header_tail(tail, flexible_header).map_err(DecodeError::Header)?;
    let client_id = client_id_of(tail);
    let body = frame.slice(8 + header_len..);
    Ok(Framed {
        prefix,
        client_id,
        body,
    })
}

/// Decodes a request body as `R` after walking it with `schema`: no count in the body reaches
/// kafka-protocol's decoder unless the bytes it claims are present.
pub fn decode_body<R: Decodable>(
    key: ApiKey,
    schema: &precheck::Schema,
    mut body: Bytes,
    version: i16,
) -> Result<R, DecodeError> {
    schema
        .check(&body, version)
        .map_err(|source| DecodeError::Precheck {
            key,
            version,
            source,
        })?;
    R::decode(&mut body, version).map_err(|e| DecodeError::Body {
        key,
        version,
        message: format!("{e:#}"),
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
pub fn api_versions_fallback(correlation_id: i32, api: (i16, i16)) -> BytesMut {
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
    use kafka_protocol::messages::MetadataRequest;

    const METADATA: precheck::Schema = precheck::Schema::new(
        &[
            precheck::f(
                precheck::Ty::Array(&[
                    precheck::f(precheck::Ty::Uuid, 10, precheck::ALL),
                    precheck::f(precheck::Ty::Str, 0, precheck::ALL),
                ]),
                0,
                precheck::ALL,
            ),
            precheck::f(precheck::Ty::I8, 4, precheck::ALL),
            precheck::f(precheck::Ty::I8, 8, 10),
            precheck::f(precheck::Ty::I8, 8, precheck::ALL),
        ],
        9,
    );

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
        let b = api_versions_fallback(7, (0, 4));
        assert_eq!(
            &b[..],
            &[0, 0, 0, 0x10, 0, 0, 0, 7, 0, 0x23, 0, 0, 0, 1, 0, 0x12, 0, 0, 0, 4]
        );
    }

    #[test]
    fn the_154gb_metadata_frame_is_refused() {
        let f = frame(3, 1, &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61]);
        let h = decode_header(f, ApiKey::Metadata).unwrap();
        let e = decode_body::<MetadataRequest>(ApiKey::Metadata, &METADATA, h.body, 1).unwrap_err();
        assert!(matches!(e, DecodeError::Precheck { .. }), "{e}");
    }

    #[test]
    fn metadata_round_trip() {
        let f = frame(3, 1, &[0, 0, 0, 1, 0, 1, b'a']);
        let h = decode_header(f, ApiKey::Metadata).unwrap();
        assert_eq!(h.client_id.as_deref(), Some("test"));
        let m: MetadataRequest = decode_body(ApiKey::Metadata, &METADATA, h.body, 1).unwrap();
        assert_eq!(m.topics.unwrap()[0].name.as_ref().unwrap().as_str(), "a");
    }
}
