//! Built-in handlers: webhook, exec, log. (The profile handler is a pipeline stage of its own,
//! `crate::profile`, because it commits its state with its offset.)

pub mod exec;
#[cfg(feature = "client")]
pub mod forward;
pub mod log;
pub mod webhook;

use serde_json::{json, Value};

use crate::pipeline::Event;

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
