//! kafkabox-storage: topics, partition logs and producer state in one sled database.
//!
//! Speaks kafkabox terms (topic, partition, offset, opaque batch bytes); knows nothing of Kafka
//! API versions.
//!
//! Layout (trees of one `sled::Db`):
//! - `log`: key = partition id (u32 BE) ++ base offset (u64 BE), value = the record batch as the
//!   client sent it, base offset rewritten. Producer state of partition `p` lives in the same
//!   tree under `p ++ [0xff; 8] ++ producer id (i64 BE)`, which sorts after every batch key (offsets
//!   are below 2^63), so a batch and the producer state it changes go in one atomic
//!   `apply_batch`.
//! - `catalog`: topic name -> JSON [`TopicMeta`].
//! - `meta`: cluster id, next partition id, next producer id.
//!
//! Log end and log start offsets are not stored: they are read off the last and first batch
//! keys when the store opens.
//!
//! Durability: sled's own flush timer is off. One flusher thread calls `Db::flush` whenever a
//! writer asks and at a fixed interval; every writer waiting for durability is released by the
//! first flush that started after its write (group commit).

pub mod producer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use kafkabox_protocol::batch::{self, BatchHeader};
use producer::{BatchMeta, ProducerEntry, SeqCheck};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("flush failed: {0}")]
    Flush(String),
    #[error("store is shut down")]
    Closed,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch { current: i16, got: i16 },
    #[error("producer id {0} was never issued by this broker")]
    UnknownProducerId(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a successful append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// A retried batch that was already stored: nothing was written.
    pub duplicate: bool,
    /// Write sequence number to pass to [`Store::wait_durable`].
    pub write_seq: u64,
}

/// Offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub log_end: i64,
}

/// sled's log segment size. Fixed when a data dir is created; do not change it for existing
/// data. Measured with `kafkabox bench` (1 KiB messages, acks=all, librdkafka batches of up
/// to ~1 MiB): the 512 KiB default pushes every batch above ~128 KiB into a blob file (1 GiB
/// run: 105 MiB/s, 3.0 GiB on disk); 8 MiB segments keep them inline (192 MiB/s, 1.5 GiB).
const SLED_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// Flush at least this often when there are unflushed writes (acks=1 / acks=0 data).
    pub flush_interval: Duration,
}

impl StoreConfig {
    pub fn new(path: impl AsRef<Path>) -> StoreConfig {
        StoreConfig {
            path: path.as_ref().to_path_buf(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            flush_interval: Duration::from_millis(200),
        }
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

/// One partition log.
#[derive(Debug)]
pub struct Partition {
    /// Store-wide id: the key prefix of its batches.
    pub id: u32,
    pub topic: String,
    pub index: i32,
    state: Mutex<PartitionState>,
}

#[derive(Debug)]
struct PartitionState {
    next_offset: i64,
    log_start: i64,
    producers: HashMap<i64, ProducerEntry>,
}

fn batch_key(pid: u32, offset: i64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..].copy_from_slice(&(offset as u64).to_be_bytes());
    k
}

/// Exclusive upper bound of partition `pid`'s batch keys.
fn batch_key_end(pid: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4] = 0x80;
    k
}

fn producer_key(pid: u32, producer_id: i64) -> [u8; 20] {
    let mut k = [0xffu8; 20];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[12..].copy_from_slice(&producer_id.to_be_bytes());
    k
}

fn producer_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xffu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

const META_CLUSTER_ID: &[u8] = b"cluster_id";
const META_NEXT_PARTITION: &[u8] = b"next_partition_id";
const META_NEXT_PRODUCER: &[u8] = b"next_producer_id";

fn read_u64(v: &[u8]) -> Result<u64, StoreError> {
    let a: [u8; 8] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", v.len())))?;
    Ok(u64::from_be_bytes(a))
}

/// How writers wake the flusher thread. Kept apart from [`Inner`] so that the flusher holds
/// only a weak reference to the store and a dropped store closes its database.
#[derive(Debug, Default)]
struct FlushSignal {
    /// (flush wanted now, shut down)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

/// Durability progress shared between writers and the flusher.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Durable {
    /// Every write with a sequence number at or below this is on disk.
    upto: u64,
    /// Set when the last flush failed; writers waiting get it.
    error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    log: sled::Tree,
    catalog: sled::Tree,
    meta: sled::Tree,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and producer id allocation.
    admin: Mutex<()>,
    /// Sequence number of the latest write.
    written: AtomicU64,
    durable: watch::Sender<Durable>,
    signal: Arc<FlushSignal>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bumped after every append: long-polling fetches wait on it.
    appends: watch::Sender<u64>,
    config: StoreConfig,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store at `config.path` and starts its flusher thread.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .segment_size(SLED_SEGMENT_BYTES)
            .open()?;
        let log = db.open_tree("log")?;
        let catalog = db.open_tree("catalog")?;
        let meta = db.open_tree("meta")?;
        let cluster_id = match meta.get(META_CLUSTER_ID)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| StoreError::Corrupt("cluster id is not UTF-8".into()))?,
            None => {
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
            let mut parts = Vec::with_capacity(tm.partition_ids.len());
            for (index, &pid) in tm.partition_ids.iter().enumerate() {
                parts.push(Arc::new(load_partition(&log, pid, &tm.name, index as i32)?));
            }
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
        let inner = Arc::new(Inner {
            db,
            log,
            catalog,
            meta,
            cluster_id,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            written: AtomicU64::new(0),
            durable,
            signal: Arc::new(FlushSignal::default()),
            flusher: Mutex::new(None),
            appends,
            config,
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
        let first = match inner.meta.get(META_NEXT_PARTITION)? {
            Some(v) => read_u64(&v)? as u32,
            None => 0,
        };
        let partition_ids: Vec<u32> = (0..partitions).map(|i| first + i).collect();
        let tm = TopicMeta {
            name: name.to_string(),
            id: new_uuid(),
            partition_ids,
            configs,
        };
        let json = serde_json::to_vec(&tm).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        inner.meta.insert(
            META_NEXT_PARTITION,
            &u64::from(first + partitions).to_be_bytes(),
        )?;
        inner.catalog.insert(name.as_bytes(), json)?;
        inner.db.flush()?;
        let parts = tm
            .partition_ids
            .iter()
            .enumerate()
            .map(|(i, &pid)| {
                Arc::new(Partition {
                    id: pid,
                    topic: name.to_string(),
                    index: i as i32,
                    state: Mutex::new(PartitionState {
                        next_offset: 0,
                        log_start: 0,
                        producers: HashMap::new(),
                    }),
                })
            })
            .collect();
        let topic = Arc::new(Topic {
            meta: tm,
            partitions: parts,
        });
        inner
            .topics
            .write()
            .map_err(|_| StoreError::Closed)?
            .insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Allocates a new producer id (epoch 0). Durable when this returns.
    pub fn new_producer_id(&self) -> Result<i64, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        let id = match inner.meta.get(META_NEXT_PRODUCER)? {
            Some(v) => read_u64(&v)?,
            None => 1000,
        };
        inner
            .meta
            .insert(META_NEXT_PRODUCER, &(id + 1).to_be_bytes())?;
        inner.db.flush()?;
        Ok(id as i64)
    }

    fn producer_id_issued(&self, producer_id: i64) -> bool {
        match self.inner.meta.get(META_NEXT_PRODUCER) {
            Ok(Some(v)) => read_u64(&v)
                .map(|next| (producer_id as u64) < next)
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Appends one validated batch (`bytes`, header `h`) to `part`. The base offset is assigned
    /// here and written into the stored copy; idempotent batches are checked against the
    /// producer's sequence numbers and stored atomically with the updated producer state.
    pub fn append(
        &self,
        part: &Partition,
        bytes: &[u8],
        h: &BatchHeader,
    ) -> Result<Appended, AppendError> {
        let inner = &self.inner;
        let mut st = part.state.lock().map_err(|_| StoreError::Closed)?;
        let mut producer_update = None;
        if h.is_idempotent() {
            let last_seq = h.last_sequence();
            let entry = st.producers.get(&h.producer_id);
            if entry.is_none() && !self.producer_id_issued(h.producer_id) {
                return Err(AppendError::UnknownProducerId(h.producer_id));
            }
            match ProducerEntry::check(entry, h.producer_epoch, h.base_sequence, last_seq) {
                SeqCheck::Append => {}
                SeqCheck::Duplicate { base_offset } => {
                    return Ok(Appended {
                        base_offset,
                        log_start_offset: st.log_start,
                        duplicate: true,
                        write_seq: inner.written.load(Ordering::SeqCst),
                    })
                }
                SeqCheck::OutOfOrder { expected, got } => {
                    return Err(AppendError::OutOfOrderSequence { expected, got })
                }
                SeqCheck::StaleEpoch { current, got } => {
                    return Err(AppendError::InvalidProducerEpoch { current, got })
                }
            }
            let mut updated = entry.cloned().unwrap_or_else(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: Vec::new(),
            });
            updated.record(
                h.producer_epoch,
                BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq,
                    base_offset: st.next_offset,
                    last_offset_delta: h.last_offset_delta,
                },
            );
            producer_update = Some(updated);
        }
        let base_offset = st.next_offset;
        let mut stored = BytesMut::from(bytes);
        batch::set_base_offset(&mut stored, base_offset);
        batch::set_leader_epoch(&mut stored, 0);
        let key = batch_key(part.id, base_offset);
        match &producer_update {
            None => {
                inner
                    .log
                    .insert(key, stored.as_ref())
                    .map_err(StoreError::from)?;
            }
            Some(entry) => {
                let mut b = sled::Batch::default();
                b.insert(&key[..], stored.as_ref());
                b.insert(&producer_key(part.id, h.producer_id)[..], entry.encode());
                inner.log.apply_batch(b).map_err(StoreError::from)?;
            }
        }
        if let Some(entry) = producer_update {
            st.producers.insert(h.producer_id, entry);
        }
        st.next_offset = base_offset + i64::from(h.last_offset_delta) + 1;
        let write_seq = inner.written.fetch_add(1, Ordering::SeqCst) + 1;
        let log_start_offset = st.log_start;
        drop(st);
        inner.appends.send_modify(|n| *n += 1);
        Ok(Appended {
            base_offset,
            log_start_offset,
            duplicate: false,
            write_seq,
        })
    }

    /// Sequence number of the latest write (for waiting on durability of metadata changes).
    pub fn last_write_seq(&self) -> u64 {
        self.inner.written.load(Ordering::SeqCst)
    }

    /// Waits until every write up to `write_seq` is flushed to disk (group commit).
    pub async fn wait_durable(&self, write_seq: u64) -> Result<(), StoreError> {
        let mut rx = self.inner.durable.subscribe();
        if rx.borrow().upto >= write_seq {
            return Ok(());
        }
        self.inner.request_flush();
        let state = rx
            .wait_for(|d| d.upto >= write_seq || d.error.is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        match &state.error {
            Some(e) if state.upto < write_seq => Err(StoreError::Flush(e.clone())),
            _ => Ok(()),
        }
    }

    /// Flushes everything now (blocking). Used at shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        let upto = self.inner.written.load(Ordering::SeqCst);
        self.inner.db.flush()?;
        self.inner.durable.send_modify(|d| {
            d.upto = d.upto.max(upto);
            d.error = None;
        });
        Ok(())
    }

    /// Stops the flusher thread after a final flush.
    pub fn close(&self) -> Result<(), StoreError> {
        if let Ok(mut s) = self.inner.signal.state.lock() {
            s.1 = true;
        }
        self.inner.signal.cv.notify_all();
        let handle = self.inner.flusher.lock().ok().and_then(|mut f| f.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.flush()
    }

    /// A receiver that changes after every append (for long-polling fetches).
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.inner.appends.subscribe()
    }

    pub fn offsets(&self, part: &Partition) -> Offsets {
        match part.state.lock() {
            Ok(st) => Offsets {
                log_start: st.log_start,
                log_end: st.next_offset,
            },
            Err(_) => Offsets {
                log_start: 0,
                log_end: 0,
            },
        }
    }

    /// Copies whole batches starting with the one that holds `offset` into `out`, up to
    /// `max_bytes`. With `oversized_first` the first batch is copied even when it alone exceeds
    /// `max_bytes`, so a consumer always makes progress (KIP-74).
    /// Returns `None` when `offset` is outside the log.
    pub fn read(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Offsets>, StoreError> {
        let offsets = self.offsets(part);
        if offset < offsets.log_start || offset > offsets.log_end {
            return Ok(None);
        }
        if offset == offsets.log_end {
            return Ok(Some(offsets));
        }
        let log = &self.inner.log;
        let mut start = batch_key(part.id, offset);
        if let Some(item) = log
            .range(batch_key(part.id, 0)..=batch_key(part.id, offset))
            .next_back()
        {
            let (k, v) = item?;
            let h = stored_header(&v)?;
            start = k
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("batch key of {} bytes", k.len())))?;
            if h.last_offset() < offset {
                start = batch_key(part.id, h.last_offset() + 1);
            }
        }
        let end = batch_key(part.id, offsets.log_end);
        let first_len = out.len();
        for item in log.range(start..end) {
            let (_, v) = item?;
            let first = out.len() == first_len;
            if out.len() - first_len + v.len() > max_bytes && !(first && oversized_first) {
                break;
            }
            out.extend_from_slice(&v);
            if out.len() - first_len >= max_bytes {
                break;
            }
        }
        Ok(Some(offsets))
    }

    /// The headers of a partition's batches, oldest first.
    fn headers(&self, part: &Partition) -> impl Iterator<Item = Result<BatchHeader, StoreError>> {
        let offsets = self.offsets(part);
        self.inner
            .log
            .range(batch_key(part.id, offsets.log_start)..batch_key(part.id, offsets.log_end))
            .map(|item| {
                let (_, v) = item?;
                stored_header(&v)
            })
    }

    /// The earliest offset whose batch has a max timestamp at or after `timestamp`, with that
    /// timestamp; `None` when no batch is that recent. Batch granularity: the returned offset is
    /// the batch's base offset.
    pub fn offset_for_timestamp(
        &self,
        part: &Partition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        for h in self.headers(part) {
            let h = h?;
            if h.max_timestamp >= timestamp {
                return Ok(Some((h.base_offset, h.max_timestamp)));
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp(&self, part: &Partition) -> Result<Option<(i64, i64)>, StoreError> {
        let mut best: Option<(i64, i64)> = None;
        for h in self.headers(part) {
            let h = h?;
            if best.is_none_or(|(_, ts)| h.max_timestamp > ts) {
                best = Some((h.last_offset(), h.max_timestamp));
            }
        }
        Ok(best)
    }

    /// Removes whole batches from the front of every partition of `topic` whose records are all
    /// older than `cutoff_ms` (max timestamp below it). The last batch of a partition is kept so
    /// the log end offset survives a restart. Returns the number of batches removed.
    pub fn expire_before(&self, part: &Partition, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut st = part.state.lock().map_err(|_| StoreError::Closed)?;
        let log = &self.inner.log;
        let mut removed = 0;
        let mut new_start = st.log_start;
        let mut keys = Vec::new();
        for item in log.range(batch_key(part.id, st.log_start)..batch_key(part.id, st.next_offset))
        {
            let (k, v) = item?;
            let h = stored_header(&v)?;
            if h.max_timestamp >= cutoff_ms
                || h.last_offset() + 1 >= st.next_offset
                || keys.len() >= 10_000
            {
                break;
            }
            keys.push(k);
            new_start = h.last_offset() + 1;
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let mut b = sled::Batch::default();
        for k in &keys {
            b.remove(k.clone());
            removed += 1;
        }
        log.apply_batch(b)?;
        st.log_start = new_start;
        Ok(removed)
    }
}

impl Inner {
    fn request_flush(&self) {
        if let Ok(mut s) = self.signal.state.lock() {
            s.0 = true;
        }
        self.signal.cv.notify_one();
    }

    /// One flush covering every write made before it started; its waiters are released together.
    fn flush_once(&self) {
        let target = self.written.load(Ordering::SeqCst);
        if target <= self.durable.borrow().upto {
            return;
        }
        match self.db.flush() {
            Ok(_) => self.durable.send_modify(|d| {
                d.upto = d.upto.max(target);
                d.error = None;
            }),
            Err(e) => {
                tracing::error!(error = %e, "flushing the store failed; acks=all producers get KAFKA_STORAGE_ERROR");
                self.durable.send_modify(|d| d.error = Some(e.to_string()));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The flusher loop: runs until `close` or until the store is dropped. Wakes when a writer asks
/// for durability and at least every `interval`.
fn run_flusher(store: std::sync::Weak<Inner>, signal: Arc<FlushSignal>, interval: Duration) {
    loop {
        {
            let Ok(mut st) = signal.state.lock() else {
                return;
            };
            if !st.0 && !st.1 {
                st = match signal.cv.wait_timeout(st, interval) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
            }
            if st.1 {
                return;
            }
            st.0 = false;
        }
        let Some(inner) = store.upgrade() else { return };
        inner.flush_once();
    }
}

/// The header of a batch read back from the log; a short one means the store is corrupt.
fn stored_header(v: &[u8]) -> Result<BatchHeader, StoreError> {
    batch::parse_header(v).map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))
}

fn load_partition(
    log: &sled::Tree,
    pid: u32,
    topic: &str,
    index: i32,
) -> Result<Partition, StoreError> {
    let range = batch_key(pid, 0)..batch_key_end(pid);
    let corrupt =
        |e: batch::BatchError| StoreError::Corrupt(format!("partition {topic}-{index}: {e}"));
    let (log_start, next_offset) = match log.range(range.clone()).next_back() {
        Some(last) => {
            let (_, v) = last?;
            let h = batch::parse_header(&v).map_err(corrupt)?;
            let first = match log.range(range).next() {
                Some(item) => {
                    let (k, _) = item?;
                    read_u64(k.get(4..).unwrap_or_default())? as i64
                }
                None => 0,
            };
            (first, h.last_offset() + 1)
        }
        None => (0, 0),
    };
    let mut producers = HashMap::new();
    for item in log.scan_prefix(producer_prefix(pid)) {
        let (k, v) = item?;
        if k.len() != 20 {
            continue;
        }
        let producer_id = read_u64(&k[12..20])? as i64;
        let entry = ProducerEntry::decode(&v).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "producer state of {producer_id} in {topic}-{index}"
            ))
        })?;
        producers.insert(producer_id, entry);
    }
    Ok(Partition {
        id: pid,
        topic: topic.to_string(),
        index,
        state: Mutex::new(PartitionState {
            next_offset,
            log_start,
            producers,
        }),
    })
}

fn random_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

fn new_uuid() -> [u8; 16] {
    random_bytes()
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
mod tests;
