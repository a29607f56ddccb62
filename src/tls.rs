//! TLS for the SSL and SASL_SSL listeners and an `https://` HTTP listener: rustls (ring as the
//! crypto provider) configured from Kafka's settings: `ssl.keystore.location` (one PEM file
//! with the private key and the certificate chain, Kafka's PEM keystore form),
//! `ssl.truststore.location` (PEM CA certificates for client certificates) and
//! `ssl.client.auth` (none, requested, required).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::config::{ClientAuth, Config};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of TLS from the settings, `alpn` the protocols offered (`http/1.1` for the
/// HTTP listener, none for Kafka).
pub fn server_config(config: &Config, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>> {
    let keystore = config
        .ssl_keystore_location
        .as_deref()
        .ok_or_else(|| {
            anyhow!("TLS (https:// in http.listen, or an SSL or SASL_SSL listener) needs ssl.keystore.location, a PEM file with the private key and certificate chain")
        })?;
    let (chain, key) = read_keystore(keystore)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match config.ssl_client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let path = config
                .ssl_truststore_location
                .as_deref()
                .ok_or_else(|| anyhow!("ssl.client.auth needs ssl.truststore.location"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).with_context(|| {
                    format!(
                        "ssl.truststore.location {}: a certificate rustls cannot use",
                        path.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut sc = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "ssl.keystore.location {}: the private key does not match the first certificate, or is of a kind rustls cannot use",
            keystore.display()
        )
    })?;
    sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(sc))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE block found", path.display());
    }
    Ok(certs)
}

/// Kafka's PEM keystore: the private key and the certificate chain (leaf first) in one file.
fn read_keystore(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let text = std::fs::read(path)
        .with_context(|| format!("ssl.keystore.location: cannot read {}", path.display()))?;
    if text
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        bail!(
            "ssl.keystore.location {}: the private key is encrypted; kafkabox reads unencrypted keys only (decrypt it with `openssl pkcs8 -in KEY -out KEY.plain`, and keep the file readable by kafkabox alone)",
            path.display()
        );
    }
    let certs = read_certs(path).context("ssl.keystore.location")?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        anyhow!(
            "ssl.keystore.location {}: no private key found ({e}); the file must hold the key and the certificate chain",
            path.display()
        )
    })?;
    Ok((certs, key))
}

/// Kafka's principal for a client certificate: `User:` and the subject's distinguished name
/// in RFC 2253 form (`CN=writer,OU=ops,O=example`), as Kafka's default
/// `ssl.principal.mapping.rules` give it.
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in cert.subject().iter().collect::<Vec<_>>().into_iter().rev() {
        let mut attrs = Vec::new();
        for attr in rdn.iter() {
            let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                .map(str::to_string)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
            let value = attr.as_str().ok()?;
            attrs.push(format!("{name}={}", escape_dn(value)));
        }
        parts.push(attrs.join("+"));
    }
    Some(format!("User:{}", parts.join(",")))
}

fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == ' ' || c == '#'))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
