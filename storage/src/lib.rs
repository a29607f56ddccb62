//! kafkabox-storage: topics, partition logs and producer state in sled databases.
//!
//! Speaks kafkabox terms (topic, partition, offset, opaque batch bytes); knows nothing of Kafka
//! API versions.
//!
//! Layout: the data dir is itself a sled database (the *meta* database), and each partition's
//! log is a sequence of segments, each a sled database of its own under
//! `segments/<partition id>/<base offset>/` (see [`segment`]). In every log tree, a batch is
//! stored under key = partition id (u32 BE) ++ base offset (u64 BE) ++ chunk (u16 BE), value =
//! the record batch as the client sent it (base offset rewritten) in chunks of at most
//! [`CHUNK_BYTES`], the header in chunk 0.
//!
//! - segment `log` tree: the batches from the segment's base offset on; in the newest segment
//!   also the producer state of the partition under `p ++ [0xff; 8] ++ producer id (i64 BE)` and
//!   writer positions under `p ++ [0xfc; 8] ++ writer`, which sort after every chunk key (offsets
//!   are below 2^63), so a batch's chunks and the state it changes go in one atomic
//!   `apply_batch`. A new segment's first write carries a snapshot of both. A segment also
//!   holds the aborted transaction index entries of the ABORT markers it holds, under
//!   `p ++ [0xf8; 8] ++ marker offset`, written with the marker.
//! - meta `log` tree (a historical name; `Inner::state` in the code): consumer offsets, log start
//!   markers, durable ends, offset floors and repair gaps, appliance state; in data dirs written
//!   before segments existed also batches and producer state (the legacy segment).
//! - meta `segments`: partition id ++ base offset -> the summary of a sealed segment.
//! - meta `catalog`: topic name -> JSON [`TopicMeta`].
//! - meta `meta`: cluster id, next partition id, next producer id, the producer-id secret,
//!   broker configs.
//! - meta `groups` and `security`: consumer-group records and security records (opaque).
//!
//! Log end and log start offsets are not stored: they come from the segments and the log start
//! markers when a partition is first used (partitions load lazily, so opening the store reads
//! only the catalog).
//!
//! Durability: sled's own flush timer is off. One flusher thread flushes the meta database and
//! every segment database written since the last flush, whenever a writer asks and at a fixed
//! interval; every writer waiting for durability is released by the first flush that started
//! after its write (group commit).
//!
//! Code map: this file holds the shared types ([`Store`] and its inner state, [`StoreConfig`],
//! the errors); every other module adds one concern's `impl Store` block (or helps one).
//! - `open.rs`: [`Store::open`]: the meta database's trees, the cluster id, the catalog, the
//!   flusher thread.
//! - `keys.rs`: the key layout of every tree (key builders, parsers, meta keys), batch chunking,
//!   reading stored headers back.
//! - `catalog.rs`: the topic catalog: create, grow, reconfigure and delete topics.
//! - `log.rs`: partition logs: [`Partition`] and its state, the lazy load, segments (roll,
//!   seal, drop), appends.
//! - `read.rs`: fetches, a partition's offsets and damage, timestamp lookups, sizes.
//! - `producer.rs`: idempotent and transactional producer state (sequence checks, the open
//!   transaction) and its expiry.
//! - `txn.rs`: transaction markers, the last stable offset, the aborted transaction index,
//!   read_committed reads.
//! - `producer_id.rs`: producer id allocation and ownership, the data dir's secret, derived keys.
//! - `offsets.rs`: consumer offsets (groups and stages), commits with appliance state, the
//!   dead-letter stage's append-and-commit and writer positions.
//! - `records.rs`: opaque records kept for others: groups, security, appliance state, broker
//!   configs.
//! - `retention.rs`: time and size retention, DeleteRecords (moving the log start).
//! - `flush.rs`: the flusher thread, group commit, high watermark publication, `wait_durable`.
//! - `segment.rs`: one log segment = one sled database; the bounded set of open ones.
//! - `space.rs`: the free-space reserve; size on disk.
//! - `compaction.rs`: `cleanup.policy=compact`, sealed segments rewritten as a new generation.
//! - `check.rs`: `kafkabox check` / `repair`.

mod catalog;
mod check;
mod compaction;
mod flush;
mod keys;
mod log;
mod offsets;
mod open;
pub mod producer;
mod producer_id;
mod read;
mod records;
mod retention;
mod segment;
mod space;
mod txn;

pub use crate::log::{Partition, SegmentPolicy};
pub use catalog::{Topic, TopicMeta};
pub use check::{Damage, PartitionCheck, PartitionRepair};
pub use compaction::Compacted;
pub use flush::{FlushSnapshot, FlushStats, FLUSH_BUCKETS};
pub use keys::CHUNK_BYTES;
pub use offsets::{CommittedOffset, ConsumerCommit};
pub use txn::{AbortedTxn, CommittedRead};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use flush::{Durable, FlushSignal};
use segment::{OpenSegments, SegDb};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("flush failed: {0}")]
    Flush(String),
    #[error("store is shut down")]
    Closed,
    #[error("the data directory {0} is in use by another kafkabox (or other sled user)")]
    InUse(String),
    #[error("i/o error: {0}")]
    Io(String),
    #[error("{want} more partitions would make {} in all, over max.partitions ({max})", have + want)]
    PartitionLimit { have: u64, want: u64, max: u64 },
    #[error("the data dir's disk has {free} bytes free, less than storage.free.bytes.min ({min}): writes are refused until space is freed")]
    DiskFull { free: u64, min: u64 },
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
    /// INVALID_TXN_STATE (48).
    #[error("{0}")]
    InvalidTxnState(String),
    /// TRANSACTION_COORDINATOR_FENCED (52): a marker from an older coordinator epoch.
    #[error("coordinator epoch {got} is older than the producer's {current}")]
    CoordinatorFenced { current: i32, got: i32 },
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

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One appliance-state entry: key and value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// Offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    /// The high watermark: the end of what is flushed, and so of what a restart keeps (the
    /// offsets of later appends are not shown to anyone until a flush covers them).
    pub log_end: i64,
}

/// kafkabox's default `segment.bytes` (Kafka's is 1 GiB): sled keeps what is written to a
/// database in memory until it is closed, and a sealed segment is dropped whole by retention.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default `storage.free.bytes.min`: writes stop while less is free on the data dir's disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// Flush at least this often when there are unflushed writes (acks=1 / acks=0 data).
    pub flush_interval: Duration,
    /// A partition's segment is rolled when the next batch would take it past this many
    /// bytes (the topic's `segment.bytes` overrides it).
    pub segment_bytes: u64,
    /// ... or when its first write is this old (the topic's `segment.ms` overrides it).
    pub segment_ms: i64,
    /// At most this many segment databases are open at once.
    pub max_open_segments: usize,
    /// At most this many partitions in all topics together.
    pub max_partitions: u64,
    /// Writes are refused while the data dir's file system has less free space than this
    /// (0: never).
    pub min_free_bytes: u64,
}

impl StoreConfig {
    pub fn new(path: impl AsRef<Path>) -> StoreConfig {
        StoreConfig {
            path: path.as_ref().to_path_buf(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            flush_interval: Duration::from_millis(200),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_open_segments: 64,
            max_partitions: 10_000,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// What every clone of a [`Store`] shares; each concern's module uses the fields it needs.
#[derive(Debug)]
struct Inner {
    /// The meta database (the data dir itself).
    db: sled::Db,
    /// The meta tree `log` (a historical name: it held the partition logs before segments
    /// existed): consumer offsets, log start markers, durable ends, offset floors and repair
    /// gaps, appliance state (and, in older data dirs, the legacy segment's batches and producer
    /// state).
    state: sled::Tree,
    /// Summaries of sealed segments.
    segments: sled::Tree,
    open_segments: OpenSegments,
    /// Segment databases written since the last flush.
    dirty: Mutex<Vec<Arc<SegDb>>>,
    /// Held by a flush from taking the ends to publishing them: two flushes at once (the
    /// flusher and `Store::flush`) could publish an end whose segment the other still flushes.
    flushing: Mutex<()>,
    /// Log ends of the partitions written since the last flush (recorded durably by it, and
    /// published as each partition's high watermark once it succeeded).
    ends: Mutex<HashMap<u32, (i64, Arc<AtomicI64>)>>,
    catalog: sled::Tree,
    meta: sled::Tree,
    /// Consumer group records, owned by the group coordinator (opaque here).
    groups: sled::Tree,
    /// Users' credentials and ACLs, opaque to the store (tree `security`).
    security: sled::Tree,
    /// The producer-id secret (the key of producer ids' HMACs), once read or made (checked on
    /// every idempotent batch).
    producer_id_secret: std::sync::OnceLock<[u8; 32]>,
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
    /// Changes after every topic creation, growth and deletion.
    catalog_changes: watch::Sender<u64>,
    config: StoreConfig,
    flush_stats: FlushStats,
    space: space::DiskSpace,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Wall-clock milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

#[cfg(test)]
mod test_support;
