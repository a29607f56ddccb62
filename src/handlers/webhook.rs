//! The webhook handler: POSTs each batch of events as a JSON array to a URL.
//!
//! 2xx: handled. Connection refused, timeout, 5xx, 408, 429: transient (the pipeline retries
//! the same batch with capped backoff, forever, in order; the partition waits). Any other
//! status: permanent (the batch goes to the dead-letter topic with the status and response body
//! as the reason).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::pipeline::{Event, Handler, HandlerError};

/// Longest a POST may take before it counts as a (transient) timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most response body bytes read (for the reason of a permanent failure).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most response body characters quoted in a dead-letter reason.
const REASON_CHARS: usize = 500;

/// POSTs events to `url`.
#[derive(Debug)]
pub struct Webhook {
    name: String,
    url: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Webhook {
    pub fn new(name: &str, url: &str) -> anyhow::Result<Webhook> {
        let url: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("webhook URL '{url}' is not a URL: {e}"))?;
        if url.scheme_str() != Some("http") {
            anyhow::bail!("webhook URL '{url}': only http:// is supported");
        }
        Ok(Webhook {
            name: name.to_string(),
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Whether a status means "try again later".
    fn transient(status: StatusCode) -> bool {
        status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
    }
}

#[async_trait::async_trait]
impl Handler for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        let body: Vec<serde_json::Value> = events.iter().map(super::event_json).collect();
        let body = serde_json::to_vec(&body)
            .map_err(|e| HandlerError::Permanent(format!("cannot encode events: {e}")))?;
        let request = Request::post(self.url.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("kafkabox/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HandlerError::Permanent(format!("cannot build the request: {e}")))?;
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Err(_) => {
                return Err(HandlerError::Transient(format!(
                    "POST {} timed out after {TIMEOUT:?}",
                    self.url
                )))
            }
            Ok(Err(e)) => return Err(HandlerError::Transient(format!("POST {}: {e}", self.url))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = match tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect(),
        )
        .await
        {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(REASON_CHARS)
                .collect(),
            _ => String::new(),
        };
        let reason = format!("HTTP {}: {}", status.as_u16(), text.trim());
        if Webhook::transient(status) {
            Err(HandlerError::Transient(reason))
        } else {
            Err(HandlerError::Permanent(reason))
        }
    }
}
