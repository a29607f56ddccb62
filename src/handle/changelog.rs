//! The profiles of `kafkabox handle`: re-keyed events applied to the profiles they change
//! (each skipping what it applied already), every change sent to the compacted changelog topic
//! and, once acknowledged, to the local sled cache; a partition's profiles restored from the
//! changelog before its first event (skipping late writes of a process that had lost it).
//! The profiles changed lately stay typed in memory ([`HotProfiles`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::{Runner, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC};
use crate::pipeline::Event;
use crate::profile::{BoundedCache, Profile, Valid};

/// Most bytes (of their JSON) of profiles kept typed in memory.
pub(super) const HOT_BYTES: usize = 32 * 1024 * 1024;

/// Profiles kept typed in memory, so a batch does not read back and parse the JSON of every
/// profile it changes: customer -> (re-keyed partition, profile), bounded by [`HOT_BYTES`] of
/// their JSON. A profile dropped is read from the cache (or the changes in flight) again.
pub(super) type HotProfiles = BoundedCache<(i32, Profile)>;

/// Changelog deliveries, and (customer, profile JSON) for the local cache once they are
/// acknowledged.
pub(super) type ProfileWrites = (
    Vec<rdkafka::producer::DeliveryFuture>,
    Vec<(String, Vec<u8>)>,
);

/// Whether changelog value `incoming` is an older state of the profile `current`: every
/// source offset it applied is at or before `current`'s, and they differ. Successive states
/// of a profile only move its offsets forward, so such a record is a late write of a process
/// that lost the partition (a "zombie": its send was in flight when another took over) and
/// must not move the profile back.
fn behind(incoming: &[u8], current: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Applied {
        #[serde(default)]
        applied: BTreeMap<String, i64>,
    }
    let (Ok(i), Ok(c)) = (
        serde_json::from_slice::<Applied>(incoming),
        serde_json::from_slice::<Applied>(current),
    ) else {
        return false;
    };
    i.applied != c.applied
        && i.applied
            .iter()
            .all(|(k, o)| c.applied.get(k).is_some_and(|co| co >= o))
}

/// Key of a profile in the local cache (`p/<customer>`; not the appliance state's
/// [`crate::profile::profile_key`]).
pub(super) fn cache_key(customer: &str) -> Vec<u8> {
    format!("p/{customer}").into_bytes()
}

/// Key of a changelog partition's checkpoint (the next changelog offset to restore).
fn checkpoint_key(partition: i32) -> Vec<u8> {
    format!("c/{partition}").into_bytes()
}

impl Runner {
    /// Reads changelog partition `partition` from the local checkpoint to its end into the
    /// local cache.
    pub(super) async fn restore(&mut self, partition: i32) -> Result<()> {
        tracing::debug!(partition, "restoring");
        // Another process may have changed them while this one did not own the partition.
        self.hot.retain(|(p, _)| *p != partition);
        let started = std::time::Instant::now();
        let cache = self.cache.clone();
        let client = self.builder.client();
        let changelog = self.changelog.clone();
        let restored = tokio::task::spawn_blocking(move || -> Result<u64> {
            let from = cache
                .get(checkpoint_key(partition))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(i64::from_be_bytes)
                .unwrap_or(0);
            let consumer: BaseConsumer = client
                .clone()
                .set("group.id", "kafkabox-handle-restore")
                .set("enable.auto.commit", "false")
                .create()
                .context("changelog consumer")?;
            let consumer = crate::clients::Closing::new(consumer, "changelog consumer");
            let (low, high) = consumer
                .fetch_watermarks(&changelog, partition, Duration::from_secs(30))
                .with_context(|| format!("{changelog}/{partition}: watermarks"))?;
            let start = from.max(low);
            let mut n = 0u64;
            let mut stale = 0u64;
            if start < high {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&changelog, partition, Offset::Offset(start))?;
                consumer.assign(&tpl)?;
                let mut at = start;
                let mut quiet = std::time::Instant::now();
                let deadline = std::time::Instant::now() + Duration::from_secs(600);
                while at < high {
                    if std::time::Instant::now() > deadline {
                        bail!("{changelog}/{partition}: restore did not reach offset {high} within 10 minutes");
                    }
                    let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                        // The changelog's end may be a transaction's marker (exactly_once_v2),
                        // which is never returned: the position moves past it.
                        let pos = consumer.position().ok().and_then(|tpl| {
                            tpl.find_partition(&changelog, partition)
                                .and_then(|e| match e.offset() {
                                    Offset::Offset(o) => Some(o),
                                    _ => None,
                                })
                        });
                        if pos.is_some_and(|p| p >= high) {
                            break;
                        }
                        if quiet.elapsed() > Duration::from_secs(10) {
                            tracing::warn!(partition, at, high, "restoring profiles: nothing read from the changelog for 10 s");
                            quiet = std::time::Instant::now();
                        }
                        continue;
                    };
                    quiet = std::time::Instant::now();
                    let m = m.with_context(|| format!("reading {changelog}/{partition}"))?;
                    let mut batch = sled::Batch::default();
                    if let Some(key) = m.key() {
                        let key = cache_key(&String::from_utf8_lossy(key));
                        match m.payload() {
                            Some(v) => {
                                let current = cache.get(&key)?;
                                if current.as_deref().is_some_and(|c| behind(v, c)) {
                                    // A late write of a process that had lost the partition.
                                    stale += 1;
                                } else {
                                    batch.insert(key, v);
                                }
                            }
                            None => batch.remove(key),
                        }
                    }
                    at = m.offset() + 1;
                    batch.insert(checkpoint_key(partition), &at.to_be_bytes());
                    cache.apply_batch(batch)?;
                    n += 1;
                }
            }
            if stale > 0 {
                tracing::warn!(partition, stale, "changelog records older than the profile restored before them were skipped (late writes of a process that had lost the partition)");
            }
            Ok(n)
        })
        .await??;
        tracing::info!(
            partition,
            changelog = %self.changelog,
            records = restored,
            ms = started.elapsed().as_millis() as u64,
            "profiles restored from the changelog"
        );
        Ok(())
    }

    /// Re-keyed events of repartition partition `partition`: the profiles they change are
    /// sent to the changelog (same partition); returns the deliveries and the profiles for the
    /// local cache, written once those are acknowledged. A profile skips an event it has
    /// applied already (by its original topic, partition and offset).
    pub(super) fn profile(&mut self, partition: i32, events: Vec<Event>) -> Result<ProfileWrites> {
        let mut changed: BTreeMap<String, Profile> = BTreeMap::new();
        for e in &events {
            let header = |name: &str| {
                e.headers
                    .iter()
                    .find(|(k, _)| k.as_ref() == name.as_bytes())
                    .and_then(|(_, v)| v.as_deref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let (Some(topic), Some(p), Some(o)) = (
                header(SOURCE_TOPIC),
                header(SOURCE_PARTITION).and_then(|p| p.parse::<i32>().ok()),
                header(SOURCE_OFFSET).and_then(|o| o.parse::<i64>().ok()),
            ) else {
                tracing::warn!(
                    partition,
                    offset = e.offset,
                    "a re-keyed event without its source headers; skipped"
                );
                continue;
            };
            let Some(v) = e
                .value
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            else {
                continue;
            };
            let Some(customer) = v.get("customer_id").and_then(|c| c.as_str()) else {
                continue;
            };
            if !changed.contains_key(customer) {
                let profile = match self.hot.remove(customer).map(|(_, p)| p) {
                    Some(p) => p,
                    None => {
                        // A change still in flight is newer than the cache.
                        let stored = match self.unacknowledged.get(customer) {
                            Some((_, json)) => Some(sled::IVec::from(json.as_slice())),
                            None => self.cache.get(cache_key(customer))?,
                        };
                        stored
                            .and_then(|b| serde_json::from_slice::<Profile>(&b).ok())
                            .unwrap_or_default()
                    }
                };
                changed.insert(customer.to_string(), profile);
            }
            let valid = Valid {
                event: &v,
                raw: e.value.as_deref().unwrap_or_default(),
                partition: p,
                offset: o,
            };
            if let Some(profile) = changed.get_mut(customer) {
                profile.apply_once(&topic, &valid);
            }
        }
        let mut writes = Vec::with_capacity(changed.len());
        for (customer, p) in changed {
            let json = serde_json::to_vec(&p)?;
            self.hot
                .insert(customer.clone(), (partition, p), json.len());
            writes.push((customer, json));
        }
        self.hot.evict(|_| false);
        let mut deliveries = Vec::with_capacity(writes.len());
        for (customer, json) in &writes {
            let f = self
                .producer
                .send_result(
                    FutureRecord::to(&self.changelog)
                        .key(customer.as_bytes())
                        .payload(json.as_slice())
                        .partition(partition),
                )
                .map_err(|(e, _)| anyhow::anyhow!("changelog: {e}"))?;
            deliveries.push(f);
        }
        self.handled += events.len() as u64;
        Ok((deliveries, writes))
    }
}

#[cfg(test)]
mod tests {
    use super::behind;

    #[test]
    fn an_older_state_is_behind() {
        let v1 = br#"{"events":1,"applied":{"e/0":5}}"#;
        let v2 = br#"{"events":3,"applied":{"e/0":9,"e/1":2}}"#;
        assert!(behind(v1, v2));
        assert!(!behind(v2, v1));
        assert!(!behind(v2, v2), "the same state is not behind");
        // Apart on two partitions: neither is behind (not a history of one profile).
        let v3 = br#"{"events":2,"applied":{"e/0":10}}"#;
        assert!(!behind(v3, v2));
        assert!(!behind(v2, v3));
        assert!(!behind(b"not json", v2));
    }
}
