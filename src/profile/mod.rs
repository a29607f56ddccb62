//! The customer profile handler: per customer, counts and value sums by event type, first and
//! last event, the last event per source, and the most recent events. Profiles live in sled
//! (appliance state `profile/<customer_id>`) and each update is written in the same atomic
//! batch as the handler's offset commit, so a crash never counts an event twice or drops it.
//!
//! - `mod.rs`: [`Profile`] and how an event changes it, [`Profiles`] (the hot profiles of the
//!   profile stage, read from and written to the store), [`search`].
//! - `cache.rs`: [`BoundedCache`], the byte-bounded map of hot profiles (also `kafkabox
//!   handle`'s).

pub mod cache;

pub use cache::BoundedCache;

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::value::RawValue;
use serde_json::Value;

/// How many recent events a profile keeps.
pub const RECENT_EVENTS: usize = 20;

/// Sources a profile keeps a last event for; a new one beyond replaces the one seen longest
/// ago.
pub const MAX_SOURCES: usize = 32;

/// Event types a profile keeps totals for; more are counted under [`OTHER_TYPES`].
pub const MAX_TYPES: usize = 64;

/// The totals of event types beyond [`MAX_TYPES`].
pub const OTHER_TYPES: &str = "(other)";

/// Largest event JSON a profile keeps as sent; a larger one is kept without its `metadata`
/// (or as its summary fields only), marked `"kafkabox_truncated": <bytes as sent>`.
pub const MAX_KEPT_EVENT_BYTES: usize = 4096;

/// Longest source, event type or customer id a profile keeps.
const MAX_NAME_BYTES: usize = 256;

/// What a profile keeps of an event's JSON: as sent when small enough, else without its
/// metadata, else only the fields the profile summarises.
fn kept_json(raw: &[u8], event: &Value) -> Option<Box<RawValue>> {
    if raw.len() <= MAX_KEPT_EVENT_BYTES {
        if let Ok(r) = serde_json::from_slice::<Box<RawValue>>(raw) {
            return Some(r);
        }
    }
    let mut v = event.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.insert("kafkabox_truncated".into(), Value::from(raw.len()));
    }
    let mut r = serde_json::value::to_raw_value(&v).ok()?;
    if r.get().len() > MAX_KEPT_EVENT_BYTES {
        let mut small = serde_json::Map::new();
        for k in ["source", "customer_id", "event_type", "timestamp", "value"] {
            if let Some(x) = event.get(k) {
                let x = match x.as_str() {
                    Some(s) => Value::from(crate::contract::clip(s.to_string(), MAX_NAME_BYTES)),
                    None => x.clone(),
                };
                small.insert(k.into(), x);
            }
        }
        small.insert("kafkabox_truncated".into(), Value::from(raw.len()));
        r = serde_json::value::to_raw_value(&small).ok()?;
    }
    Some(r)
}

/// Key of a customer's profile in the appliance state.
pub fn profile_key(customer_id: &str) -> Vec<u8> {
    format!("profile/{customer_id}").into_bytes()
}

/// Totals of one event type.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub count: u64,
    pub value_sum: f64,
}

/// When and what an event was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub timestamp: Value,
    pub event_type: String,
    pub source: String,
}

/// An event as the profile keeps it: where it is stored and its JSON as sent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    pub partition: i32,
    pub offset: i64,
    pub event: Box<RawValue>,
}

/// A customer's profile, stored as JSON under [`profile_key`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub customer_id: String,
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub by_type: BTreeMap<String, Totals>,
    #[serde(default)]
    pub first_event: Option<Stamp>,
    #[serde(default)]
    pub last_event: Option<Stamp>,
    #[serde(default)]
    pub last_by_source: BTreeMap<String, Kept>,
    #[serde(default)]
    pub recent: VecDeque<Kept>,
    /// `kafkabox handle` only: the last offset applied per source partition (`topic/partition`),
    /// so an event replayed after a crash or a rebalance is not counted twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, i64>,
}

/// A valid event to apply: its parsed JSON, its JSON as stored, and where it is stored.
#[derive(Debug)]
pub struct Valid<'a> {
    pub event: &'a Value,
    pub raw: &'a [u8],
    pub partition: i32,
    pub offset: i64,
}

impl Profile {
    /// Applies the event at `offset` of `topic`/`partition` unless this profile has applied it
    /// (or a later one of that partition) already; returns whether it did.
    pub fn apply_once(&mut self, topic: &str, v: &Valid<'_>) -> bool {
        let at = format!("{topic}/{}", v.partition);
        if self.applied.get(&at).is_some_and(|o| *o >= v.offset) {
            return false;
        }
        self.apply(v);
        self.applied.insert(at, v.offset);
        true
    }

    /// Applies one valid event (already checked against the contract).
    pub fn apply(&mut self, v: &Valid<'_>) {
        let event = v.event;
        let text = |k: &str, default: &str| -> String {
            crate::contract::clip(
                event
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_string(),
                MAX_NAME_BYTES,
            )
        };
        if self.customer_id.is_empty() {
            self.customer_id = text("customer_id", "");
        }
        let event_type = text("event_type", "custom");
        let source = text("source", "unknown");
        self.events += 1;
        let counted_as =
            if self.by_type.len() >= MAX_TYPES && !self.by_type.contains_key(&event_type) {
                OTHER_TYPES.to_string()
            } else {
                event_type.clone()
            };
        let t = self.by_type.entry(counted_as).or_default();
        t.count += 1;
        t.value_sum += event.get("value").and_then(Value::as_f64).unwrap_or(0.0);
        let stamp = Stamp {
            timestamp: event.get("timestamp").cloned().unwrap_or(Value::Null),
            event_type,
            source: source.clone(),
        };
        if self.first_event.is_none() {
            self.first_event = Some(stamp.clone());
        }
        self.last_event = Some(stamp);
        let Some(raw) = kept_json(v.raw, event) else {
            return;
        };
        let kept = Kept {
            partition: v.partition,
            offset: v.offset,
            event: raw,
        };
        if self.last_by_source.len() >= MAX_SOURCES && !self.last_by_source.contains_key(&source) {
            let oldest = self
                .last_by_source
                .iter()
                .min_by_key(|(_, k)| (k.partition, k.offset))
                .map(|(s, _)| s.clone());
            if let Some(s) = oldest {
                self.last_by_source.remove(&s);
            }
        }
        self.last_by_source.insert(source, kept.clone());
        self.recent.push_back(kept);
        while self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
    }
}

/// Hot profiles kept in memory between passes, at most about `cap` bytes of their JSON, so a
/// pass reads and decodes only the customers it has not seen lately. Only the profile stage
/// writes profiles, one pass at a time, so the cache is exactly what the store holds once a
/// pass commits; a pass that fails to commit [`Profiles::forget`]s what it changed.
#[derive(Debug)]
pub struct Profiles {
    cache: BoundedCache<Profile>,
}

/// Default bound of the profile cache.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl Profiles {
    pub fn new(cap: usize) -> Profiles {
        Profiles {
            cache: BoundedCache::new(cap),
        }
    }

    /// Applies `events` in order and returns the ids and state writes (key, JSON) of the
    /// profiles they changed, to commit atomically with the pass's offset. The cache already
    /// holds the changed profiles: if the commit fails, call [`Profiles::forget`].
    pub fn apply(
        &mut self,
        store: &kafkabox_storage::Store,
        events: &[Valid<'_>],
    ) -> Result<(Vec<String>, Vec<kafkabox_storage::StateEntry>), kafkabox_storage::StoreError>
    {
        let mut touched: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for v in events {
            let Some(customer) = v.event.get("customer_id").and_then(Value::as_str) else {
                continue;
            };
            if !self.cache.contains_key(customer) {
                let stored = store.state(&profile_key(customer))?;
                let profile = match stored {
                    Some(bytes) => match serde_json::from_slice::<Profile>(&bytes) {
                        Ok(p) => p,
                        // One unreadable profile must not stop every customer's events: it
                        // starts again from this event, and the log says so.
                        Err(e) => {
                            tracing::error!(customer, error = %e, "stored profile cannot be read; starting it again");
                            Profile::default()
                        }
                    },
                    None => Profile::default(),
                };
                self.cache.insert(customer.to_string(), profile, 0);
            }
            if let Some(p) = self.cache.get_mut(customer) {
                p.apply(v);
            }
            if seen.insert(customer.to_string()) {
                touched.push(customer.to_string());
            }
        }
        let mut writes = Vec::with_capacity(touched.len());
        for id in &touched {
            if let Some(p) = self.cache.get(id) {
                let bytes = serde_json::to_vec(p).unwrap_or_default();
                self.cache.set_size(id, bytes.len());
                writes.push((profile_key(id), bytes));
            }
        }
        // Keeps the cache under its bound, dropping profiles this pass did not touch.
        self.cache.evict(|id| seen.contains(id));
        Ok((touched, writes))
    }

    /// Drops `ids` from the cache (their commit failed; the store has the older versions).
    pub fn forget(&mut self, ids: &[String]) {
        for id in ids {
            self.cache.remove(id);
        }
    }
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
    use serde_json::json;

    fn valid(e: &Value, offset: i64) -> (Value, Vec<u8>, i64) {
        (e.clone(), serde_json::to_vec(e).unwrap(), offset)
    }

    #[test]
    fn apply_once_skips_what_it_applied() {
        let mut p = Profile::default();
        let e = json!({"customer_id": "42", "event_type": "recharge", "value": 2});
        let raw = serde_json::to_vec(&e).unwrap();
        let at = |partition, offset| Valid {
            event: &e,
            raw: &raw,
            partition,
            offset,
        };
        assert!(p.apply_once("t", &at(0, 5)));
        assert!(!p.apply_once("t", &at(0, 5)), "a replay");
        assert!(!p.apply_once("t", &at(0, 3)), "an older one");
        assert!(p.apply_once("t", &at(1, 3)), "another partition");
        assert!(p.apply_once("t", &at(0, 6)));
        assert_eq!(p.events, 3);
        assert_eq!(p.applied.get("t/0"), Some(&6));
        // Profiles of serve keep no applied offsets: their JSON is unchanged.
        let plain = serde_json::to_value(Profile::default()).unwrap();
        assert!(plain.get("applied").is_none());
    }

    #[test]
    fn a_profile_stays_bounded_whatever_its_events_carry() {
        let mut p = Profile::default();
        let metadata = "m".repeat(900_000);
        for i in 0..150 {
            let e = json!({"source": format!("source-{i}"), "customer_id": "42",
                "event_type": format!("type-{i}"), "timestamp": "2024-01-15T10:30:00Z",
                "value": 1, "metadata": {"blob": metadata}});
            let (event, raw, offset) = valid(&e, i);
            p.apply(&Valid {
                event: &event,
                raw: &raw,
                partition: 0,
                offset,
            });
        }
        assert_eq!(p.events, 150);
        assert_eq!(p.last_by_source.len(), MAX_SOURCES);
        assert!(
            p.last_by_source.contains_key("source-149"),
            "the newest stay"
        );
        assert_eq!(p.by_type.len(), MAX_TYPES + 1);
        assert_eq!(p.by_type[OTHER_TYPES].count, 150 - MAX_TYPES as u64);
        let stored = serde_json::to_vec(&p).unwrap();
        assert!(stored.len() < 300_000, "{} bytes", stored.len());
        let kept: Value = serde_json::from_str(p.recent[0].event.get()).unwrap();
        // Kept without its metadata, saying how big it was as sent.
        assert!(
            kept["kafkabox_truncated"].as_u64().unwrap() > 900_000,
            "{kept}"
        );
        assert_eq!(kept["value"], 1);
        assert!(kept.get("metadata").is_none());
    }

    #[test]
    fn counts_sums_first_last_and_recent() {
        let mut p = Profile::default();
        let apply = |p: &mut Profile, e: &Value, offset: i64| {
            let (event, raw, offset) = valid(e, offset);
            p.apply(&Valid {
                event: &event,
                raw: &raw,
                partition: 0,
                offset,
            });
        };
        for (i, (t, v, s)) in [
            ("recharge", 50.0, "billing"),
            ("data_usage", 500.5, "in"),
            ("recharge", 20.0, "billing"),
        ]
        .iter()
        .enumerate()
        {
            let e = json!({"source": s, "customer_id": "42", "event_type": t, "timestamp": format!("2024-01-15T10:3{i}:00Z"), "value": v});
            apply(&mut p, &e, i as i64);
        }
        let doc = serde_json::to_value(&p).unwrap();
        assert_eq!(doc["customer_id"], "42");
        assert_eq!(doc["events"], 3);
        assert_eq!(doc["by_type"]["recharge"]["count"], 2);
        assert_eq!(doc["by_type"]["recharge"]["value_sum"], 70.0);
        assert_eq!(doc["by_type"]["data_usage"]["value_sum"], 500.5);
        assert_eq!(doc["first_event"]["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(doc["last_event"]["timestamp"], "2024-01-15T10:32:00Z");
        assert_eq!(doc["last_by_source"]["billing"]["offset"], 2);
        assert_eq!(doc["last_by_source"]["in"]["event"]["value"], 500.5);
        assert_eq!(doc["recent"].as_array().unwrap().len(), 3);
        for i in 0..30 {
            let e = json!({"source": "app", "customer_id": "42", "event_type": "app_login", "timestamp": "2024-01-15T11:00:00Z", "value": null});
            apply(&mut p, &e, 10 + i);
        }
        let doc = serde_json::to_value(&p).unwrap();
        assert_eq!(doc["recent"].as_array().unwrap().len(), RECENT_EVENTS);
        assert_eq!(doc["recent"][RECENT_EVENTS - 1]["offset"], 39);
        assert_eq!(
            doc["by_type"]["app_login"]["value_sum"], 0.0,
            "null values add nothing"
        );
        // The stored form reads back.
        let back: Profile = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), doc);
    }

    #[test]
    fn an_unreadable_stored_profile_does_not_stop_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            kafkabox_storage::Store::open(kafkabox_storage::StoreConfig::new(dir.path())).unwrap();
        store
            .put_state(&[(profile_key("7"), b"{not json".to_vec())])
            .unwrap();
        let e = json!({"source": "s", "customer_id": "7", "event_type": "recharge", "timestamp": "t", "value": 2});
        let raw = serde_json::to_vec(&e).unwrap();
        let mut profiles = Profiles::new(CACHE_BYTES);
        let (changed, writes) = profiles
            .apply(
                &store,
                &[Valid {
                    event: &e,
                    raw: &raw,
                    partition: 0,
                    offset: 0,
                }],
            )
            .unwrap();
        assert_eq!(changed, vec!["7".to_string()]);
        let doc: Value = serde_json::from_slice(&writes[0].1).unwrap();
        assert_eq!(doc["events"], 1);
        // The cache serves the next pass without reading the store again.
        profiles
            .apply(
                &store,
                &[Valid {
                    event: &e,
                    raw: &raw,
                    partition: 0,
                    offset: 1,
                }],
            )
            .unwrap();
        profiles.forget(&changed);
        assert!(profiles.cache.is_empty());
        store.close().unwrap();
    }

    #[test]
    fn a_new_profile_serialises_with_nulls() {
        let doc = serde_json::to_value(Profile::default()).unwrap();
        assert_eq!(doc["first_event"], Value::Null);
        assert_eq!(doc["recent"], json!([]));
    }
}
