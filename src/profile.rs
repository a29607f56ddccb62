//! The customer profile handler: per customer, counts and value sums by event type, first and
//! last event, the last event per source, and the most recent events. Profiles live in sled
//! (appliance state `profile/<customer_id>`) and each update is written in the same atomic
//! batch as the handler's offset commit, so a crash never counts an event twice or drops it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// How many recent events a profile keeps.
pub const RECENT_EVENTS: usize = 20;

/// Key of a customer's profile in the appliance state.
pub fn profile_key(customer_id: &str) -> Vec<u8> {
    format!("profile/{customer_id}").into_bytes()
}

/// Applies one valid event (already checked against the contract) to a profile document
/// (`Value::Null` for a new customer). `offset` and `partition` say where the event is stored.
pub fn apply(profile: &mut Value, event: &Value, partition: i32, offset: i64) {
    let customer = event
        .get("customer_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let event_type = event
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("custom");
    let source = event
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let timestamp = event.get("timestamp").cloned().unwrap_or(Value::Null);
    let value = event.get("value").and_then(Value::as_f64);
    if !profile.is_object() {
        *profile = json!({
            "customer_id": customer,
            "events": 0,
            "by_type": {},
            "first_event": Value::Null,
            "last_event": Value::Null,
            "last_by_source": {},
            "recent": [],
        });
    }
    let Some(p) = profile.as_object_mut() else {
        return;
    };
    let events = p.get("events").and_then(Value::as_u64).unwrap_or(0) + 1;
    p.insert("events".into(), json!(events));
    let by_type = p.entry("by_type").or_insert_with(|| json!({}));
    if let Some(by_type) = by_type.as_object_mut() {
        let t = by_type
            .entry(event_type.to_string())
            .or_insert_with(|| json!({"count": 0, "value_sum": 0.0}));
        let count = t.get("count").and_then(Value::as_u64).unwrap_or(0) + 1;
        let sum = t.get("value_sum").and_then(Value::as_f64).unwrap_or(0.0) + value.unwrap_or(0.0);
        *t = json!({"count": count, "value_sum": sum});
    }
    let stamp = json!({"timestamp": timestamp, "event_type": event_type, "source": source});
    if p.get("first_event").is_none_or(Value::is_null) {
        p.insert("first_event".into(), stamp.clone());
    }
    p.insert("last_event".into(), stamp);
    let mut summary = Map::new();
    summary.insert("partition".into(), json!(partition));
    summary.insert("offset".into(), json!(offset));
    summary.insert("event".into(), event.clone());
    let summary = Value::Object(summary);
    if let Some(by_source) = p
        .entry("last_by_source")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        by_source.insert(source.to_string(), summary.clone());
    }
    if let Some(recent) = p
        .entry("recent")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        recent.push(summary);
        if recent.len() > RECENT_EVENTS {
            let excess = recent.len() - RECENT_EVENTS;
            recent.drain(..excess);
        }
    }
}

/// Applies a run of valid events to the profiles they touch, loading each profile once with
/// `load`. Returns the new documents by customer id.
pub fn apply_all<E>(
    events: &[(Value, i32, i64)],
    mut load: impl FnMut(&str) -> Result<Option<Value>, E>,
) -> Result<BTreeMap<String, Value>, E> {
    let mut touched: BTreeMap<String, Value> = BTreeMap::new();
    for (event, partition, offset) in events {
        let Some(customer) = event.get("customer_id").and_then(Value::as_str) else {
            continue;
        };
        if !touched.contains_key(customer) {
            let current = load(customer)?.unwrap_or(Value::Null);
            touched.insert(customer.to_string(), current);
        }
        if let Some(p) = touched.get_mut(customer) {
            apply(p, event, *partition, *offset);
        }
    }
    Ok(touched)
}

/// Most profiles one search reads.
pub const MAX_SCAN: usize = 100_000;
/// Profiles read from the store per step of a search.
const PAGE: usize = 1000;

/// A customer found by [`search`]: the id and the profile's summary fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub customer_id: String,
    pub events: u64,
    pub first_event: Value,
    pub last_event: Value,
}

/// Customers whose id contains `q` (case-insensitive; every customer when empty), in id
/// order, after the id `after`, at most `limit`. Reads at most [`MAX_SCAN`] profiles; returns
/// the id to continue after when there may be more.
pub fn search(
    store: &kafkabox_storage::Store,
    q: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Found>, Option<String>), kafkabox_storage::StoreError> {
    let q = q.to_lowercase();
    let prefix = profile_key("");
    let mut cursor = after.map(profile_key);
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        let page = match &cursor {
            None => store.state_prefix(&prefix, PAGE)?,
            Some(c) => store.state_after(&prefix, c, PAGE)?,
        };
        let Some((last, _)) = page.last() else {
            return Ok((out, None));
        };
        cursor = Some(last.clone());
        for (k, v) in &page {
            scanned += 1;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if !q.is_empty() && !id.to_lowercase().contains(&q) {
                continue;
            }
            let doc: Value = serde_json::from_slice(v).unwrap_or(Value::Null);
            out.push(Found {
                events: doc.get("events").and_then(Value::as_u64).unwrap_or(0),
                first_event: doc.get("first_event").cloned().unwrap_or(Value::Null),
                last_event: doc.get("last_event").cloned().unwrap_or(Value::Null),
                customer_id: id.clone(),
            });
            if out.len() >= limit {
                return Ok((out, Some(id)));
            }
        }
        if page.len() < PAGE {
            return Ok((out, None));
        }
        if scanned >= MAX_SCAN {
            let next = cursor
                .as_ref()
                .map(|c| String::from_utf8_lossy(&c[prefix.len()..]).into_owned());
            return Ok((out, next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sums_first_last_and_recent() {
        let mut p = Value::Null;
        for (i, (t, v, s)) in [
            ("recharge", 50.0, "billing"),
            ("data_usage", 500.5, "in"),
            ("recharge", 20.0, "billing"),
        ]
        .iter()
        .enumerate()
        {
            let e = json!({"source": s, "customer_id": "42", "event_type": t, "timestamp": format!("2024-01-15T10:3{i}:00Z"), "value": v});
            apply(&mut p, &e, 0, i as i64);
        }
        assert_eq!(p["events"], 3);
        assert_eq!(p["by_type"]["recharge"]["count"], 2);
        assert_eq!(p["by_type"]["recharge"]["value_sum"], 70.0);
        assert_eq!(p["by_type"]["data_usage"]["value_sum"], 500.5);
        assert_eq!(p["first_event"]["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(p["last_event"]["timestamp"], "2024-01-15T10:32:00Z");
        assert_eq!(p["last_by_source"]["billing"]["offset"], 2);
        assert_eq!(p["last_by_source"]["in"]["event"]["value"], 500.5);
        assert_eq!(p["recent"].as_array().unwrap().len(), 3);
        for i in 0..30 {
            let e = json!({"source": "app", "customer_id": "42", "event_type": "app_login", "timestamp": "2024-01-15T11:00:00Z", "value": null});
            apply(&mut p, &e, 0, 10 + i);
        }
        assert_eq!(p["recent"].as_array().unwrap().len(), RECENT_EVENTS);
        assert_eq!(p["recent"][RECENT_EVENTS - 1]["offset"], 39);
        assert_eq!(
            p["by_type"]["app_login"]["value_sum"], 0.0,
            "null values add nothing"
        );
    }
}
