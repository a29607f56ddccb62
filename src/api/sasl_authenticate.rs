//! SaslAuthenticate (v0-2): one step of the SASL exchange chosen by SaslHandshake. A failed
//! authentication is answered with SASL_AUTHENTICATION_FAILED at once, and the connection
//! closes after Kafka's `connection.failed.authentication.delay.ms` (100 ms; the listener's
//! `close_after` delay). Each failure is recorded against the client's address
//! (`services::sasl::Slowdown`): the address's next attempts wait in the listener before their
//! credentials are checked, which slows password guessing further.

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::{str_bytes, Call, KafkaApi, Pending};
use super::{Auth, Session};
use crate::services::sasl::{failure_message, Step};

/// SaslAuthenticate, declared for the API table.
pub struct SaslAuthenticate;

impl KafkaApi for SaslAuthenticate {
    const NAME: &'static str = "SaslAuthenticate";
    type Request = SaslAuthenticateRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 2;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: SaslAuthenticateRequest) -> Pending {
        let mut resp = SaslAuthenticateResponse::default();
        let Auth::Exchange(exchange) = &mut session.auth else {
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.error_message = Some(str_bytes(
                "SaslAuthenticate before SaslHandshake, or after authentication",
            ));
            session.close_after = true;
            return call.ready(&resp);
        };
        let mechanism = exchange.mechanism();
        // This runs on the blocking pool (the listener's dispatch): PLAIN's PBKDF2 may take ms.
        let users = session.services.users.clone();
        match exchange.step(&users, &req.auth_bytes) {
            Step::Continue(challenge) => {
                resp.auth_bytes = Bytes::from(challenge);
                call.ready(&resp)
            }
            Step::Done { principal, reply } => {
                tracing::info!(%principal, mechanism, "authenticated");
                session.services.sasl_slowdown.succeeded(session.peer.ip());
                session.services.metrics.authenticated(mechanism, "success");
                session.principal = principal;
                session.auth = Auth::Done;
                resp.auth_bytes = Bytes::from(reply);
                call.ready(&resp)
            }
            Step::Failed { reason } => {
                // A client retrying a wrong password reconnects every 100 ms or so: one line
                // every 10 s at most, the rest counted (kafkabox_sasl_authentications_total).
                static LOG: std::sync::Mutex<crate::services::log_limit::RateLimitedLog> =
                    std::sync::Mutex::new(crate::services::log_limit::RateLimitedLog::new());
                let allowed = LOG.lock().map(|mut l| l.allow()).unwrap_or(None);
                if let Some(suppressed) = allowed {
                    tracing::warn!(
                        mechanism,
                        peer = %session.peer,
                        reason = %crate::services::truncate(&reason, 512),
                        suppressed,
                        "SASL authentication failed; closing the connection"
                    );
                }
                session.services.metrics.authenticated(mechanism, "failure");
                // The address's next attempts wait first (the listener's per-address slow-down).
                session.services.sasl_slowdown.failed(session.peer.ip());
                resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                resp.error_message = Some(str_bytes(&failure_message(mechanism)));
                session.close_after = true;
                call.ready(&resp)
            }
        }
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Bytes, 0, ALL), // auth_bytes
    ],
    2,
);

impl crate::api::ErrorCodes for SaslAuthenticateResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
