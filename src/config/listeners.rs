//! The Kafka listeners' settings: the security protocols, one `listeners` entry,
//! `ssl.client.auth`, the SASL mechanisms kafkabox implements, and what [`Config`] derives
//! from them (each listener's protocol and bind address checked against the TLS settings it
//! needs, advertised addresses, whether clients authenticate).

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};

use super::Config;

/// Kafka's security protocols, one per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener of `listeners`: `NAME://host:port`, its protocol from the name or
/// `listener.security.protocol.map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl ListenerConfig {
    /// `host:port` to bind, IPv6 hosts in brackets.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `ssl.client.auth`: whether TLS listeners ask clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// The SASL mechanisms kafkabox implements.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl Config {
    /// The protocol of a listener name: the name itself (`SASL_SSL`) or
    /// `listener.security.protocol.map`.
    pub fn protocol_of(&self, name: &str) -> Result<SecurityProtocol> {
        self.protocol_map
            .get(name)
            .copied()
            .or_else(|| SecurityProtocol::parse(name))
            .ok_or_else(|| {
                anyhow!("listener {name}: not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) and not in listener.security.protocol.map")
            })
    }

    /// Each listener's bind address and protocol, checked against the TLS and SASL settings
    /// they need.
    pub fn resolved_listeners(
        &self,
    ) -> Result<Vec<(ListenerConfig, SecurityProtocol, SocketAddr)>> {
        use std::net::ToSocketAddrs;
        let mut out = Vec::new();
        for l in &self.listeners {
            let proto = self.protocol_of(&l.name)?;
            if proto.tls() && self.ssl_keystore_location.is_none() {
                bail!(
                    "listener {}://{}: a {} listener needs ssl.keystore.location (a PEM file with the private key and certificate chain)",
                    l.name,
                    l.bind_addr(),
                    proto.name()
                );
            }
            let text = l.bind_addr();
            let addr = text
                .to_socket_addrs()
                .with_context(|| format!("listener {}://{text}", l.name))?
                .next()
                .ok_or_else(|| anyhow!("listener {}://{text} resolves to nothing", l.name))?;
            out.push((l.clone(), proto, addr));
        }
        if self.ssl_client_auth != ClientAuth::None && self.ssl_truststore_location.is_none() {
            bail!("ssl.client.auth={:?} needs ssl.truststore.location (the CA certificates client certificates chain to)", self.ssl_client_auth);
        }
        Ok(out)
    }

    /// The host and port Metadata gives clients of the listener `name`, if advertised.
    pub fn advertised_for(&self, name: &str) -> Option<(String, u16)> {
        let first = self.listeners.first().map(|l| l.name.as_str());
        self.advertised_listeners
            .iter()
            .find(|(n, _, _)| n == name || (n.is_empty() && Some(name) == first))
            .map(|(_, h, p)| (h.clone(), *p))
    }

    /// Whether any listener authenticates its clients (SASL, or TLS with client certificates).
    pub fn authenticates(&self) -> bool {
        self.listeners.iter().any(|l| {
            self.protocol_of(&l.name).is_ok_and(|p| {
                p.sasl() || (p.tls() && self.ssl_client_auth == ClientAuth::Required)
            })
        })
    }
}
