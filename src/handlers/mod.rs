//! Built-in handlers, and the one place a handler name of the configuration
//! (`customer.events.handlers`, `handlers.<topic>`) becomes a handler ([`built_in`]), for
//! `serve` and `kafkabox handle` alike. (The profile handler is a pipeline stage of its own,
//! `crate::profile`, because it commits its state with its offset.)
//!
//! - `webhook.rs`: POSTs each batch as a JSON array to a URL.
//! - `exec.rs`: runs a command with the batch as JSON lines on its stdin.
//! - `log.rs`: each event through tracing.
//! - `forward.rs` (cargo feature `client`): the edge forwarder to a central Kafka cluster.

pub mod exec;
#[cfg(feature = "client")]
pub mod forward;
pub mod log;
pub mod webhook;

use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};

use crate::pipeline::{Event, Handler};
use crate::Config;

/// What a name in a topic's handler chain stands for.
pub enum BuiltIn {
    /// `profile`: the topic's valid events update the customer profiles (a stage, not a
    /// [`Handler`]: it commits its state with its offset).
    Profiles,
    /// `webhook` (to `webhook.url`), `exec` (`exec.command`, through `sh -c`) or `log`.
    Handler(Arc<dyn Handler>),
}

/// The built-in handler `name` of `topic`'s chain, set up from `config` (`topic` only names
/// it in errors). An error for an unknown name, or when the handler's setting is missing.
pub fn built_in(name: &str, topic: &str, config: &Config) -> anyhow::Result<BuiltIn> {
    Ok(match name {
        "profile" => BuiltIn::Profiles,
        "webhook" => {
            let url = config.webhook_url.as_deref().with_context(|| {
                format!("handlers for {topic} name webhook but webhook.url is not set")
            })?;
            BuiltIn::Handler(Arc::new(webhook::Webhook::new("webhook", url)?))
        }
        "exec" => {
            let cmd = config.exec_command.as_deref().with_context(|| {
                format!("handlers for {topic} name exec but exec.command is not set")
            })?;
            let argv = vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
            BuiltIn::Handler(Arc::new(exec::Exec::new("exec", argv)?))
        }
        "log" => BuiltIn::Handler(Arc::new(self::log::Log::new("log"))),
        other => anyhow::bail!("unknown handler '{other}'"),
    })
}

/// An event as JSON for handlers that ship events out: the value parsed when it is JSON
/// (as a string otherwise), the key and headers as UTF-8 text where they are.
pub fn event_json(e: &Event) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let value = match e.value.as_deref() {
        None => Value::Null,
        Some(v) => serde_json::from_slice(v).unwrap_or_else(|_| Value::String(text(v))),
    };
    json!({
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
        "timestamp": e.timestamp,
        "key": e.key.as_deref().map(text),
        "value": value,
        "headers": e.headers.iter().map(|(k, v)| json!([text(k), v.as_deref().map(text)])).collect::<Vec<_>>(),
    })
}

/// The headers of `e` for a record produced from it through librdkafka (forwarded records,
/// `kafkabox handle`'s dead letters).
#[cfg(feature = "client")]
pub(crate) fn event_headers(e: &Event) -> rdkafka::message::OwnedHeaders {
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for (k, v) in &e.headers {
        headers = headers.insert(rdkafka::message::Header {
            key: &String::from_utf8_lossy(k),
            value: v.as_deref(),
        });
    }
    headers
}
