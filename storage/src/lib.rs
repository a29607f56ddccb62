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
//!   `apply_batch`. A new segment's first write carries a snapshot of both.
//! - meta `log` tree: consumer offsets, log start markers, appliance state; in data dirs written
//!   before segments existed also batches and producer state (the legacy segment).
//! - meta `segments`: partition id ++ base offset -> the summary of a sealed segment.
//! - meta `catalog`: topic name -> JSON [`TopicMeta`].
//! - meta `meta`: cluster id, next partition id, next producer id.
//!
//! Log end and log start offsets are not stored: they come from the segments and the log start
//! markers when a partition is first used (partitions load lazily, so opening the store reads
//! only the catalog).
//!
//! Durability: sled's own flush timer is off. One flusher thread flushes the meta database and
//! every segment database written since the last flush, whenever a writer asks and at a fixed
//! interval; every writer waiting for durability is released by the first flush that started
//! after its write (group commit).

mod check;
mod compaction;
pub mod producer;
pub use check::{Damage, PartitionCheck, PartitionRepair};
mod segment;
mod space;

pub use compaction::Compacted;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use kafkabox_protocol::batch::{self, BatchHeader};
use producer::{BatchMeta, ProducerEntry, SeqCheck};
use segment::{OpenSegments, Place, SegDb, Segment, Summary};
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

/// Offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    /// The high watermark: the end of what is flushed, and so of what a restart keeps (the
    /// offsets of later appends are not shown to anyone until a flush covers them).
    pub log_end: i64,
}

/// Stored batches are split into values of at most this size. Measured on this machine (sled
/// 0.34.7, 256 MiB cache, flush every 5 ms, 6 GiB written): 1 MiB values (librdkafka's batch
/// size) made the process RSS grow with every byte written (2.1 GiB RSS after 2 GiB, at 152-161
/// MiB/s, whatever the cache setting or segment size), while 64 KiB values held RSS at 537 MiB,
/// wrote 248 MiB/s, took 1.31x the bytes on disk and reopened in 1.1 s. 32 KiB values with the
/// default 512 KiB segments grew without bound again; 128 KiB grew too.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// kafkabox's default `segment.bytes` (Kafka's is 1 GiB): sled keeps what is written to a
/// database in memory until it is closed, and a sealed segment is dropped whole by retention.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default `storage.free.bytes.min`: writes stop while less is free on the data dir's disk.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// A written segment's database is closed and reopened after this many bytes: sled 0.34 keeps
/// what was written through an open database in memory (measured: RSS follows the bytes
/// written), so this bounds the memory of each partition being written.
const RECYCLE_BYTES: u64 = 16 * 1024 * 1024;

/// The segment policy of a topic with `configs`: its `segment.bytes` and `segment.ms`, else the
/// store's defaults.
fn segment_policy(configs: &BTreeMap<String, String>, config: &StoreConfig) -> SegmentPolicy {
    let get = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    SegmentPolicy {
        bytes: get("segment.bytes")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(config.segment_bytes)
            .max(1),
        ms: get("segment.ms").unwrap_or(config.segment_ms).max(1),
    }
}

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

/// When a partition's newest segment is rolled (Kafka's `segment.bytes`, `segment.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPolicy {
    pub bytes: u64,
    pub ms: i64,
}

/// One partition log.
#[derive(Debug)]
pub struct Partition {
    /// Store-wide id: the key prefix of its batches.
    pub id: u32,
    pub topic: String,
    pub index: i32,
    policy: Mutex<SegmentPolicy>,
    state: Mutex<PartitionState>,
    /// The high watermark: the end of what a restart keeps (advanced by the flusher once a
    /// flush covered it, set to the log end when the partition is loaded). Reads, ListOffsets
    /// and the stages never go past it, so nobody sees an offset that a crash could hand out
    /// again.
    high_watermark: Arc<AtomicI64>,
}

impl Partition {
    fn new(id: u32, topic: &str, index: i32, policy: SegmentPolicy, loaded: bool) -> Partition {
        Partition {
            id,
            topic: topic.to_string(),
            index,
            policy: Mutex::new(policy),
            high_watermark: Arc::new(AtomicI64::new(0)),
            state: Mutex::new(PartitionState {
                loaded,
                deleted: false,
                floor: 0,
                gaps: BTreeMap::new(),
                damage: None,
                seen_damage: None,
                next_offset: 0,
                log_start: 0,
                producers: HashMap::new(),
                writers: HashMap::new(),
                segments: Vec::new(),
            }),
        }
    }

    fn policy(&self) -> SegmentPolicy {
        match self.policy.lock() {
            Ok(p) => *p,
            Err(_) => SegmentPolicy {
                bytes: DEFAULT_SEGMENT_BYTES,
                ms: i64::MAX,
            },
        }
    }
}

#[derive(Debug)]
struct PartitionState {
    /// Segments and offsets are read when the partition is first used.
    loaded: bool,
    /// Its topic was deleted: nothing is written any more.
    deleted: bool,
    /// Offset floor set by a repair: the offsets below it that no batch holds are a gap.
    floor: i64,
    /// Ranges `from..to` a repair dropped from sealed segments (damaged batches): reads step
    /// over them as over a compacted topic's gaps.
    gaps: BTreeMap<i64, i64>,
    /// Set when the partition loaded only in part (its newest segment cannot be read, or
    /// flushed offsets are missing): `(the first offset not intact, why)`. What comes before
    /// is served; reads from there, writes and ListOffsets answer a storage error until
    /// `kafkabox repair`.
    damage: Option<(i64, String)>,
    /// Damage a read ran into after the load (a sealed segment's files): reported, not
    /// refused, since the newest segment takes writes as before.
    seen_damage: Option<(i64, String)>,
    next_offset: i64,
    log_start: i64,
    producers: HashMap<i64, ProducerEntry>,
    /// Positions of broker-internal writers (the dead-letter stage): writer key -> the source
    /// offset up to which its appends are stored.
    writers: HashMap<Vec<u8>, i64>,
    /// Oldest first; the last one is written unless sealed.
    segments: Vec<Arc<Segment>>,
}

impl PartitionState {
    /// Index of the segment holding `offset` (the last one whose base is at or below it).
    fn segment_index(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1)
    }
}

/// What readers may see of `part`: up to its high watermark (never past the log end, which a
/// repair's floor or a deleted topic may have moved).
fn high_watermark(part: &Partition, st: &PartitionState) -> i64 {
    part.high_watermark
        .load(Ordering::SeqCst)
        .max(st.log_start)
        .min(st.next_offset)
}

/// Key of chunk `chunk` of the batch at `base_offset` in partition `pid`.
fn chunk_key(pid: u32, base_offset: i64, chunk: u16) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..12].copy_from_slice(&(base_offset as u64).to_be_bytes());
    k[12..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Exclusive upper bound of partition `pid`'s chunk keys (offsets are below 2^63).
fn chunk_key_end(pid: u32) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4] = 0x80;
    k
}

/// (base offset, chunk index) of a chunk key; anything else on disk is corruption.
fn parse_chunk_key(k: &[u8]) -> Result<(i64, u16), StoreError> {
    if k.len() != 14 {
        return Err(StoreError::Corrupt(format!(
            "log key of {} bytes, expected 14",
            k.len()
        )));
    }
    let base = read_u64(&k[4..12])? as i64;
    Ok((base, u16::from_be_bytes([k[12], k[13]])))
}

/// Adds the sled writes that store `bytes` as the batch at `base_offset` to `b`: chunks of at most
/// [`CHUNK_BYTES`], the first with the base offset and leader epoch rewritten (only it is
/// copied; the rest go to sled straight from `bytes`).
fn chunk_writes(
    b: &mut sled::Batch,
    pid: u32,
    base_offset: i64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    if chunk_count(bytes.len()) > usize::from(u16::MAX) + 1 {
        return Err(StoreError::Corrupt(format!(
            "batch of {} bytes is too large to store",
            bytes.len()
        )));
    }
    let first_len = bytes.len().min(CHUNK_BYTES);
    let mut first = BytesMut::from(&bytes[..first_len]);
    batch::set_base_offset(&mut first, base_offset);
    batch::set_leader_epoch(&mut first, 0);
    b.insert(&chunk_key(pid, base_offset, 0)[..], first.as_ref());
    for (i, chunk) in bytes[first_len..].chunks(CHUNK_BYTES).enumerate() {
        b.insert(&chunk_key(pid, base_offset, (i + 1) as u16)[..], chunk);
    }
    Ok(())
}

/// Number of chunks a batch of `len` bytes is stored in.
fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES).max(1)
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

/// Key of consumer `name`'s committed offset on partition `pid`: between the chunk keys
/// (offset bytes below 0x80) and the producer keys (0xff).
fn consumer_key(pid: u32, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + name.len());
    k.extend_from_slice(&pid.to_be_bytes());
    k.extend_from_slice(&[0xfe; 8]);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of partition `pid`'s log start offset when it was moved past the first stored batch
/// (DeleteRecords): between the chunk keys and the consumer keys.
fn log_start_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfdu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of partition `pid`'s durable log end: written with every flush that covers new batches
/// of the partition, after their segment was flushed. A log that ends below it at load has lost
/// acknowledged records (damaged or deleted segment files).
fn durable_end_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfbu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of partition `pid`'s offset floor, written by `repair` when it truncates a damaged log:
/// the next append starts there at least, so offsets are never reused.
fn offset_floor_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfau8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of a gap of partition `pid` that a repair left (`from`; the value is its end): the
/// dropped batches of a damaged sealed segment.
fn gap_key(pid: u32, from: i64) -> [u8; 20] {
    let mut k = [0xf9u8; 20];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[12..].copy_from_slice(&(from as u64).to_be_bytes());
    k
}

fn gap_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xf9u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

impl PartitionState {
    /// Whether the offsets `from..to`, which no stored batch holds, are a gap a repair left
    /// (below its offset floor, or a dropped range of a sealed segment).
    fn is_gap(&self, from: i64, to: i64) -> bool {
        if to <= from {
            return false;
        }
        if to <= self.floor {
            return true;
        }
        // Gaps of neighbouring segments touch: follow them.
        let mut at = from;
        for _ in 0..=self.gaps.len() {
            match self.gaps.range(..=at).next_back() {
                Some((_, end)) if *end >= at => {
                    if to <= *end {
                        return true;
                    }
                    if *end == at {
                        return false;
                    }
                    at = *end;
                }
                _ => return false,
            }
        }
        false
    }
}

/// Key of writer `writer`'s position in a segment of partition `pid`: after the chunk keys,
/// before the producer keys.
fn writer_key(pid: u32, writer: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + writer.len());
    k.extend_from_slice(&pid.to_be_bytes());
    k.extend_from_slice(&[0xfc; 8]);
    k.extend_from_slice(writer);
    k
}

fn writer_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xfcu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// What an in-process writer (a stage appending to another partition) is called in the writer
/// positions of the partition it appends to: the source partition and the stage.
fn writer_name(source: u32, stage: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + stage.len());
    k.extend_from_slice(&source.to_be_bytes());
    k.extend_from_slice(stage.as_bytes());
    k
}

/// Key of a sealed segment's summary in the meta `segments` tree.
fn segment_key(pid: u32, base: i64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..].copy_from_slice(&(base as u64).to_be_bytes());
    k
}

/// Every key of partition `pid` (chunks, log start, consumer offsets, producer state) starts
/// with these four bytes.
fn partition_prefix(pid: u32) -> [u8; 4] {
    pid.to_be_bytes()
}

/// A consumer's committed position on a partition, as stored: the next offset to read, the
/// leader epoch of the record before it, when it was committed and the client's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_ms: i64,
    pub metadata: String,
}

impl CommittedOffset {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20 + self.metadata.len());
        v.extend_from_slice(&(self.offset as u64).to_be_bytes());
        v.extend_from_slice(&self.leader_epoch.to_be_bytes());
        v.extend_from_slice(&self.commit_ms.to_be_bytes());
        v.extend_from_slice(self.metadata.as_bytes());
        v
    }

    /// Reads a stored position: 8 bytes (the pipeline's own commits) or the full form.
    fn decode(v: &[u8]) -> Result<CommittedOffset, StoreError> {
        if v.len() < 8 {
            return Err(StoreError::Corrupt(format!(
                "committed offset of {} bytes",
                v.len()
            )));
        }
        let offset = read_u64(&v[..8])? as i64;
        if v.len() < 20 {
            return Ok(CommittedOffset {
                offset,
                leader_epoch: -1,
                commit_ms: 0,
                metadata: String::new(),
            });
        }
        Ok(CommittedOffset {
            offset,
            leader_epoch: i32::from_be_bytes([v[8], v[9], v[10], v[11]]),
            commit_ms: read_u64(&v[12..20])? as i64,
            metadata: String::from_utf8_lossy(&v[20..]).into_owned(),
        })
    }
}

/// An in-process consumer's offset commit, with the appliance state written alongside it.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerCommit<'a> {
    /// The partition the consumer reads.
    pub source: &'a Partition,
    /// Every consumer name that commits `next_offset` (stages that run as one).
    pub names: &'a [&'a str],
    pub next_offset: i64,
    pub state: &'a [StateEntry],
}

/// One appliance-state entry: key and value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// Prefix of the appliance's own state in the `log` tree (profiles and the like): a partition
/// id no partition will have, so such state can be committed in the same `apply_batch` as a
/// consumer offset.
const APP_STATE_PREFIX: [u8; 4] = [0xff; 4];

fn app_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&APP_STATE_PREFIX);
    k.extend_from_slice(key);
    k
}

const META_CLUSTER_ID: &[u8] = b"cluster_id";
const META_NEXT_PARTITION: &[u8] = b"next_partition_id";
const META_NEXT_PRODUCER: &[u8] = b"next_producer_id";
/// The sequence number of the next producer id (ids of [`Store::new_producer_id`]).
const META_NEXT_PRODUCER_SEQ: &[u8] = b"next_producer_seq";
/// The data dir's secret key for producer ids' HMACs.
const META_PRODUCER_KEY: &[u8] = b"producer_id_key";
/// Producer ids below this are sequential ones of older versions (from 1000 up).
const PRODUCER_ID_SEQ_SHIFT: u32 = 31;
const META_BROKER_CONFIGS: &[u8] = b"broker_configs";

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
    /// The meta database (the data dir itself).
    db: sled::Db,
    /// Consumer offsets, log start markers, appliance state (and legacy batches).
    log: sled::Tree,
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
    /// The producer-id key, once read or made (checked on every idempotent batch).
    producer_key: std::sync::OnceLock<[u8; 32]>,
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

/// Upper bounds (seconds) of the flush latency buckets [`Store::flush_stats`] reports.
pub const FLUSH_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Durations of the flusher's flushes, bucketed (no metrics library here: the binary exports
/// them).
#[derive(Debug, Default)]
pub struct FlushStats {
    count: AtomicU64,
    micros: AtomicU64,
    failures: AtomicU64,
    /// Not cumulative: one count per bucket of [`FLUSH_BUCKETS`], then one for larger ones.
    buckets: [AtomicU64; FLUSH_BUCKETS.len() + 1],
}

/// A reading of [`FlushStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlushSnapshot {
    pub count: u64,
    pub sum_seconds: f64,
    pub failures: u64,
    /// (upper bound, flushes in this bucket and not the one before), the last bound
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
}

impl FlushStats {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = FLUSH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FLUSH_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FlushSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    FLUSH_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    c.load(Ordering::Relaxed),
                )
            })
            .collect();
        FlushSnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
            failures: self.failures.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store at `config.path` and starts its flusher thread.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let db = segment::open_sled(&config.path, config.cache_capacity_bytes, false)?;
        let log = db.open_tree("log")?;
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
            log,
            segments,
            open_segments,
            dirty: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
            flushing: Mutex::new(()),
            catalog,
            meta,
            groups,
            security,
            producer_key: std::sync::OnceLock::new(),
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
                    .log
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
                inner.log.apply_batch(b)?;
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

    /// The broker configs set at runtime (opaque to the store), if any.
    pub fn broker_configs(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .meta
            .get(META_BROKER_CONFIGS)?
            .map(|v| v.to_vec()))
    }

    /// Stores the broker configs set at runtime. Durable when this returns.
    pub fn set_broker_configs(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.meta.insert(META_BROKER_CONFIGS, bytes)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Allocates a new producer id (epoch 0) for `owner` (the principal asking, opaque here).
    /// Durable when this returns. An id is its sequence number (high 32 bits) and 31 bits of
    /// an HMAC of that number and the owner under the data dir's secret key: ids cannot be
    /// guessed from one another, and [`Store::producer_id_owned_by`] tells whether an id was
    /// handed to a given owner, without storing one entry per id.
    pub fn new_producer_id(&self, owner: &[u8]) -> Result<i64, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        let key = self.producer_key()?;
        let seq = match inner.meta.get(META_NEXT_PRODUCER_SEQ)? {
            Some(v) => read_u64(&v)?,
            None => 1,
        };
        if seq >= 1 << 32 {
            return Err(StoreError::Corrupt(
                "every producer id of this data dir (2^32) has been handed out".into(),
            ));
        }
        inner
            .meta
            .insert(META_NEXT_PRODUCER_SEQ, &(seq + 1).to_be_bytes())?;
        inner.db.flush()?;
        Ok(producer_id_for(&key, seq, owner))
    }

    /// The data dir's producer-id key, created on first use, then kept in memory.
    fn producer_key(&self) -> Result<[u8; 32], StoreError> {
        if let Some(k) = self.inner.producer_key.get() {
            return Ok(*k);
        }
        let key = self.read_or_make_producer_key()?;
        Ok(*self.inner.producer_key.get_or_init(|| key))
    }

    fn read_or_make_producer_key(&self) -> Result<[u8; 32], StoreError> {
        let meta = &self.inner.meta;
        if let Some(v) = meta.get(META_PRODUCER_KEY)? {
            return v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("producer id key is not 32 bytes".into()));
        }
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| StoreError::Corrupt("no random source for the producer id key".into()))?;
        meta.insert(META_PRODUCER_KEY, &key[..])?;
        self.inner.db.flush()?;
        Ok(key)
    }

    /// Whether `producer_id`'s sequence number was handed out by this data dir (to someone:
    /// the HMAC part is checked, with the owner, by [`Store::producer_id_owned_by`]).
    fn producer_id_issued(&self, producer_id: i64) -> bool {
        if producer_id < 0 {
            return false;
        }
        let (key, limit) = if producer_id < 1 << PRODUCER_ID_SEQ_SHIFT {
            (META_NEXT_PRODUCER, producer_id as u64)
        } else {
            (
                META_NEXT_PRODUCER_SEQ,
                (producer_id as u64) >> PRODUCER_ID_SEQ_SHIFT,
            )
        };
        match self.inner.meta.get(key) {
            Ok(Some(v)) => read_u64(&v).map(|next| limit < next).unwrap_or(false),
            _ => false,
        }
    }

    /// Whether `producer_id` was handed out to `owner` by [`Store::new_producer_id`]. Ids of
    /// older versions (sequential, owner unknown) count as everyone's.
    pub fn producer_id_owned_by(&self, producer_id: i64, owner: &[u8]) -> bool {
        if !self.producer_id_issued(producer_id) {
            return false;
        }
        if producer_id < 1 << PRODUCER_ID_SEQ_SHIFT {
            return true;
        }
        let seq = (producer_id as u64) >> PRODUCER_ID_SEQ_SHIFT;
        match self.producer_key() {
            Ok(key) => producer_id == producer_id_for(&key, seq, owner),
            Err(_) => false,
        }
    }

    /// A 32-byte key for `purpose` (a fixed label naming its use), derived from the data dir's
    /// secret key as HMAC-SHA-256(secret, purpose): the same across restarts, unknowable without
    /// the data dir, and different for each purpose. The secret itself (the producer-id key)
    /// never leaves the store. Used by SASL for the salts of unknown users; the labels cannot
    /// collide with producer ids' HMAC inputs that matter (those start with a sequence number
    /// below 2^32, i.e. four zero bytes, which a text label does not).
    pub fn derived_key(&self, purpose: &[u8]) -> Result<[u8; 32], StoreError> {
        let secret = match self.inner.producer_key.get() {
            Some(k) => *k,
            None => {
                // Made at most once: under the lock that producer id allocation takes.
                let _admin = self.inner.admin.lock().map_err(|_| StoreError::Closed)?;
                self.producer_key()?
            }
        };
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            purpose,
        );
        let mut out = [0u8; 32];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        Ok(out)
    }

    /// The state of `part`, loading its segments when it is first used.
    fn part_state<'a>(
        &self,
        part: &'a Partition,
    ) -> Result<std::sync::MutexGuard<'a, PartitionState>, StoreError> {
        let mut st = part.state.lock().map_err(|_| StoreError::Closed)?;
        if !st.loaded {
            segment::guarded(
                || format!("partition {}-{}", part.topic, part.index),
                || self.load(part, &mut st),
            )
            .inspect_err(|_| {
                // What the failed load opened is closed, so the next try opens it again.
                self.inner
                    .open_segments
                    .forget_under(&segment::partition_dir(&self.inner.config.path, part.id));
            })
            .map_err(|e| match e {
                StoreError::Corrupt(m) => {
                    StoreError::Corrupt(format!("partition {}-{}: {m}", part.topic, part.index))
                }
                other => other,
            })?;
            st.loaded = true;
        }
        Ok(st)
    }

    /// Loads every partition now (a background task after start-up does this, so the first
    /// requests do not wait for it). Returns the first error with its partition.
    pub fn load_all(&self) -> Result<(), StoreError> {
        for topic in self.topics() {
            for part in &topic.partitions {
                drop(self.part_state(part)?);
            }
        }
        Ok(())
    }

    /// Reads a partition's segments, offsets and producer state.
    fn load(&self, part: &Partition, st: &mut PartitionState) -> Result<(), StoreError> {
        let inner = &self.inner;
        let pid = part.id;
        let root = &inner.config.path;
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut damage: Option<(i64, String)> = None;
        if let Some(legacy) = self.legacy_segment(pid)? {
            segments.push(Arc::new(legacy));
        }
        let mut sealed = HashMap::new();
        for item in inner.segments.scan_prefix(pid.to_be_bytes()) {
            let (k, v) = item?;
            if k.len() == 12 {
                sealed.insert(read_u64(&k[4..])? as i64, Summary::decode(&v)?);
            }
        }
        // One generation per base offset: the one its summary names (compaction writes a new
        // generation whole before naming it), else the only one; others are leftovers.
        let mut bases: Vec<i64> = Vec::new();
        for (base, generation) in segment::list_segments(root, pid)? {
            let wanted = sealed.get(&base).map(|s| s.generation).unwrap_or(0);
            if generation != wanted {
                let dir = segment::segment_dir(root, pid, base, generation);
                tracing::info!(path = %dir.display(), "removing a segment generation left by compaction");
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| StoreError::Io(format!("removing {}: {e}", dir.display())))?;
                continue;
            }
            bases.push(base);
        }
        for (i, &base) in bases.iter().enumerate() {
            let generation = sealed.get(&base).map(|s| s.generation).unwrap_or(0);
            let dir = segment::segment_dir(root, pid, base, generation);
            let seg = match sealed.get(&base) {
                Some(summary) => Arc::new(Segment::new(base, Place::Dir(dir), *summary, true)),
                None => {
                    let created = std::fs::metadata(&dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or_else(now_ms);
                    let seg = Arc::new(Segment::new(
                        base,
                        Place::Dir(dir),
                        Summary::empty(base),
                        false,
                    ));
                    let scanned = segment::guarded(
                        || format!("the segment at {base}"),
                        || {
                            let db = inner.open_segments.get(&seg)?;
                            scan_summary(&db.log, pid, base)
                        },
                    );
                    let mut summary = match scanned {
                        Ok(s) => s,
                        Err(e) if i + 1 == bases.len() => {
                            // The newest segment cannot be read: what comes before it is
                            // still served; the partition is reported damaged from here.
                            inner.open_segments.forget(&seg);
                            tracing::error!(topic = %part.topic, partition = part.index, base, error = %e, "the newest segment of the partition cannot be read; `kafkabox check` lists the damage, `kafkabox repair` keeps what is intact");
                            damage.get_or_insert((
                                base,
                                format!(
                                    "the newest segment, at offset {base}, cannot be read: {e}"
                                ),
                            ));
                            Summary::empty(base)
                        }
                        Err(e) => return Err(e),
                    };
                    if summary.bytes > 0 {
                        summary.created_ms = created;
                    }
                    seg.set_summary(summary);
                    if i + 1 < bases.len() {
                        // A crash between rolling and recording the old segment's summary.
                        inner
                            .segments
                            .insert(segment_key(pid, base), &summary.encode()[..])?;
                        seg.seal();
                    }
                    seg
                }
            };
            if let Some(prev) = segments.last() {
                if prev.summary().end > base {
                    return Err(StoreError::Corrupt(format!(
                        "segment at {base} overlaps the one before it, which ends at {}",
                        prev.summary().end
                    )));
                }
            }
            segments.push(seg);
        }
        let marker = match inner.log.get(log_start_key(pid))? {
            Some(v) => Some(read_u64(&v)? as i64),
            None => None,
        };
        let floor = match inner.log.get(offset_floor_key(pid))? {
            Some(v) => read_u64(&v)? as i64,
            None => 0,
        };
        let first = segments.first().map(|s| s.base).unwrap_or(0);
        let end = segments.last().map(|s| s.summary().end).unwrap_or(0);
        let log_start = first.max(marker.unwrap_or(0));
        let next_offset = end.max(marker.unwrap_or(0)).max(floor);
        if let Some(v) = inner.log.get(durable_end_key(pid))? {
            let durable = read_u64(&v)? as i64;
            if durable > next_offset && damage.is_none() {
                tracing::error!(topic = %part.topic, partition = part.index, next_offset, durable, "flushed offsets are missing from the partition's segment files; `kafkabox check` lists the damage, `kafkabox repair` keeps what is intact");
                damage = Some((
                    next_offset,
                    format!("offsets {next_offset}..{durable} were stored and flushed but are missing from its segment files (damaged or deleted); `kafkabox repair` keeps what is intact without reusing offsets"),
                ));
            }
        }
        let mut gaps = BTreeMap::new();
        for item in inner.log.scan_prefix(gap_prefix(pid)) {
            let (k, v) = item?;
            if k.len() == 20 {
                gaps.insert(read_u64(&k[12..])? as i64, read_u64(&v)? as i64);
            }
        }
        // Producer state and writer positions: the newest segment of its own, else the legacy
        // keys.
        let mut producers = HashMap::new();
        let mut writers = HashMap::new();
        // A damaged partition takes no writes: its producer state is not needed.
        let state_tree = match segments.iter().rev().find(|s| !s.is_legacy()) {
            Some(seg) if damage.is_none() => Some(inner.open_segments.get(seg)?),
            _ => None,
        };
        let tree = match &state_tree {
            Some(db) => &db.log,
            None => &inner.log,
        };
        for item in tree.scan_prefix(producer_prefix(pid)) {
            let (k, v) = item?;
            if k.len() != 20 {
                continue;
            }
            let producer_id = read_u64(&k[12..20])? as i64;
            let entry = ProducerEntry::decode(&v)
                .ok_or_else(|| StoreError::Corrupt(format!("producer state of {producer_id}")))?;
            producers.insert(producer_id, entry);
        }
        for item in tree.scan_prefix(writer_prefix(pid)) {
            let (k, v) = item?;
            writers.insert(k[12..].to_vec(), read_u64(&v)? as i64);
        }
        drop(state_tree);
        if damage.is_some() {
            producers.clear();
            writers.clear();
        }
        st.segments = segments;
        st.gaps = gaps;
        st.damage = damage;
        st.seen_damage = None;
        st.next_offset = next_offset;
        // What was loaded is what a restart keeps.
        part.high_watermark.store(next_offset, Ordering::SeqCst);
        st.floor = floor;
        st.log_start = log_start;
        st.producers = producers;
        st.writers = writers;
        // Segments wholly below the log start (a crash during retention) go now.
        while st.segments.len() > 1 {
            let Some(first) = st.segments.first().cloned() else {
                break;
            };
            if first.is_legacy() || first.summary().end > st.log_start {
                break;
            }
            self.drop_segment(pid, &first)?;
            st.segments.remove(0);
        }
        Ok(())
    }

    /// The legacy segment of partition `pid` (batches in the meta `log` tree), if it has one.
    fn legacy_segment(&self, pid: u32) -> Result<Option<Segment>, StoreError> {
        let log = &self.inner.log;
        let range = chunk_key(pid, 0, 0)..chunk_key_end(pid);
        let Some(last) = log.range(range.clone()).next_back() else {
            return Ok(None);
        };
        let (k, _) = last?;
        let (last_base, _) = parse_chunk_key(&k)?;
        let first_chunk = log
            .get(chunk_key(pid, last_base, 0))?
            .ok_or_else(|| StoreError::Corrupt(format!("no first chunk at {last_base}")))?;
        let h = stored_header(&first_chunk)?;
        let first = match log.range(range).next() {
            Some(item) => parse_chunk_key(&item?.0)?.0,
            None => 0,
        };
        // Bytes and timestamps of legacy batches are read when needed (retention scans them).
        let summary = Summary {
            end: h.last_offset() + 1,
            bytes: 0,
            max_ts: i64::MAX,
            created_ms: 0,
            generation: 0,
        };
        Ok(Some(Segment::legacy(
            first,
            summary,
            self.inner.db.clone(),
            log.clone(),
        )))
    }

    /// The segment the next batch of `len` bytes goes to, rolling the newest one when it is
    /// full or old (and sealing it). Returns the segment, its database, and whether it is
    /// empty (its first write carries the snapshot of producer state and writer positions).
    fn writable_segment(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        len: usize,
    ) -> Result<(Arc<Segment>, Arc<SegDb>, bool), StoreError> {
        let inner = &self.inner;
        if st.deleted {
            return Err(StoreError::UnknownTopic(part.topic.clone()));
        }
        let policy = part.policy();
        if let Some(last) = st.segments.last().cloned() {
            if !last.is_sealed() {
                let s = last.summary();
                let full = s.bytes + len as u64 > policy.bytes;
                let old = now_ms().saturating_sub(s.created_ms) >= policy.ms;
                if s.bytes == 0 || !(full || old) {
                    let db = inner.open_segments.get_for_write(&last)?;
                    return Ok((last, db, s.bytes == 0));
                }
                self.seal(part.id, &last)?;
            }
        }
        let base = st.next_offset;
        let dir = segment::segment_dir(&inner.config.path, part.id, base, 0);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let seg = Arc::new(Segment::new(
            base,
            Place::Dir(dir),
            Summary::empty(base),
            false,
        ));
        let db = inner.open_segments.get_for_write(&seg)?;
        st.segments.push(seg.clone());
        tracing::debug!(topic = %part.topic, partition = part.index, base, "rolled a new segment");
        Ok((seg, db, true))
    }

    /// Seals `seg`: flushed, its summary recorded in the meta database, its database closed.
    fn seal(&self, pid: u32, seg: &Arc<Segment>) -> Result<(), StoreError> {
        let inner = &self.inner;
        if seg.is_sealed() {
            return Ok(());
        }
        inner.open_segments.get(seg)?.flush()?;
        inner
            .segments
            .insert(segment_key(pid, seg.base), &seg.summary().encode()[..])?;
        seg.seal();
        inner.open_segments.close(seg);
        Ok(())
    }

    /// Removes a segment's summary and files (its records are already below the log start).
    fn drop_segment(&self, pid: u32, seg: &Arc<Segment>) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.open_segments.forget(seg);
        inner.segments.remove(segment_key(pid, seg.base))?;
        match seg.dir() {
            Some(dir) => match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::Io(format!("removing {}: {e}", dir.display()))),
            },
            None => {
                // The legacy segment: its batches are keys of the meta log tree.
                loop {
                    let mut b = sled::Batch::default();
                    let mut n = 0;
                    for item in inner
                        .log
                        .range(chunk_key(pid, 0, 0)..chunk_key_end(pid))
                        .take(10_000)
                    {
                        b.remove(item?.0);
                        n += 1;
                    }
                    if n == 0 {
                        return Ok(());
                    }
                    inner.log.apply_batch(b)?;
                }
            }
        }
    }

    /// Writes `b` (chunks of a batch at `base_offset` and the state that goes with it) to the
    /// segment the batch belongs in, with the snapshot of producer state and writer positions
    /// when the segment is new, and updates the segment's summary.
    fn write_batch(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        bytes: &[u8],
        h: &BatchHeader,
        extra: &[StateEntry],
    ) -> Result<(), StoreError> {
        if let Some((from, what)) = &st.damage {
            return Err(StoreError::Corrupt(format!(
                "partition {}-{} is damaged from offset {from} ({what}): writes are refused until `kafkabox repair`",
                part.topic, part.index
            )));
        }
        // Chunk keys and sled's own framing come on top of the batch.
        self.inner.space.reserve(bytes.len() as u64 + 4096)?;
        let (seg, db, fresh) = self.writable_segment(part, st, bytes.len())?;
        let mut b = sled::Batch::default();
        if fresh {
            for (id, entry) in &st.producers {
                b.insert(&producer_key(part.id, *id)[..], entry.encode());
            }
            for (w, pos) in &st.writers {
                b.insert(writer_key(part.id, w), &(*pos as u64).to_be_bytes());
            }
        }
        // The batch's own entries come after the snapshot and win over it.
        chunk_writes(&mut b, part.id, st.next_offset, bytes)?;
        for (k, v) in extra {
            b.insert(k.as_slice(), v.as_slice());
        }
        db.log.apply_batch(b)?;
        self.mark_dirty(&db);
        drop(db);
        let mut s = seg.summary();
        s.end = st.next_offset + i64::from(h.last_offset_delta) + 1;
        s.bytes += bytes.len() as u64;
        s.max_ts = s.max_ts.max(h.max_timestamp);
        if s.created_ms == 0 {
            s.created_ms = now_ms();
        }
        seg.set_summary(s);
        if let Ok(mut ends) = self.inner.ends.lock() {
            ends.insert(part.id, (s.end, part.high_watermark.clone()));
        }
        // Past the recycling size, flush now rather than at the next interval, so what sled
        // holds of unflushed writes stays bounded under acks=1 too.
        if self.inner.open_segments.wrote(&seg, bytes.len() as u64) {
            self.inner.request_flush();
        }
        Ok(())
    }

    fn mark_dirty(&self, db: &Arc<SegDb>) {
        if let Ok(mut d) = self.inner.dirty.lock() {
            if !d.iter().any(|x| Arc::ptr_eq(x, db)) {
                d.push(db.clone());
            }
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
        let mut st = self.part_state(part)?;
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
                last_append_ms: 0,
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
                now_ms(),
            );
            producer_update = Some(updated);
        }
        let base_offset = st.next_offset;
        let extra: Vec<StateEntry> = producer_update
            .iter()
            .map(|e| (producer_key(part.id, h.producer_id).to_vec(), e.encode()))
            .collect();
        self.write_batch(part, &mut st, bytes, h, &extra)?;
        if let Some(entry) = producer_update {
            st.producers.insert(h.producer_id, entry);
        }
        Ok(self.appended(st, base_offset, h))
    }

    /// Bookkeeping after a batch at `base_offset` was written under the partition lock `st`:
    /// advance the log end, count the write, release the lock, wake long polls.
    fn appended(
        &self,
        mut st: std::sync::MutexGuard<'_, PartitionState>,
        base_offset: i64,
        h: &BatchHeader,
    ) -> Appended {
        st.next_offset = base_offset + i64::from(h.last_offset_delta) + 1;
        let write_seq = self.inner.written.fetch_add(1, Ordering::SeqCst) + 1;
        let log_start_offset = st.log_start;
        drop(st);
        // Readers see the batch once a flush covers it (the high watermark): start one now,
        // whatever the producer's acks (group commit: one flush covers every write before it).
        self.inner.request_flush();
        Appended {
            base_offset,
            log_start_offset,
            duplicate: false,
            write_seq,
        }
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

    /// Durations of the background flushes so far.
    pub fn flush_stats(&self) -> FlushSnapshot {
        self.inner.flush_stats.snapshot()
    }

    /// Bytes the store takes on disk: the meta database (sled's own count) and the files of
    /// every segment.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let segments = self.inner.config.path.join("segments");
        Ok(self.inner.db.size_on_disk()? + dir_bytes(&segments))
    }

    /// Free bytes on the data dir's file system (last measurement, minus writes since).
    pub fn free_bytes(&self) -> u64 {
        self.inner.space.free()
    }

    /// Writes refused so far because free space was below `min_free_bytes`.
    pub fn writes_refused_for_space(&self) -> u64 {
        self.inner.space.refused()
    }

    /// Segment databases open now (bounded by `StoreConfig::max_open_segments`).
    pub fn open_segments(&self) -> usize {
        self.inner.open_segments.open_count()
    }

    /// Flushes everything now (blocking). Used at shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        let upto = self.inner.written.load(Ordering::SeqCst);
        self.inner.flush_all()?;
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

    /// Where `part` is damaged and why, when it loaded only in part (see
    /// [`PartitionState::damage`]: reads from there, writes and ListOffsets are refused), or
    /// why it does not load at all.
    pub fn damage(&self, part: &Partition) -> Option<(i64, String)> {
        match self.part_state(part) {
            Ok(st) => st.damage.clone(),
            Err(e) => Some((0, e.to_string())),
        }
    }

    /// Where the next append of `part` goes (the log end, past the high watermark until a
    /// flush covers it).
    fn next_offset(&self, part: &Partition) -> Result<i64, StoreError> {
        Ok(self.part_state(part)?.next_offset)
    }

    /// [`Store::damage`], or else damage a read ran into since the load (a sealed segment):
    /// what `/api/topics` and the metrics report.
    pub fn damage_seen(&self, part: &Partition) -> Option<(i64, String)> {
        match self.part_state(part) {
            Ok(st) => st.damage.clone().or_else(|| st.seen_damage.clone()),
            Err(e) => Some((0, e.to_string())),
        }
    }

    /// Log start and end of `part` (0, 0 when its segments cannot be read: the error is
    /// logged, and every read or write of the partition returns it).
    pub fn offsets(&self, part: &Partition) -> Offsets {
        match self.part_state(part) {
            Ok(st) => Offsets {
                log_start: st.log_start,
                log_end: high_watermark(part, &st),
            },
            Err(e) => {
                tracing::error!(topic = %part.topic, partition = part.index, error = %e, "cannot load the partition");
                Offsets {
                    log_start: 0,
                    log_end: 0,
                }
            }
        }
    }

    /// The offsets of `part` and its segments from the one holding `offset` on (all of them
    /// when `offset` is `None`).
    fn segments_from(
        &self,
        part: &Partition,
        offset: Option<i64>,
    ) -> Result<(Offsets, Vec<Arc<Segment>>), StoreError> {
        let st = self.part_state(part)?;
        let offsets = Offsets {
            log_start: st.log_start,
            log_end: high_watermark(part, &st),
        };
        let from = offset.map(|o| st.segment_index(o)).unwrap_or(0);
        let segments = st.segments.get(from..).unwrap_or_default();
        Ok((offsets, segments.to_vec()))
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
        let before = out.len();
        let r = segment::guarded(
            || format!("partition {}-{}", part.topic, part.index),
            || self.read_unguarded(part, offset, max_bytes, oversized_first, out),
        );
        if let Err(e) = &r {
            out.truncate(before);
            if matches!(e, StoreError::Corrupt(_) | StoreError::Sled(_)) {
                // Damage found by a read (a sealed segment): reported by `damage_seen` until
                // the next load, while the rest of the log is served and written as before.
                if let Ok(mut st) = part.state.lock() {
                    if st.loaded && st.damage.is_none() && st.seen_damage.is_none() {
                        st.seen_damage = Some((offset, e.to_string()));
                    }
                }
            }
        }
        r
    }

    fn read_unguarded(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Offsets>, StoreError> {
        let (offsets, segments) = self.segments_from(part, Some(offset))?;
        if offset < offsets.log_start {
            return Ok(None);
        }
        if offset > offsets.log_end {
            // Past the high watermark but within the log (a flush will cover it): nothing
            // yet, as Kafka answers a read past what followers copied.
            if offset > self.next_offset(part)? {
                return Ok(None);
            }
            return Ok(Some(offsets));
        }
        if offset == offsets.log_end {
            if let Some((from, what)) = self.damage(part) {
                return Err(StoreError::Corrupt(format!(
                    "partition {}-{} is damaged from offset {from}: {what}",
                    part.topic, part.index
                )));
            }
            return Ok(Some(offsets));
        }
        let first_len = out.len();
        // Where the next batch must start: a batch elsewhere means stored batches are missing
        // (damaged files), answered as an error rather than skipped over.
        let mut expected: Option<i64> = None;
        let mut after_compacted = false;
        for (i, seg) in segments.iter().enumerate() {
            // Compaction drops whole batches: its segments (and the step out of them) may have
            // gaps.
            let compacted = seg.summary().generation > 0;
            if compacted || after_compacted {
                expected = None;
            }
            after_compacted = compacted;
            // Nothing past the high watermark is read (nor a segment opened for it).
            if seg.base >= offsets.log_end {
                break;
            }
            let db = match self.inner.open_segments.get(seg) {
                Ok(db) => db,
                // What came before a segment that does not open is answered; the fetch that
                // starts in it gets the error.
                Err(_) if out.len() > first_len => return Ok(Some(offsets)),
                Err(e) => return Err(e),
            };
            let log = &db.log;
            let mut start = offset.max(seg.base);
            if i == 0 {
                // The batch holding `offset` is the one with the greatest base offset at or
                // below it.
                if let Some(item) = log
                    .range(chunk_key(part.id, 0, 0)..=chunk_key(part.id, offset, u16::MAX))
                    .next_back()
                {
                    let (k, _) = item?;
                    let (base, _) = parse_chunk_key(&k)?;
                    let h = header_in(log, part.id, base)?;
                    start = if h.last_offset() < offset {
                        h.last_offset() + 1
                    } else {
                        base
                    };
                    expected = Some(start);
                }
            }
            // Bytes of the current batch still to come in later chunks.
            let mut pending = 0usize;
            let mut full = false;
            let segment_start = out.len();
            for item in
                log.range(chunk_key(part.id, start, 0)..chunk_key(part.id, offsets.log_end, 0))
            {
                let (k, v) = item?;
                if pending == 0 {
                    let (base, chunk) = parse_chunk_key(&k)?;
                    if chunk != 0 {
                        return Err(StoreError::Corrupt(format!(
                            "batch at {base} starts with chunk {chunk}"
                        )));
                    }
                    if let (Some(x), false) = (expected, compacted) {
                        // The partition lock again only on the rare path: a gap.
                        if base != x && !self.part_state(part)?.is_gap(x, base) {
                            // What comes before the gap is answered; the fetch that starts
                            // at the gap gets the error.
                            if out.len() > first_len {
                                return Ok(Some(offsets));
                            }
                            return Err(StoreError::Corrupt(format!(
                                "partition {}-{}: offsets {x}..{base} are missing from the stored log (damaged files); `kafkabox check` lists the damage",
                                part.topic, part.index
                            )));
                        }
                    }
                    let header = stored_header(&v)?;
                    expected = Some(header.last_offset() + 1);
                    let total = header.total_len();
                    let first = out.len() == first_len;
                    if out.len() - first_len + total > max_bytes && !(first && oversized_first) {
                        full = true;
                        break;
                    }
                    pending = total;
                }
                if v.len() > pending {
                    return Err(StoreError::Corrupt(
                        "stored chunks longer than their batch".into(),
                    ));
                }
                out.extend_from_slice(&v);
                pending -= v.len();
                if pending == 0 && out.len() - first_len >= max_bytes {
                    full = true;
                    break;
                }
            }
            if pending != 0 {
                return Err(StoreError::Corrupt(format!(
                    "batch missing {pending} bytes of chunks"
                )));
            }
            // sled keeps the pages a read pulls in memory too: reads count toward recycling.
            drop(db);
            if self
                .inner
                .open_segments
                .wrote(seg, (out.len() - segment_start) as u64)
            {
                self.inner.request_flush();
            }
            if full {
                break;
            }
        }
        Ok(Some(offsets))
    }

    /// The earliest offset whose batch has a max timestamp at or after `timestamp`, with that
    /// timestamp; `None` when no batch is that recent. Batch granularity: the returned offset is
    /// the batch's base offset.
    pub fn offset_for_timestamp(
        &self,
        part: &Partition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.offset_for_timestamp_from(part, timestamp, i64::MIN)
    }

    /// Like [`Store::offset_for_timestamp`], among the batches that end after `from`.
    pub fn offset_for_timestamp_from(
        &self,
        part: &Partition,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        for seg in &segments {
            let s = seg.summary();
            if s.end <= from || (!seg.is_legacy() && s.max_ts < timestamp) {
                continue;
            }
            let db = self.inner.open_segments.get(seg)?;
            for h in tree_headers(&db.log, part.id, 0, offsets.log_end) {
                let h = h?;
                if h.last_offset() >= from && h.max_timestamp >= timestamp {
                    return Ok(Some((h.base_offset, h.max_timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// The offset after the batch that starts at `base`.
    pub fn batch_end(&self, part: &Partition, base: i64) -> Result<i64, StoreError> {
        let (_, segments) = self.segments_from(part, Some(base))?;
        let Some(seg) = segments.first() else {
            return Err(StoreError::Corrupt(format!("no batch at {base}")));
        };
        let db = self.inner.open_segments.get(seg)?;
        Ok(header_in(&db.log, part.id, base)?.last_offset() + 1)
    }

    /// The base offset and max timestamp of the first batch holding the largest timestamp
    /// (ListOffsets -3 looks inside it for the record).
    pub fn max_timestamp(&self, part: &Partition) -> Result<Option<(i64, i64)>, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        let mut best: Option<(i64, i64)> = None;
        for seg in &segments {
            let s = seg.summary();
            if !seg.is_legacy() && (s.bytes == 0 || best.is_some_and(|(_, ts)| s.max_ts <= ts)) {
                continue;
            }
            let db = self.inner.open_segments.get(seg)?;
            for h in tree_headers(&db.log, part.id, 0, offsets.log_end) {
                let h = h?;
                if best.is_none_or(|(_, ts)| h.max_timestamp > ts) {
                    best = Some((h.base_offset, h.max_timestamp));
                }
            }
        }
        Ok(best)
    }

    /// Bytes of stored batches in `part` (DescribeLogDirs, retention.bytes).
    pub fn partition_size(&self, part: &Partition) -> Result<u64, StoreError> {
        let (_, segments) = self.segments_from(part, None)?;
        let mut total = 0u64;
        for seg in &segments {
            total += self.segment_bytes(part.id, seg)?;
        }
        Ok(total)
    }

    /// Bytes of stored batches in `seg` (the legacy segment is scanned).
    fn segment_bytes(&self, pid: u32, seg: &Arc<Segment>) -> Result<u64, StoreError> {
        if !seg.is_legacy() {
            return Ok(seg.summary().bytes);
        }
        let db = self.inner.open_segments.get(seg)?;
        let mut total = 0;
        for h in tree_headers(&db.log, pid, 0, i64::MAX) {
            total += h?.total_len() as u64;
        }
        Ok(total)
    }

    /// The idempotent producers of `part`: (producer id, epoch, last sequence, last append
    /// time in ms), ordered by id.
    pub fn producer_states(&self, part: &Partition) -> Vec<(i64, i16, i32, i64)> {
        let mut v: Vec<(i64, i16, i32, i64)> = match self.part_state(part) {
            Ok(st) => st
                .producers
                .iter()
                .map(|(id, e)| {
                    let last = e.batches.last().map(|b| b.last_seq).unwrap_or(-1);
                    (*id, e.epoch, last, e.last_append_ms)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Forgets the producers of `part` whose last append was before `cutoff_ms` (Kafka's
    /// `producer.id.expiration.ms`), so producer state stays bounded however many producer
    /// ids come and go. A forgotten producer that writes again is accepted at any sequence, as
    /// Kafka does. Returns the number forgotten.
    pub fn expire_producers(&self, part: &Partition, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut st = self.part_state(part)?;
        let expired: Vec<i64> = st
            .producers
            .iter()
            .filter(|(_, e)| e.last_append_ms < cutoff_ms)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut b = sled::Batch::default();
        for id in &expired {
            b.remove(&producer_key(part.id, *id)[..]);
        }
        // Producer state lives in the newest segment of its own (older ones keep stale
        // snapshots that are never read), or in the legacy keys.
        match st.segments.iter().rev().find(|s| !s.is_legacy()) {
            Some(seg) => {
                let db = self.inner.open_segments.get(seg)?;
                db.log.apply_batch(b)?;
                self.mark_dirty(&db);
            }
            None => self.inner.log.apply_batch(b)?,
        }
        for id in &expired {
            st.producers.remove(id);
        }
        Ok(expired.len())
    }

    /// The next offset in-process consumer `name` will handle on `part`: what it last
    /// committed, or 0.
    pub fn consumer_offset(&self, part: &Partition, name: &str) -> Result<i64, StoreError> {
        match self.inner.log.get(consumer_key(part.id, name))? {
            Some(v) => Ok(CommittedOffset::decode(&v)?.offset),
            None => Ok(0),
        }
    }

    /// What consumer (group) `name` last committed on `part`, if anything.
    pub fn committed_offset(
        &self,
        part: &Partition,
        name: &str,
    ) -> Result<Option<CommittedOffset>, StoreError> {
        match self.inner.log.get(consumer_key(part.id, name))? {
            Some(v) => Ok(Some(CommittedOffset::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Commits positions of consumer (group) `name` on several partitions in one atomic
    /// write. Returns the write sequence number for [`Store::wait_durable`].
    pub fn commit_offsets(
        &self,
        name: &str,
        entries: &[(&Partition, CommittedOffset)],
    ) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (part, c) in entries {
            b.insert(consumer_key(part.id, name), c.encode());
        }
        self.inner.log.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Forgets the positions of consumer (group) `name` on `parts`, atomically.
    pub fn delete_offsets(&self, name: &str, parts: &[&Partition]) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for part in parts {
            b.remove(consumer_key(part.id, name));
        }
        self.inner.log.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Security records (users' credentials, ACLs; opaque to the store) whose keys start with
    /// `prefix`, in key order.
    pub fn security_records(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.security.scan_prefix(prefix) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes and removes security records in one atomic write (`None` removes); durable when
    /// this returns.
    pub fn put_security_records(
        &self,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        self.inner.space.reserve(4096)?;
        let mut b = sled::Batch::default();
        for (k, v) in records {
            match v {
                Some(v) => b.insert(k.as_slice(), v.as_slice()),
                None => b.remove(k.as_slice()),
            }
        }
        self.inner.security.apply_batch(b)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Every stored consumer-group record (id, opaque bytes), in id order.
    pub fn group_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.groups.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Stores a consumer-group record. Returns the write sequence for [`Store::wait_durable`].
    pub fn put_group_record(&self, id: &str, record: &[u8]) -> Result<u64, StoreError> {
        self.inner.groups.insert(id.as_bytes(), record)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Removes a consumer-group record.
    pub fn remove_group_record(&self, id: &str) -> Result<u64, StoreError> {
        self.inner.groups.remove(id.as_bytes())?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Moves the log start offset of `part` to `offset` (DeleteRecords): the new start is
    /// stored, so it survives a restart even inside a segment, and segments that end at or
    /// before it are removed whole. `offset` must lie between the log start and the log end.
    pub fn delete_records_before(&self, part: &Partition, offset: i64) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        if offset <= st.log_start {
            return Ok(st.log_start);
        }
        let offset = offset.min(high_watermark(part, &st));
        self.move_log_start(part, &mut st, offset)?;
        Ok(offset)
    }

    /// Stores `offset` as the log start of `part` and removes the segments wholly below it
    /// (batches of the legacy segment one by one). The newest segment goes too when it is
    /// wholly below (after it is sealed); the next append starts a new one.
    fn move_log_start(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        offset: i64,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner
            .log
            .insert(&log_start_key(part.id)[..], &(offset as u64).to_be_bytes())?;
        // The marker must be on disk before the files go.
        inner.db.flush()?;
        st.log_start = st.log_start.max(offset);
        while let Some(first) = st.segments.first().cloned() {
            let s = first.summary();
            if first.is_legacy() {
                if s.end <= offset {
                    self.drop_segment(part.id, &first)?;
                    st.segments.remove(0);
                    continue;
                }
                self.trim_legacy(part.id, offset)?;
                break;
            }
            if s.end > offset || (s.bytes == 0 && st.segments.len() == 1) {
                break;
            }
            self.seal(part.id, &first)?;
            self.drop_segment(part.id, &first)?;
            st.segments.remove(0);
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Moves the log start forward to `new_start` if that is forward; returns by how many
    /// offsets.
    fn advance_log_start(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        new_start: i64,
    ) -> Result<i64, StoreError> {
        let old_start = st.log_start;
        if new_start <= old_start {
            return Ok(0);
        }
        self.move_log_start(part, st, new_start)?;
        Ok(new_start - old_start)
    }

    /// Removes the legacy batches of `pid` that end at or before `offset`.
    fn trim_legacy(&self, pid: u32, offset: i64) -> Result<(), StoreError> {
        let log = &self.inner.log;
        let mut b = sled::Batch::default();
        for h in tree_headers(log, pid, 0, offset) {
            let h = h?;
            if h.last_offset() >= offset {
                break;
            }
            for c in 0..chunk_count(h.total_len()) {
                b.remove(&chunk_key(pid, h.base_offset, c as u16)[..]);
            }
        }
        log.apply_batch(b)?;
        Ok(())
    }

    /// Commits `next_offset` for in-process consumer `name` on `part`. Durable with the next
    /// flush; returns the write sequence number for [`Store::wait_durable`].
    pub fn commit_consumer_offset(
        &self,
        part: &Partition,
        name: &str,
        next_offset: i64,
    ) -> Result<u64, StoreError> {
        self.inner.log.insert(
            consumer_key(part.id, name),
            &(next_offset as u64).to_be_bytes(),
        )?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Appends a broker-made batch (not idempotent: no producer id) to `part`, then commits
    /// `next_offset` for consumers `names` on `source` and writes the appliance `state` entries
    /// in one atomic write. The batch is stored with the writer position (`source`, first
    /// name) -> `next_offset` and flushed before the commit is written, so after a crash
    /// either both are there, or the batch is and [`Store::writer_position`] tells the re-run
    /// pass which of its records are already stored: the dead-letter stage never writes a
    /// record twice or forgets one.
    pub fn append_and_commit(
        &self,
        part: &Partition,
        bytes: &[u8],
        h: &BatchHeader,
        commit: ConsumerCommit<'_>,
    ) -> Result<Appended, AppendError> {
        let ConsumerCommit {
            source,
            names,
            next_offset,
            state,
        } = commit;
        if h.is_idempotent() {
            return Err(StoreError::Corrupt(
                "append_and_commit takes non-idempotent batches".into(),
            )
            .into());
        }
        let writer = writer_name(source.id, names.first().copied().unwrap_or_default());
        let mut st = self.part_state(part)?;
        let base_offset = st.next_offset;
        let position = vec![(
            writer_key(part.id, &writer),
            (next_offset as u64).to_be_bytes().to_vec(),
        )];
        self.write_batch(part, &mut st, bytes, h, &position)?;
        st.writers.insert(writer, next_offset);
        let seg = st.segments.last().cloned();
        // The log end moves on first: a failed flush below must not leave the next append
        // at the same base offset (the batch is stored; its pass is retried and skips what
        // the writer position covers).
        let appended = self.appended(st, base_offset, h);
        // The dead letters are durable before the commit that skips their source records.
        if let Some(seg) = seg {
            self.inner.open_segments.get(&seg)?.flush()?;
        }
        self.commit_with_state(source, names, next_offset, state)?;
        Ok(appended)
    }

    /// Where writer (`source`, `stage`) stands in `part`: the source offset up to which its
    /// appends are stored, if it ever appended.
    pub fn writer_position(
        &self,
        part: &Partition,
        source: &Partition,
        stage: &str,
    ) -> Result<Option<i64>, StoreError> {
        let st = self.part_state(part)?;
        Ok(st.writers.get(&writer_name(source.id, stage)).copied())
    }

    /// Commits `next_offset` for consumers `names` on `part` together with appliance-state
    /// writes (`key`, `value`), in one atomic write: a crash keeps all or none.
    pub fn commit_with_state(
        &self,
        part: &Partition,
        names: &[&str],
        next_offset: i64,
        state: &[StateEntry],
    ) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in state {
            b.insert(app_key(k), v.as_slice());
        }
        for name in names {
            b.insert(
                consumer_key(part.id, name),
                &(next_offset as u64).to_be_bytes(),
            );
        }
        self.inner.log.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Appliance state stored under `key` by [`Store::commit_with_state`].
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.log.get(app_key(key))?.map(|v| v.to_vec()))
    }

    /// Appliance state whose keys start with `prefix`, in key order, at most `limit` entries.
    pub fn state_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<StateEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.log.scan_prefix(app_key(prefix)).take(limit) {
            let (k, v) = item?;
            out.push((k[APP_STATE_PREFIX.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Like [`Store::state_prefix`], from the first key after `after` (exclusive) on: a page of a
    /// longer scan.
    pub fn state_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        let start = app_key(after);
        let mut out = Vec::new();
        for item in self
            .inner
            .log
            .range(start.clone()..)
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |(k, _)| k.as_ref() != start.as_slice())
            })
            .take_while(|r| {
                r.as_ref().map_or(true, |(k, _)| {
                    k[APP_STATE_PREFIX.len()..].starts_with(prefix)
                })
            })
            .take(limit)
        {
            let (k, v) = item?;
            out.push((k[APP_STATE_PREFIX.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes appliance state entries in one atomic write; returns the write sequence number
    /// for [`Store::wait_durable`].
    pub fn put_state(&self, state: &[StateEntry]) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in state {
            b.insert(app_key(k), v.as_slice());
        }
        self.inner.log.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Number of producers with state on `part`.
    pub fn producer_count(&self, part: &Partition) -> usize {
        part.state.lock().map(|st| st.producers.len()).unwrap_or(0)
    }

    /// Removes the oldest sealed segments of `part` while what remains holds at least
    /// `max_bytes` of batches (a topic's `retention.bytes`, as Kafka applies it: the newest
    /// segment stays), never past offset `hold` (what every reader that must see the records
    /// has passed; `i64::MAX` for none). Batches of a legacy segment go one by one, at most
    /// 10,000 per call. Returns the number of offsets the log start moved by.
    pub fn expire_over_size(
        &self,
        part: &Partition,
        max_bytes: u64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        let mut sizes = Vec::with_capacity(st.segments.len());
        for seg in &st.segments {
            sizes.push(self.segment_bytes(part.id, seg)?);
        }
        let mut total: u64 = sizes.iter().sum();
        let old_start = st.log_start;
        let mut new_start = old_start;
        let count = st.segments.len();
        for (i, seg) in st.segments.iter().enumerate() {
            if i + 1 == count || total <= max_bytes {
                break;
            }
            if seg.is_legacy() {
                // Batch by batch, as far as the excess goes.
                let db = self.inner.open_segments.get(seg)?;
                for (n, h) in tree_headers(&db.log, part.id, 0, i64::MAX).enumerate() {
                    let h = h?;
                    if total <= max_bytes || n >= 10_000 {
                        break;
                    }
                    if h.last_offset() + 1 > hold {
                        break;
                    }
                    total -= h.total_len() as u64;
                    new_start = new_start.max(h.last_offset() + 1);
                }
                break;
            }
            if total - sizes[i] < max_bytes || seg.summary().end > hold {
                break;
            }
            total -= sizes[i];
            new_start = new_start.max(seg.summary().end);
        }
        self.advance_log_start(part, &mut st, new_start)
    }

    /// Removes the segments at the front of `part` whose records are all older than
    /// `cutoff_ms` (newest timestamp below it), the newest segment too once it is that old
    /// (Kafka rolls it first), never past offset `hold` (see [`Store::expire_over_size`]).
    /// Batches of a legacy segment go one by one, at most 10,000 per call. Returns the number
    /// of offsets the log start moved by.
    pub fn expire_before(
        &self,
        part: &Partition,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        let new_start = self.time_target(part, &st, cutoff_ms, hold)?;
        self.advance_log_start(part, &mut st, new_start)
    }

    /// How many offsets [`Store::expire_before`] would remove from `part` without `hold` but
    /// keeps because of it: what a reader that has not caught up holds back.
    pub fn retention_held_back(
        &self,
        part: &Partition,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let st = self.part_state(part)?;
        let free = self.time_target(part, &st, cutoff_ms, i64::MAX)?;
        let held = self.time_target(part, &st, cutoff_ms, hold)?;
        Ok((free - held).max(0))
    }

    /// Where time retention would move the log start of `part`: past the front segments whose
    /// records are all older than `cutoff_ms`, never past `hold`.
    fn time_target(
        &self,
        part: &Partition,
        st: &PartitionState,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut new_start = st.log_start;
        for seg in &st.segments {
            if seg.is_legacy() {
                let db = self.inner.open_segments.get(seg)?;
                for (n, h) in tree_headers(&db.log, part.id, 0, i64::MAX).enumerate() {
                    let h = h?;
                    if h.max_timestamp >= cutoff_ms || n >= 10_000 || h.last_offset() + 1 > hold {
                        break;
                    }
                    new_start = new_start.max(h.last_offset() + 1);
                }
                if new_start < seg.summary().end {
                    break;
                }
                continue;
            }
            let s = seg.summary();
            if s.bytes == 0 || s.max_ts >= cutoff_ms || s.end > hold {
                break;
            }
            new_start = new_start.max(s.end);
        }
        Ok(new_start)
    }
}

impl Inner {
    /// Flushes every segment database written since the last flush, then the meta database.
    fn flush_all(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.flushing.lock().map_err(|_| StoreError::Closed)?;
        // Ends first: every end taken here belongs to a batch whose database was marked dirty
        // before, so it is in `dirty` below and flushed before the end is recorded.
        let ends = match self.ends.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(_) => return Err(StoreError::Closed),
        };
        let result = self.flush_with(&ends);
        if result.is_err() {
            if let Ok(mut now) = self.ends.lock() {
                for (pid, (end, hw)) in ends {
                    let e = now.entry(pid).or_insert((end, hw));
                    e.0 = e.0.max(end);
                }
            }
        }
        result
    }

    fn flush_with(&self, ends: &HashMap<u32, (i64, Arc<AtomicI64>)>) -> Result<(), StoreError> {
        let dirty = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Err(StoreError::Closed),
        };
        let mut failed = None;
        for db in &dirty {
            if let Err(e) = db.flush() {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            // Keep them dirty: the next flush tries again.
            if let Ok(mut d) = self.dirty.lock() {
                d.extend(dirty);
            }
            return Err(e);
        }
        drop(dirty);
        // The segments are durable: record how far each written partition's log goes.
        for (pid, (end, _)) in ends {
            self.log
                .insert(durable_end_key(*pid), &(*end as u64).to_be_bytes())?;
        }
        self.db.flush()?;
        // Durable: readers may have it now.
        for (end, hw) in ends.values() {
            hw.fetch_max(*end, Ordering::SeqCst);
        }
        if !ends.is_empty() {
            self.appends.send_modify(|n| *n += 1);
        }
        self.open_segments.trim(None);
        segment::collect_garbage();
        Ok(())
    }

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
        let started = std::time::Instant::now();
        let flushed = self.flush_all();
        self.flush_stats.observe(started.elapsed());
        match flushed {
            Ok(_) => self.durable.send_modify(|d| {
                d.upto = d.upto.max(target);
                d.error = None;
            }),
            Err(e) => {
                self.flush_stats.failures.fetch_add(1, Ordering::Relaxed);
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
        inner.open_segments.trim(None);
    }
}

/// The header of partition `pid`'s batch at `base` in `tree` (its first chunk).
fn header_in(tree: &sled::Tree, pid: u32, base: i64) -> Result<BatchHeader, StoreError> {
    match tree.get(chunk_key(pid, base, 0))? {
        Some(v) => stored_header(&v),
        None => Err(StoreError::Corrupt(format!(
            "no first chunk for the batch at {base}"
        ))),
    }
}

/// Bytes of the files under `dir`, recursively (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// The summary of the segment at `base` of partition `pid` read off its batches.
fn scan_summary(tree: &sled::Tree, pid: u32, base: i64) -> Result<Summary, StoreError> {
    let mut s = Summary::empty(base);
    for h in tree_headers(tree, pid, base, i64::MAX) {
        let h = h?;
        s.end = h.last_offset() + 1;
        s.bytes += h.total_len() as u64;
        s.max_ts = s.max_ts.max(h.max_timestamp);
    }
    Ok(s)
}

/// The headers of partition `pid`'s batches in `tree` with base offsets in `from..to`.
fn tree_headers(
    tree: &sled::Tree,
    pid: u32,
    from: i64,
    to: i64,
) -> impl Iterator<Item = Result<BatchHeader, StoreError>> {
    let end = if to == i64::MAX {
        chunk_key_end(pid)
    } else {
        chunk_key(pid, to, 0)
    };
    tree.range(chunk_key(pid, from.max(0), 0)..end)
        .filter_map(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((k, v)) => match parse_chunk_key(&k) {
                Err(e) => Some(Err(e)),
                Ok((_, 0)) => Some(stored_header(&v)),
                Ok(_) => None,
            },
        })
}

/// The header of a batch read back from the log; a short one means the store is corrupt.
fn stored_header(v: &[u8]) -> Result<BatchHeader, StoreError> {
    batch::parse_header(v).map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))
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

fn new_uuid() -> [u8; 16] {
    random_bytes()
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64 without padding (22 chars).
/// The producer id of sequence number `seq` for `owner` under `key`.
fn producer_id_for(key: &[u8; 32], seq: u64, owner: &[u8]) -> i64 {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(&seq.to_be_bytes());
    ctx.update(owner);
    let tag = ctx.sign();
    let mac = u32::from_be_bytes(tag.as_ref()[..4].try_into().unwrap_or([0; 4])) & 0x7fff_ffff;
    ((seq << PRODUCER_ID_SEQ_SHIFT) | u64::from(mac)) as i64
}

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
