//! The handler chains per topic (`handlers.<topic>`, `customer.events.handlers`: which built-in
//! handlers run over a topic's records) and the customer-events contract
//! (`customer.events.schema`, or the shipped one).

use anyhow::{anyhow, bail, Context, Result};

use super::Config;
use crate::contract::Contract;

/// The built-in handlers `customer.events.handlers` may name.
pub const HANDLERS: &[&str] = &["profile", "webhook", "exec", "log"];

impl Config {
    /// Sets the handler chain of `topic` from `value` (names, comma-separated), `key` being the
    /// setting that names it.
    pub(super) fn set_handlers(&mut self, topic: &str, key: &str, value: &str) -> Result<()> {
        kafkabox_protocol::names::validate_topic_name(topic).map_err(|e| anyhow!("{key}: {e}"))?;
        let names: Vec<String> = value
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(bad) = names.iter().find(|n| !HANDLERS.contains(&n.as_str())) {
            bail!(
                "{key}: unknown handler '{bad}'; built-in handlers: {}",
                HANDLERS.join(", ")
            );
        }
        self.handlers.insert(topic.to_string(), names);
        Ok(())
    }

    /// The customer-events contract: the configured schema file, or the shipped one.
    pub fn customer_contract(&self) -> Result<Contract> {
        match &self.customer_schema {
            None => Contract::default_contract(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("customer.events.schema: cannot read {}", path.display())
                })?;
                Contract::new(&text)
                    .with_context(|| format!("customer.events.schema: {}", path.display()))
            }
        }
    }
}
