//! The customer-events contract: each record's value is checked against the event format of
//! the integration guide, shipped as a JSON Schema (`schemas/customer-events.schema.json`) that
//! a user can replace. Validation uses the `jsonschema` crate with format assertions on, so
//! `timestamp` must be an RFC 3339 date-time (any number of fractional digits: Python
//! `isoformat()+'Z'`, Java `Instant.toString()`, .NET `"o"`).

use anyhow::{Context, Result};

/// The integration guide's topic, which the contract checks unless `customer.events.contract`
/// turns it off.
pub const CUSTOMER_EVENTS: &str = "customer-events";

/// The topics whose producers are refused (INVALID_RECORD) when a record breaks the topic's
/// contract, instead of the record going to the dead-letter topic: those an embedder asked for,
/// and `customer-events` when `reject.invalid` is set. The one home of that policy: the
/// server's produce path and the appliance's stages both ask it.
pub fn reject_topics(reject_invalid: bool, asked: &[String]) -> Vec<String> {
    let mut topics = asked.to_vec();
    if reject_invalid && !topics.iter().any(|t| t == CUSTOMER_EVENTS) {
        topics.push(CUSTOMER_EVENTS.to_string());
    }
    topics
}

/// The schema shipped with kafkabox.
pub const DEFAULT_SCHEMA: &str = include_str!("../schemas/customer-events.schema.json");

/// Why a record was rejected, and the `source` field when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub source: Option<String>,
}

/// A compiled contract.
pub struct Contract {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Contract")
    }
}

/// Most validation errors named in one rejection reason.
const MAX_REASONS: usize = 5;

/// Longest rejection reason kept (it goes into a dead letter's header and a log line; schema
/// errors quote the offending value, which may be megabytes).
pub const MAX_REASON_BYTES: usize = 1024;

/// Longest `source` kept from a rejected event (a dead letter's header, metrics labels).
pub const MAX_SOURCE_BYTES: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, saying how long it was.
pub fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

impl Contract {
    /// Compiles a JSON Schema document.
    pub fn new(schema_text: &str) -> Result<Contract> {
        let schema: serde_json::Value =
            serde_json::from_str(schema_text).context("the contract schema is not JSON")?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| anyhow::anyhow!("the contract schema is not a valid JSON Schema: {e}"))?;
        Ok(Contract { validator })
    }

    /// The shipped contract.
    pub fn default_contract() -> Result<Contract> {
        Contract::new(DEFAULT_SCHEMA)
    }

    /// Checks one record value. Returns the parsed event or why it is rejected.
    pub fn check(&self, value: Option<&[u8]>) -> Result<serde_json::Value, Rejection> {
        let reject = |reason: String, source: Option<String>| Rejection {
            reason: clip(reason, MAX_REASON_BYTES),
            source: source.map(|s| clip(s, MAX_SOURCE_BYTES)),
        };
        let Some(bytes) = value else {
            return Err(reject("the record has no value (null)".into(), None));
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| reject(format!("the value is not UTF-8: {e}"), None))?;
        let event: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| reject(format!("the value is not JSON: {e}"), None))?;
        let source = event
            .get("source")
            .and_then(|s| s.as_str())
            .map(str::to_string);
        let errors: Vec<String> = self
            .validator
            .iter_errors(&event)
            .take(MAX_REASONS)
            .map(|e| {
                let path = e.instance_path().to_string();
                let e = clip(e.to_string(), MAX_REASON_BYTES / MAX_REASONS);
                if path.is_empty() {
                    e
                } else {
                    format!("{}: {e}", clip(path, 128))
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(event)
        } else {
            Err(reject(errors.join("; "), source))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<serde_json::Value, Rejection> {
        Contract::default_contract()
            .unwrap()
            .check(Some(json.as_bytes()))
    }

    fn event(timestamp: &str) -> String {
        format!(
            r#"{{"source":"in","source_name":"IN System","customer_id":"1234567890","event_type":"data_usage","timestamp":"{timestamp}","value":500.5,"metadata":{{"network_type":"4G"}}}}"#
        )
    }

    #[test]
    fn every_timestamp_the_guides_samples_emit_is_accepted() {
        for ts in [
            "2024-01-15T10:30:00Z",              // the guide's example
            "2024-01-15T10:30:00.123456Z",       // Python isoformat() + 'Z'
            "2024-01-15T10:30:00.123456789Z",    // Java Instant.toString()
            "2024-01-15T10:30:00.1234567Z",      // .NET DateTime.UtcNow.ToString("o")
            "2024-01-15T10:30:00.1234567+00:00", // .NET "o" on a DateTimeOffset
        ] {
            assert!(check(&event(ts)).is_ok(), "{ts}");
        }
        for ts in [
            "yesterday",
            "2024-13-45T10:30:00Z",
            "2024-01-15 10:30:00",
            "1705314600",
        ] {
            assert!(check(&event(ts)).is_err(), "{ts} must be refused");
        }
    }

    #[test]
    fn optional_fields_and_extra_fields() {
        assert!(check(r#"{"source":"crm","customer_id":"1","event_type":"custom","timestamp":"2024-01-15T10:30:00Z"}"#).is_ok());
        assert!(check(r#"{"source":"crm","customer_id":"1","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":null,"metadata":null,"extra":{"a":1}}"#).is_ok());
    }

    #[test]
    fn rejections_say_why_and_keep_the_source() {
        let r = check(r#"{"source":"billing","customer_id":"1","event_type":"teleport","timestamp":"2024-01-15T10:30:00Z"}"#)
            .unwrap_err();
        assert_eq!(r.source.as_deref(), Some("billing"));
        assert!(r.reason.contains("/event_type"), "{}", r.reason);
        let r = check(
            r#"{"source":"app","event_type":"app_login","timestamp":"2024-01-15T10:30:00Z"}"#,
        )
        .unwrap_err();
        assert!(r.reason.contains("customer_id"), "{}", r.reason);
        let r = check("not json").unwrap_err();
        assert!(
            r.reason.starts_with("the value is not JSON"),
            "{}",
            r.reason
        );
        assert_eq!(r.source, None);
        let r = Contract::default_contract()
            .unwrap()
            .check(Some(&[0xff, 0xfe]))
            .unwrap_err();
        assert!(r.reason.contains("UTF-8"));
        let r = check(r#"{"source":"in","customer_id":"1","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":"fifty"}"#)
            .unwrap_err();
        assert!(r.reason.contains("/value"), "{}", r.reason);
        // A huge offending value is not repeated into the reason, nor a huge source kept.
        let big = "x".repeat(1 << 20);
        let e = format!(
            r#"{{"source":"{big}","customer_id":"c","event_type":"{big}","timestamp":"2026-11-30T10:00:00Z"}}"#
        );
        let r = check(&e).unwrap_err();
        assert!(r.reason.len() <= MAX_REASON_BYTES, "{}", r.reason.len());
        assert!(r.reason.contains("/event_type"), "{}", r.reason);
        assert!(r.source.unwrap().len() <= MAX_SOURCE_BYTES);
    }
}
