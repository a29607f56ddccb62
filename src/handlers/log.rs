//! The log handler: each event through tracing, at info level.

use crate::pipeline::{Event, Handler, HandlerError};

#[derive(Debug, Clone)]
pub struct Log {
    name: String,
}

impl Log {
    pub fn new(name: &str) -> Log {
        Log {
            name: name.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Handler for Log {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        for e in events {
            let value = e.value.as_deref().map(String::from_utf8_lossy);
            tracing::info!(
                topic = %e.topic,
                partition = e.partition,
                offset = e.offset,
                key = ?e.key.as_deref().map(String::from_utf8_lossy),
                value = value.as_deref().unwrap_or("null"),
                "event"
            );
        }
        Ok(())
    }
}
