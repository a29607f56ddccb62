//! Who is on the other end of a Kafka connection and what it has negotiated: the [`Session`]
//! every API handler is given, mutably, in request order. The listener makes one per
//! connection; the API layer reads and changes it (SASL state, client id, principal).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::SecurityProtocol;
use crate::services::Services;

/// Where a connection is in authentication.
#[derive(Debug)]
pub enum Auth {
    /// Authenticated (or on a listener that needs none): every API may be used.
    Done,
    /// A SASL listener before SaslHandshake.
    Handshake,
    /// A SASL exchange of the mechanism the client chose, in progress.
    Exchange(crate::services::sasl::Exchange),
}

/// Per-connection state: who is on the other end, and what the connection has negotiated.
/// The API handlers get it mutably, in request order.
#[derive(Debug)]
pub struct Session {
    pub services: Arc<Services>,
    /// The listener's name (`PLAINTEXT`, `SASL_SSL`, or a name of
    /// `listener.security.protocol.map`) and protocol.
    pub listener: Arc<str>,
    pub protocol: SecurityProtocol,
    /// The local address the client reached: advertised when `advertised.listeners` names
    /// nothing for this listener.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Who the client is: `User:NAME` once authenticated by SASL, `User:CN=...` for a client
    /// certificate, [`ANONYMOUS`](crate::services::acl::ANONYMOUS) otherwise.
    pub principal: String,
    pub auth: Auth,
    /// Set by a handler whose answer must be the connection's last (failed authentication).
    pub close_after: bool,
    /// The client id of the latest request (Kafka reports it for group members).
    pub client_id: String,
    /// Requests answered on this connection.
    pub requests: u64,
    /// The API versions this broker advertises and accepts (`emulate.kafka`).
    pub apis: Arc<super::emulate::Advertised>,
}

impl Session {
    /// The host and port Metadata gives for node 0: this listener's advertised address, else
    /// the address the client reached.
    pub fn advertised(&self) -> (String, u16) {
        match self.services.config.advertised_for(&self.listener) {
            Some(a) => a,
            None => (self.local.ip().to_string(), self.local.port()),
        }
    }

    /// Whether the connection may use every API (authenticated, or no authentication needed).
    pub fn authenticated(&self) -> bool {
        matches!(self.auth, Auth::Done)
    }
}
