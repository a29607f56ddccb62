//! The topic catalog: topics and their partitions (in memory, and as JSON [`TopicMeta`] in the
//! meta `catalog` tree); creating, growing, reconfiguring and deleting topics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::keys::{partition_prefix, read_u64, META_NEXT_PARTITION};
use crate::segment;
use crate::{random_bytes, Partition, SegmentPolicy, Store, StoreConfig, StoreError};

/// The segment policy of a topic with `configs`: its `segment.bytes` and `segment.ms`, else the
/// store's defaults.
pub(crate) fn segment_policy(
    configs: &BTreeMap<String, String>,
    config: &StoreConfig,
) -> SegmentPolicy {
    let get = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    SegmentPolicy {
        bytes: get("segment.bytes")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(config.segment_bytes)
            .max(1),
        ms: get("segment.ms").unwrap_or(config.segment_ms).max(1),
    }
}

/// The persisted description of a topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (UUID bytes).
    pub id: [u8; 16],
    /// Store-wide partition ids, index = partition number.
    pub partition_ids: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub meta: TopicMeta,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Partition `index` of this topic, if it has one.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

impl Store {
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.read().ok()?.get(name).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        match self.inner.topics.read() {
            Ok(t) => t.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Creates a topic with `partitions` partitions. Durable when this returns.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        if self.topic(name).is_some() {
            return Err(StoreError::TopicExists(name.to_string()));
        }
        self.check_partition_limit(u64::from(partitions))?;
        let first = match inner.meta.get(META_NEXT_PARTITION)? {
            Some(v) => read_u64(&v)? as u32,
            None => 0,
        };
        let partition_ids: Vec<u32> = (0..partitions).map(|i| first + i).collect();
        let policy = segment_policy(&configs, &inner.config);
        let tm = TopicMeta {
            name: name.to_string(),
            id: new_uuid(),
            partition_ids,
            configs,
        };
        inner.meta.insert(
            META_NEXT_PARTITION,
            &u64::from(first + partitions).to_be_bytes(),
        )?;
        let parts = tm
            .partition_ids
            .iter()
            .enumerate()
            .map(|(i, &pid)| Arc::new(Partition::new(pid, name, i as i32, policy, true)))
            .collect();
        let topic = self.publish_topic(tm, parts)?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Refuses `want` more partitions past `max_partitions`. The caller holds the admin lock.
    fn check_partition_limit(&self, want: u64) -> Result<(), StoreError> {
        let have: u64 = self
            .topics()
            .iter()
            .map(|t| t.partitions.len() as u64)
            .sum();
        let max = self.inner.config.max_partitions;
        if have + want > max {
            return Err(StoreError::PartitionLimit { have, want, max });
        }
        Ok(())
    }

    /// Deletes a topic: it leaves the catalog durably first, then its partitions' keys (batches,
    /// offsets, producer state) are removed in slices. Partition ids are never reused, so keys
    /// a crash leaves behind are unreachable.
    pub fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        let topic = {
            let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
            let Some(topic) = self.topic(name) else {
                return Err(StoreError::UnknownTopic(name.to_string()));
            };
            inner.catalog.remove(name.as_bytes())?;
            inner.db.flush()?;
            inner
                .topics
                .write()
                .map_err(|_| StoreError::Closed)?
                .remove(name);
            topic
        };
        for part in &topic.partitions {
            // Hold the partition lock so no append lands after the sweep.
            let mut st = part.state.lock().map_err(|_| StoreError::Closed)?;
            for seg in std::mem::take(&mut st.segments) {
                inner.open_segments.forget(&seg);
            }
            st.deleted = true;
            st.loaded = true;
            let dir = segment::partition_dir(&inner.config.path, part.id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(format!("removing {}: {e}", dir.display()))),
            }
            let mut b = sled::Batch::default();
            for item in inner.segments.scan_prefix(partition_prefix(part.id)) {
                b.remove(item?.0);
            }
            inner.segments.apply_batch(b)?;
            loop {
                let mut b = sled::Batch::default();
                let mut n = 0;
                for item in inner
                    .state
                    .scan_prefix(partition_prefix(part.id))
                    .take(10_000)
                {
                    let (k, _) = item?;
                    b.remove(k);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                inner.state.apply_batch(b)?;
            }
            st.producers.clear();
            st.log_start = st.next_offset;
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        inner.appends.send_modify(|n| *n += 1);
        inner.catalog_changes.send_modify(|n| *n += 1);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows `name` to `count` partitions. Durable when this returns.
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<Arc<Topic>, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        let Some(old) = self.topic(name) else {
            return Err(StoreError::UnknownTopic(name.to_string()));
        };
        let have = old.partitions.len() as u32;
        if count <= have {
            return Ok(old);
        }
        self.check_partition_limit(u64::from(count - have))?;
        let first = match inner.meta.get(META_NEXT_PARTITION)? {
            Some(v) => read_u64(&v)? as u32,
            None => 0,
        };
        let mut tm = old.meta.clone();
        tm.partition_ids
            .extend((0..count - have).map(|i| first + i));
        inner.meta.insert(
            META_NEXT_PARTITION,
            &u64::from(first + count - have).to_be_bytes(),
        )?;
        let mut parts = old.partitions.clone();
        for (i, &pid) in tm.partition_ids.iter().enumerate().skip(have as usize) {
            parts.push(Arc::new(Partition::new(
                pid,
                name,
                i as i32,
                segment_policy(&tm.configs, &inner.config),
                true,
            )));
        }
        let topic = self.publish_topic(tm, parts)?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(topic)
    }

    /// Replaces the configs of `name`. Durable when this returns.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        let Some(old) = self.topic(name) else {
            return Err(StoreError::UnknownTopic(name.to_string()));
        };
        let mut tm = old.meta.clone();
        tm.configs = configs;
        let policy = segment_policy(&tm.configs, &inner.config);
        for part in &old.partitions {
            if let Ok(mut p) = part.policy.lock() {
                *p = policy;
            }
        }
        self.publish_topic(tm, old.partitions.clone())
    }

    /// Writes a topic's catalog entry durably and makes it the one `topic()` returns. The
    /// caller holds the admin lock.
    fn publish_topic(
        &self,
        tm: TopicMeta,
        partitions: Vec<Arc<Partition>>,
    ) -> Result<Arc<Topic>, StoreError> {
        let inner = &self.inner;
        let json = serde_json::to_vec(&tm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        inner.catalog.insert(tm.name.as_bytes(), json)?;
        inner.db.flush()?;
        let name = tm.name.clone();
        let topic = Arc::new(Topic {
            meta: tm,
            partitions,
        });
        inner
            .topics
            .write()
            .map_err(|_| StoreError::Closed)?
            .insert(name, topic.clone());
        inner.catalog_changes.send_modify(|n| *n += 1);
        Ok(topic)
    }

    /// A receiver that changes after every topic creation, growth and deletion.
    pub fn subscribe_catalog(&self) -> watch::Receiver<u64> {
        self.inner.catalog_changes.subscribe()
    }

    /// Whether `part` is still one of its topic's partitions (false once the topic is
    /// deleted, also when a topic of the same name was created since).
    pub fn is_live(&self, part: &Partition) -> bool {
        self.topic(&part.topic)
            .is_some_and(|t| t.partitions.iter().any(|p| p.id == part.id))
    }
}

fn new_uuid() -> [u8; 16] {
    random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CommittedOffset, Offsets};

    #[tokio::test]
    async fn committed_offsets_groups_partitions_and_topic_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 2, BTreeMap::new()).unwrap();
        let c = CommittedOffset {
            offset: 7,
            leader_epoch: 0,
            commit_ms: 42,
            metadata: "m".into(),
        };
        s.commit_offsets("group:g", &[(&t.partitions[0], c.clone())])
            .unwrap();
        assert_eq!(
            s.committed_offset(&t.partitions[0], "group:g").unwrap(),
            Some(c)
        );
        assert_eq!(
            s.committed_offset(&t.partitions[1], "group:g").unwrap(),
            None
        );
        // A pipeline stage's 8-byte commit reads back too.
        s.commit_consumer_offset(&t.partitions[1], "stage", 3)
            .unwrap();
        assert_eq!(
            s.committed_offset(&t.partitions[1], "stage")
                .unwrap()
                .map(|c| c.offset),
            Some(3)
        );
        assert_eq!(s.consumer_offset(&t.partitions[0], "group:g").unwrap(), 7);
        s.put_group_record("g", b"{}").unwrap();
        assert_eq!(
            s.group_records().unwrap(),
            vec![("g".to_string(), b"{}".to_vec())]
        );

        let grown = s.add_partitions("t", 4).unwrap();
        assert_eq!(grown.partitions.len(), 4);
        assert_eq!(grown.partitions[3].index, 3);
        s.delete_topic("t").unwrap();
        assert!(s.topic("t").is_none());
        assert!(matches!(
            s.delete_topic("t"),
            Err(StoreError::UnknownTopic(_))
        ));
        // A new topic of the same name starts empty: its partitions have new ids.
        let t2 = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        assert_eq!(
            s.committed_offset(&t2.partitions[0], "group:g").unwrap(),
            None
        );
        assert_eq!(
            s.offsets(&t2.partitions[0]),
            Offsets {
                log_start: 0,
                log_end: 0
            }
        );
    }
}
