//! SaslHandshake (v0-1): the client names its SASL mechanism on a SASL_PLAINTEXT or SASL_SSL
//! listener; the exchange itself follows in SaslAuthenticate requests. v0 is advertised because
//! librdkafka looks for it before any SASL, as Kafka does; the raw SASL tokens that followed a
//! v0 handshake before SaslAuthenticate existed (Kafka 0.10) are not read: every client that
//! knows SaslAuthenticate (all current ones) uses it.

use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL, NEVER};

use super::{str_bytes, Call, KafkaApi, Pending};
use super::{Auth, Session};
use crate::services::sasl::Exchange;

/// SaslHandshake, declared for the API table.
pub struct SaslHandshake;

impl KafkaApi for SaslHandshake {
    const NAME: &'static str = "SaslHandshake";
    type Request = SaslHandshakeRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 1;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: SaslHandshakeRequest) -> Pending {
        let enabled = &session.services.config.sasl_mechanisms;
        let mut resp = SaslHandshakeResponse::default()
            .with_mechanisms(enabled.iter().map(|m| str_bytes(m)).collect());
        let mechanism = req.mechanism.as_str().to_ascii_uppercase();
        if !session.protocol.sasl() || !matches!(session.auth, Auth::Handshake) {
            tracing::debug!(listener = %session.listener, "SaslHandshake where no SASL handshake is expected");
            resp.error_code = ResponseError::IllegalSaslState.code();
            session.close_after = true;
        } else if !enabled.contains(&mechanism) {
            tracing::info!(
                mechanism = %super::super::services::truncate(req.mechanism.as_str(), 64),
                enabled = %enabled.join(","),
                "SaslHandshake for a mechanism that is not enabled (sasl.enabled.mechanisms)"
            );
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
            session.close_after = true;
        } else if let Some(exchange) = Exchange::new(&mechanism) {
            session.auth = Auth::Exchange(exchange);
        } else {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
            session.close_after = true;
        }
        call.ready(&resp)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Str, 0, ALL), // mechanism
    ],
    NEVER,
);

impl crate::api::ErrorCodes for SaslHandshakeResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
