//! Opening a store: the meta database and its trees, the cluster id (made on the first open),
//! the topic catalog read into memory, and the flusher thread started.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::catalog::segment_policy;
use crate::flush::{run_flusher, Durable, FlushSignal};
use crate::keys::META_CLUSTER_ID;
use crate::segment::{self, OpenSegments};
use crate::space;
use crate::{
    random_bytes, FlushStats, Inner, Partition, Store, StoreConfig, StoreError, Topic, TopicMeta,
};

/// A written segment's database is closed and reopened after this many bytes: sled 0.34 keeps
/// what was written through an open database in memory (measured: RSS follows the bytes
/// written), so this bounds the memory of each partition being written.
const RECYCLE_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store at `config.path` and starts its flusher thread.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let db = segment::open_sled(&config.path, config.cache_capacity_bytes, false)?;
        // The tree's on-disk name "log" is historical (see `Inner::state`): never rename it.
        let state = db.open_tree("log")?;
        let segments = db.open_tree("segments")?;
        let catalog = db.open_tree("catalog")?;
        let meta = db.open_tree("meta")?;
        let groups = db.open_tree("groups")?;
        let security = db.open_tree("security")?;
        let cluster_id = match meta.get(META_CLUSTER_ID)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| StoreError::Corrupt("cluster id is not UTF-8".into()))?,
            None => {
                // A data dir with log segments but no cluster id lost its metadata database
                // (deleted or replaced): starting an empty cluster over it would hide its data.
                let segs = config.path.join("segments");
                let has_segments = std::fs::read_dir(&segs)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if has_segments || !catalog.is_empty() {
                    return Err(StoreError::Corrupt(format!(
                        "{} holds log segments but its metadata database has no cluster id: the metadata (sled's files directly in the data dir) was deleted or replaced. kafkabox will not start an empty cluster over existing data; restore the data dir from a backup",
                        config.path.display()
                    )));
                }
                let id = new_cluster_id();
                meta.insert(META_CLUSTER_ID, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        let mut topics = BTreeMap::new();
        for item in catalog.iter() {
            let (_, v) = item?;
            let tm: TopicMeta = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("topic catalog entry: {e}")))?;
            let policy = segment_policy(&tm.configs, &config);
            let parts = tm
                .partition_ids
                .iter()
                .enumerate()
                .map(|(index, &pid)| {
                    Arc::new(Partition::new(pid, &tm.name, index as i32, policy, false))
                })
                .collect();
            topics.insert(
                tm.name.clone(),
                Arc::new(Topic {
                    meta: tm,
                    partitions: parts,
                }),
            );
        }
        let (durable, _) = watch::channel(Durable {
            upto: 0,
            error: None,
        });
        let (appends, _) = watch::channel(0u64);
        let (catalog_changes, _) = watch::channel(0u64);
        // Each open segment gets an equal share of the page cache.
        let max_open = config.max_open_segments.max(2);
        let open_segments = OpenSegments::new(
            max_open,
            (config.cache_capacity_bytes / max_open as u64).max(1 << 20),
            RECYCLE_BYTES.min(config.segment_bytes.max(1 << 20)),
        );
        let inner = Arc::new(Inner {
            db,
            state,
            segments,
            open_segments,
            dirty: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
            flushing: Mutex::new(()),
            catalog,
            meta,
            groups,
            security,
            producer_id_secret: std::sync::OnceLock::new(),
            cluster_id,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            written: AtomicU64::new(0),
            durable,
            signal: Arc::new(FlushSignal::default()),
            flusher: Mutex::new(None),
            appends,
            catalog_changes,
            space: space::DiskSpace::new(config.path.clone(), config.min_free_bytes),
            config,
            flush_stats: FlushStats::default(),
        });
        let weak = Arc::downgrade(&inner);
        let signal = inner.signal.clone();
        let interval = inner.config.flush_interval;
        let handle = std::thread::Builder::new()
            .name("kafkabox-flusher".into())
            .spawn(move || run_flusher(weak, signal, interval))
            .map_err(|e| StoreError::Flush(format!("cannot start flusher thread: {e}")))?;
        if let Ok(mut f) = inner.flusher.lock() {
            *f = Some(handle);
        }
        Ok(Store { inner })
    }

    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64 without padding (22 chars).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = random_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_in_use_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(StoreConfig::new(dir.path())).unwrap();
        let second = Store::open(StoreConfig::new(dir.path()));
        assert!(matches!(second, Err(StoreError::InUse(_))), "{second:?}");
        first.close().unwrap();
    }
}
