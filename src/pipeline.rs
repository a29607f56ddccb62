//! The in-process handler pipeline: an internal consumer per (topic, handler chain) that reads
//! the log straight from storage, hands records to the handlers in offset order per partition,
//! and commits its own offset in sled only after the chain succeeded (at-least-once; it resumes
//! at the first unhandled record after a restart or crash).
//!
//! The listener never waits on a handler: the pipeline only reads the store, so producers keep
//! publishing while a handler is slow or stuck, and the lag per partition shows it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafkabox_protocol::batch::{self, OutRecord, ProducerFields};
use kafkabox_storage::{Partition, Store, Topic};

use crate::contract::Contract;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One record handed to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (the producer's CreateTime).
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// Set when the stored batch at `offset` could not be decoded (a codec failure): `value`
    /// then holds the whole stored batch, and the event goes to the dead-letter topic with
    /// this reason instead of to handlers.
    pub decode_error: Option<String>,
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The events themselves are bad: retrying cannot help. The pipeline moves on.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Something outside is down: the pipeline backs off and retries the same events, in order,
    /// and never skips them.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// An event handler. Called with consecutive records of one partition, in offset order.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// A stable name: the pipeline's committed offsets are kept under it.
    fn name(&self) -> &str;
    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError>;
}

/// Most bytes of stored batches read per pass of a handler stage (a handler's batch).
const READ_BYTES: usize = 1024 * 1024;
/// Most bytes read per pass of the contract and profile stages. Bigger passes under a backlog
/// write each touched profile once for more events (a pass of 1 MiB over 1,000 customers wrote
/// every profile for every ~5 events); when caught up, passes stay as small as what arrived.
const INTERNAL_READ_BYTES: usize = 4 * 1024 * 1024;
/// Most a compressed batch may inflate to while decoding.
const INFLATE_LIMIT: usize = 64 * 1024 * 1024;
/// How long a handler call may go on after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Retry backoff for transient failures: first and cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// (stage name, topic, partition).
type LagKey = (String, String, i32);

/// Lag of every partition the pipelines handle: log end minus the next offset to handle.
#[derive(Debug, Default, Clone)]
pub struct Lag {
    inner: Arc<Mutex<HashMap<LagKey, Arc<LagSlot>>>>,
}

/// A worker's position; its lag is the partition's log end minus it, read when asked, so it
/// grows with every append even while the worker is stuck in a handler.
#[derive(Debug)]
struct LagSlot {
    next: AtomicI64,
    part: Arc<Partition>,
    store: Store,
}

impl LagSlot {
    fn lag(&self) -> i64 {
        (self.store.offsets(&self.part).log_end - self.next.load(Ordering::SeqCst)).max(0)
    }
}

impl Lag {
    fn slot(&self, handler: &str, part: &Arc<Partition>, store: &Store) -> Arc<LagSlot> {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key = (handler.to_string(), part.topic.clone(), part.index);
        match m.get(&key) {
            // A partition of a topic of the same name deleted since has no say any more.
            Some(slot) if slot.part.id == part.id => slot.clone(),
            _ => {
                let slot = Arc::new(LagSlot {
                    next: AtomicI64::new(0),
                    part: part.clone(),
                    store: store.clone(),
                });
                m.insert(key, slot.clone());
                slot
            }
        }
    }

    /// Forgets `handler`'s slot on `part` (its topic was deleted).
    fn remove(&self, handler: &str, part: &Partition) {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key = (handler.to_string(), part.topic.clone(), part.index);
        if m.get(&key).is_some_and(|s| s.part.id == part.id) {
            m.remove(&key);
        }
    }

    /// Lag of `handler` on `topic`/`partition`, if it runs there.
    pub fn get(&self, handler: &str, topic: &str, partition: i32) -> Option<i64> {
        let m = self.inner.lock().ok()?;
        m.get(&(handler.to_string(), topic.to_string(), partition))
            .map(|a| a.lag())
    }

    /// Every (stage, topic, partition, lag) the pipelines track.
    pub fn snapshot(&self) -> Vec<(String, String, i32, i64)> {
        match self.inner.lock() {
            Ok(m) => {
                let mut v: Vec<_> = m
                    .iter()
                    .map(|((s, t, p), a)| (s.clone(), t.clone(), *p, a.lag()))
                    .collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }

    /// Sum over all partitions of all handlers.
    pub fn total(&self) -> i64 {
        match self.inner.lock() {
            Ok(m) => m.values().map(|a| a.lag()).sum(),
            Err(_) => 0,
        }
    }
}

/// What a worker does with the records it reads.
#[derive(Clone)]
pub enum Stage {
    /// Hands the records (only the valid ones when the topic has a contract) to a handler;
    /// records it refuses permanently go to `dlq` with its reason.
    Handler {
        handler: Arc<dyn Handler>,
        dlq: Arc<Topic>,
    },
    /// Checks every record against the topic's contract and appends the invalid ones to the
    /// dead-letter topic, in the same atomic write as its own offset commit. Counts per source.
    /// With `profiles`, it also updates the customer profiles from the valid records it has
    /// just checked (each record is parsed and checked once) and commits the profile stage's
    /// offset in that same write.
    DeadLetter {
        dlq: Arc<Topic>,
        stats: IngestStats,
        profiles: Option<SharedProfiles>,
    },
    /// Updates customer profiles ([`crate::profile`]) from the records of a topic without a
    /// contract (every JSON record), in the same atomic write as its offset commit.
    Profile { profiles: SharedProfiles },
}

/// The profile cache shared by every partition's worker; its lock also serialises profile
/// updates across partitions (one customer's events may arrive on several).
pub type SharedProfiles = Arc<Mutex<crate::profile::Profiles>>;

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Handler { handler, .. } => handler.name(),
            Stage::DeadLetter { .. } => DEAD_LETTER_STAGE,
            Stage::Profile { .. } => PROFILE_STAGE,
        }
    }

    /// Every stage name whose offsets this stage commits.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Stage::DeadLetter {
                profiles: Some(_), ..
            } => vec![DEAD_LETTER_STAGE, PROFILE_STAGE],
            other => vec![other.name()],
        }
    }
}

/// The dead-letter stage's consumer name (its offsets are kept under it).
pub const DEAD_LETTER_STAGE: &str = "contract";
/// The profile stage's consumer name.
pub const PROFILE_STAGE: &str = "profile";

/// Per-source ingest status: what a team checks after sending a few test events.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceStatus {
    pub received: u64,
    pub valid: u64,
    pub rejected: u64,
    /// Wall-clock ms of the last record seen from this source.
    pub last_seen_ms: i64,
    pub last_rejection: Option<String>,
}

/// Ingest status by source (`"unknown"` when a record's source cannot be read), kept in the
/// store and updated in the same atomic write as the dead-letter stage's offset, so it counts
/// every record once across restarts and crashes.
#[derive(Debug, Clone)]
pub struct IngestStats {
    store: Store,
    /// Serialises read-modify-write of the counters across partitions.
    lock: Arc<Mutex<()>>,
    /// Since start, in memory: what the periodic log line and the per-minute chart show.
    recent: Arc<Mutex<Recent>>,
}

/// Minutes of per-source history kept in memory for the dashboard's chart.
pub const MINUTES_KEPT: usize = 60;
/// Most sources with a per-minute history (later ones are not charted).
const MAX_CHARTED_SOURCES: usize = 100;

#[derive(Debug, Default)]
struct Recent {
    /// Since the last periodic log line.
    valid: u64,
    rejected: u64,
    /// source -> (minute since the epoch, events received that minute), oldest first.
    minutes: std::collections::BTreeMap<String, std::collections::VecDeque<(i64, u64)>>,
}

/// Events received per minute from one source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MinuteCount {
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    pub received: u64,
}

const INGEST_PREFIX: &str = "ingest/";
/// Most sources reported.
const MAX_SOURCES: usize = 10_000;

impl IngestStats {
    pub fn new(store: Store) -> IngestStats {
        IngestStats {
            store,
            lock: Arc::default(),
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        match self.recent.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Valid and rejected events since the last call (for the periodic info line).
    pub fn take_interval(&self) -> (u64, u64) {
        let mut r = self.recent();
        let out = (r.valid, r.rejected);
        r.valid = 0;
        r.rejected = 0;
        out
    }

    /// Events received per minute and source over the last [`MINUTES_KEPT`] minutes since
    /// start (memory only).
    pub fn per_minute(&self) -> std::collections::BTreeMap<String, Vec<MinuteCount>> {
        let oldest = crate::services::now_ms() / 60_000 - MINUTES_KEPT as i64;
        self.recent()
            .minutes
            .iter()
            .map(|(source, q)| {
                let v = q
                    .iter()
                    .filter(|(m, _)| *m > oldest)
                    .map(|(m, n)| MinuteCount {
                        minute_ms: m * 60_000,
                        received: *n,
                    })
                    .collect();
                (source.clone(), v)
            })
            .collect()
    }

    /// Adds `observed` to the in-memory history (after it was committed).
    fn observe(&self, observed: &[(Option<String>, Option<String>)]) {
        let minute = crate::services::now_ms() / 60_000;
        let mut r = self.recent();
        for (source, rejection) in observed {
            match rejection {
                None => r.valid += 1,
                Some(_) => r.rejected += 1,
            }
            let source = source.as_deref().unwrap_or("unknown");
            if !r.minutes.contains_key(source) && r.minutes.len() >= MAX_CHARTED_SOURCES {
                continue;
            }
            let q = r.minutes.entry(source.to_string()).or_default();
            match q.back_mut() {
                Some((m, n)) if *m == minute => *n += 1,
                _ => q.push_back((minute, 1)),
            }
            while q.len() > MINUTES_KEPT {
                q.pop_front();
            }
        }
    }

    /// The status of every source seen.
    pub fn snapshot(
        &self,
    ) -> Result<std::collections::BTreeMap<String, SourceStatus>, kafkabox_storage::StoreError>
    {
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in self
            .store
            .state_prefix(INGEST_PREFIX.as_bytes(), MAX_SOURCES)?
        {
            let source = String::from_utf8_lossy(&k[INGEST_PREFIX.len()..]).into_owned();
            if let Ok(status) = serde_json::from_slice(&v) {
                out.insert(source, status);
            }
        }
        Ok(out)
    }

    /// The state writes that add `observed` (source, rejection reason if rejected) to the
    /// stored counters. Call with `lock` held until the writes are committed.
    fn writes(
        &self,
        observed: &[(Option<String>, Option<String>)],
    ) -> Result<Vec<kafkabox_storage::StateEntry>, kafkabox_storage::StoreError> {
        let now = crate::services::now_ms();
        let mut touched: std::collections::BTreeMap<String, SourceStatus> =
            std::collections::BTreeMap::new();
        for (source, rejection) in observed {
            let source = source.as_deref().unwrap_or("unknown").to_string();
            if !touched.contains_key(&source) {
                let key = format!("{INGEST_PREFIX}{source}");
                let current = self
                    .store
                    .state(key.as_bytes())?
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default();
                touched.insert(source.clone(), current);
            }
            if let Some(s) = touched.get_mut(&source) {
                s.received += 1;
                s.last_seen_ms = now;
                match rejection {
                    None => s.valid += 1,
                    Some(r) => {
                        s.rejected += 1;
                        s.last_rejection = Some(r.clone());
                    }
                }
            }
        }
        Ok(touched
            .into_iter()
            .map(|(source, status)| {
                let value = serde_json::to_vec(&status).unwrap_or_default();
                (format!("{INGEST_PREFIX}{source}").into_bytes(), value)
            })
            .collect())
    }
}

/// What the contract stage found in the records it committed: for each pass, its offset range
/// and the offsets in it that broke the contract (or did not decode). Handler stages behind it
/// skip those without checking the contract again; records it has not reached yet are checked
/// by the handler stage itself. Bounded: the newest [`VERDICT_PASSES`] passes.
#[derive(Debug, Default)]
pub struct Verdicts {
    passes: Mutex<std::collections::VecDeque<(i64, i64, Vec<i64>)>>,
}

/// Passes of the contract stage whose verdicts are kept per partition.
const VERDICT_PASSES: usize = 1024;

impl Verdicts {
    fn record(&self, start: i64, end: i64, invalid: Vec<i64>) {
        if let Ok(mut p) = self.passes.lock() {
            if p.back().is_some_and(|(_, e, _)| *e > start) {
                // A re-run after a failed commit: the ranges stay in order.
                p.clear();
            }
            p.push_back((start, end, invalid));
            while p.len() > VERDICT_PASSES {
                p.pop_front();
            }
        }
    }

    /// How far from `from` the verdicts reach without a gap, and the invalid offsets up to
    /// there.
    fn lookup(&self, from: i64) -> (i64, std::collections::HashSet<i64>) {
        let mut covered = from;
        let mut invalid = std::collections::HashSet::new();
        if let Ok(p) = self.passes.lock() {
            for (start, end, bad) in p.iter() {
                if *start <= covered && *end > covered {
                    invalid.extend(bad.iter().copied().filter(|o| *o >= from));
                    covered = *end;
                }
            }
        }
        (covered, invalid)
    }
}

/// What every worker shares: the store, the lag table, the metrics, the shutdown signal and
/// the contract stage's verdicts per partition.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: Store,
    pub lag: Lag,
    pub metrics: Arc<crate::services::metrics::Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub verdicts: Arc<Mutex<std::collections::HashMap<u32, Arc<Verdicts>>>>,
}

impl Shared {
    /// The verdicts of partition `pid` (store-wide partition id).
    fn verdicts(&self, pid: u32) -> Arc<Verdicts> {
        match self.verdicts.lock() {
            Ok(mut m) => m.entry(pid).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

/// Starts one worker per partition of `topic`. They stop when `shutdown` flips or when their
/// topic is deleted.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    shared: &Shared,
    topic: &Arc<Topic>,
    stage: Stage,
    contract: Option<Arc<Contract>>,
) {
    spawn_partitions(tasks, shared, topic, &topic.partitions, stage, contract)
}

/// Starts one worker for each of `parts` (partitions of `topic`).
pub fn spawn_partitions(
    tasks: &mut JoinSet<()>,
    shared: &Shared,
    topic: &Arc<Topic>,
    parts: &[Arc<Partition>],
    stage: Stage,
    contract: Option<Arc<Contract>>,
) {
    let Shared {
        store,
        lag,
        metrics,
        shutdown,
        verdicts: _,
    } = shared;
    let core_stage = stage.clone();
    for part in parts {
        let worker = Worker {
            core: Arc::new(Core {
                metrics: metrics.clone(),
                store: store.clone(),
                topic: topic.meta.name.clone(),
                part: part.clone(),
                contract: contract.clone(),
                verdicts: shared.verdicts(part.id),
            }),
            lags: core_stage
                .names()
                .iter()
                .map(|n| lag.slot(n, part, store))
                .collect(),
            lag: lag.clone(),
            stage: stage.clone(),
            shutdown: shutdown.clone(),
        };
        let span = tracing::info_span!(
            "pipeline",
            stage = %stage.name(),
            topic = %topic.meta.name,
            partition = part.index
        );
        tasks.spawn(tracing::Instrument::instrument(worker.run(), span));
    }
}

/// How a delivery to a handler ended.
enum Delivery {
    Done,
    Refused(String),
    Interrupted,
}

/// The `source` field of an event's JSON value, when it has one (clipped: it becomes a
/// header, a stored key and a metrics label).
fn source_of(e: &Event) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(e.value.as_deref()?).ok()?;
    clipped_source(&v)
}

fn clipped_source(event: &Value) -> Option<String> {
    event
        .get("source")?
        .as_str()
        .map(|s| crate::contract::clip(s.to_string(), crate::contract::MAX_SOURCE_BYTES))
}

/// Parsed events with their stored JSON and place, as the profiles take them.
fn to_valid<'a>(parsed: &'a [(Value, &'a Event)]) -> Vec<crate::profile::Valid<'a>> {
    parsed
        .iter()
        .map(|(event, e)| crate::profile::Valid {
            event,
            raw: e.value.as_deref().unwrap_or_default(),
            partition: e.partition,
            offset: e.offset,
        })
        .collect()
}

/// The synchronous half of a worker: reading, checking and committing. It runs on blocking
/// threads, never on the async runtime's.
struct Core {
    metrics: Arc<crate::services::metrics::Metrics>,
    store: Store,
    topic: String,
    part: Arc<Partition>,
    contract: Option<Arc<Contract>>,
    /// The contract stage's verdicts on this partition (it writes, handler stages read).
    verdicts: Arc<Verdicts>,
}

struct Worker {
    core: Arc<Core>,
    stage: Stage,
    /// One per name in `stage.names()`.
    lags: Vec<Arc<LagSlot>>,
    lag: Lag,
    shutdown: watch::Receiver<bool>,
}

/// Runs `f` on a blocking thread; a panic there becomes a storage error (retried).
async fn off_runtime<T, F>(f: F) -> Result<T, kafkabox_storage::StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, kafkabox_storage::StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| kafkabox_storage::StoreError::Corrupt(format!("pipeline task: {e}")))?
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The partition loop. Bounded waits only: every sleep ends on an append, on shutdown or
    /// after its backoff.
    async fn run(mut self) {
        let name = self.stage.name().to_string();
        // Where each committed name stands; the worker starts at the earliest and each name
        // skips what it already did (a data dir whose stages were apart).
        let mut starts = Vec::new();
        for n in self.stage.names() {
            match self.core.store.consumer_offset(&self.core.part, n) {
                Ok(o) => starts.push(o),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the committed offset; pipeline not started");
                    return;
                }
            }
        }
        let mut next = starts.iter().copied().min().unwrap_or(0);
        let mut appends = self.core.store.subscribe_appends();
        let mut shutdown = self.shutdown.clone();
        while !self.stopping() {
            appends.borrow_and_update();
            if !self.core.store.is_live(&self.core.part) {
                tracing::info!("topic deleted; stage stopped on this partition");
                for n in self.stage.names() {
                    self.lag.remove(n, &self.core.part);
                }
                return;
            }
            let offsets = self.core.store.offsets(&self.core.part);
            if next < offsets.log_start {
                tracing::warn!(
                    from = next,
                    to = offsets.log_start,
                    "records removed by retention before they were handled"
                );
                next = offsets.log_start;
            }
            for l in &self.lags {
                l.next.store(next, Ordering::SeqCst);
            }
            if next >= offsets.log_end {
                tokio::select! {
                    _ = appends.changed() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let core = self.core.clone();
            let committed = match self.stage.clone() {
                Stage::Handler { handler, dlq } => {
                    match self.handler_pass(&core, handler, dlq, &name, next).await {
                        Some(r) => r,
                        None => return, // interrupted: unhandled events are handled next time
                    }
                }
                Stage::DeadLetter {
                    dlq,
                    stats,
                    profiles,
                } => {
                    let skip = (starts.first().copied().unwrap_or(0), starts.get(1).copied());
                    off_runtime(move || {
                        let (events, end) = core.read(next, INTERNAL_READ_BYTES)?;
                        core.dead_letter(&dlq, &stats, profiles.as_ref(), &events, end, skip)?;
                        Ok(end)
                    })
                    .await
                }
                Stage::Profile { profiles } => {
                    off_runtime(move || {
                        let (events, end) = core.read(next, INTERNAL_READ_BYTES)?;
                        core.update_profiles(&profiles, &events, end)?;
                        Ok(end)
                    })
                    .await
                }
            };
            match committed {
                Ok(end) => next = end,
                Err(e) => {
                    tracing::error!(offset = next, error = %e, "cannot read or commit; retrying");
                    self.sleep(BACKOFF_MAX).await;
                }
            }
        }
    }

    /// One pass of a handler stage: read and check off the runtime, deliver, commit off the
    /// runtime. None when shutdown interrupted the handler's retries.
    async fn handler_pass(
        &mut self,
        core: &Arc<Core>,
        handler: Arc<dyn Handler>,
        dlq: Arc<Topic>,
        name: &str,
        next: i64,
    ) -> Option<Result<i64, kafkabox_storage::StoreError>> {
        let c = core.clone();
        let read = off_runtime(move || {
            let (events, end) = c.read(next, READ_BYTES)?;
            // Undecodable batches: the dead-letter stage's when the topic has a contract,
            // this stage's to dead-letter otherwise.
            let (broken, events): (Vec<Event>, Vec<Event>) =
                events.into_iter().partition(|e| e.decode_error.is_some());
            let broken = if c.contract.is_some() {
                Vec::new()
            } else {
                broken
            };
            // Invalid records are the dead-letter stage's; handlers see valid ones: those it
            // has checked by its verdict, the rest by checking here.
            let events: Vec<Event> = match &c.contract {
                Some(contract) => {
                    let (checked, invalid) = c.verdicts.lookup(next);
                    events
                        .into_iter()
                        .filter(|e| {
                            if e.offset < checked {
                                !invalid.contains(&e.offset)
                            } else {
                                contract.check(e.value.as_deref()).is_ok()
                            }
                        })
                        .collect()
                }
                None => events,
            };
            Ok((events, broken, end))
        })
        .await;
        let (events, broken, end) = match read {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let outcome = if events.is_empty() {
            Delivery::Done
        } else {
            self.deliver(handler.as_ref(), &events).await
        };
        let name = name.to_string();
        let c = core.clone();
        let done = match outcome {
            Delivery::Interrupted => return None,
            Delivery::Done => {
                off_runtime(move || {
                    let broken: Vec<(&Event, String, Option<String>)> = broken
                        .iter()
                        .map(|e| (e, e.decode_error.clone().unwrap_or_default(), None))
                        .collect();
                    c.append_dead_letters(&dlq, &broken, &[&name], end, &[])
                })
                .await
            }
            Delivery::Refused(reason) => {
                off_runtime(move || {
                    let reason = format!("handler {name}: {reason}");
                    let mut rejected: Vec<(&Event, String, Option<String>)> = events
                        .iter()
                        .map(|e| (e, reason.clone(), source_of(e)))
                        .collect();
                    rejected.extend(
                        broken
                            .iter()
                            .map(|e| (e, e.decode_error.clone().unwrap_or_default(), None)),
                    );
                    rejected.sort_by_key(|(e, _, _)| e.offset);
                    c.append_dead_letters(&dlq, &rejected, &[&name], end, &[])
                })
                .await
            }
        };
        Some(done.map(|()| end))
    }

    /// Runs the handler until it succeeds, refuses the events permanently, or shutdown
    /// interrupts its retries.
    async fn deliver(&mut self, handler: &dyn Handler, events: &[Event]) -> Delivery {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let call = handler.handle(events);
            tokio::pin!(call);
            let mut shutdown = self.shutdown.clone();
            let result = tokio::select! {
                r = &mut call => r,
                _ = shutdown.changed() => {
                    // A handler gets a moment to finish; past it, its events are handled
                    // again at the next start (handlers see events at least once).
                    match tokio::time::timeout(SHUTDOWN_GRACE, &mut call).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(handler = handler.name(), "handler still busy at shutdown; its events are handled again at the next start");
                            return Delivery::Interrupted;
                        }
                    }
                }
            };
            match result {
                Ok(()) => return Delivery::Done,
                Err(HandlerError::Permanent(reason)) => {
                    tracing::warn!(
                        first = events.first().map(|e| e.offset),
                        last = events.last().map(|e| e.offset),
                        %reason,
                        "handler refused these events permanently; they go to the dead-letter topic"
                    );
                    return Delivery::Refused(reason);
                }
                Err(HandlerError::Transient(reason)) => {
                    tracing::warn!(retry_in_ms = backoff.as_millis() as u64, %reason, "handler failed; retrying the same events");
                    if !self.sleep(backoff).await {
                        return Delivery::Interrupted;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Sleeps unless shutdown comes first; false on shutdown.
    async fn sleep(&mut self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = shutdown.changed() => false,
        }
    }
}

impl Core {
    /// Reads and decodes the records from `next` on; returns them and the offset after them.
    /// A batch that cannot be decoded is skipped with an error log (its records cannot be
    /// handed to anyone).
    fn read(
        &self,
        next: i64,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, i64), kafkabox_storage::StoreError> {
        let mut buf = BytesMut::new();
        let mut end = next;
        self.store
            .read(&self.part, next, max_bytes, true, &mut buf)?;
        let mut events = Vec::new();
        for b in batch::split_batches(&buf) {
            let (h, bytes) = match b {
                Ok(b) => b,
                Err(e) => {
                    return Err(kafkabox_storage::StoreError::Corrupt(format!(
                        "stored batches: {e}"
                    )));
                }
            };
            end = h.last_offset() + 1;
            match batch::decode_batch(bytes, INFLATE_LIMIT) {
                Ok((_, records)) => events.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= next)
                        .map(|r| Event {
                            topic: self.topic.clone(),
                            partition: self.part.index,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                            decode_error: None,
                        }),
                ),
                Err(e) => {
                    tracing::error!(
                        base_offset = h.base_offset,
                        last_offset = h.last_offset(),
                        error = %e,
                        "stored batch cannot be decoded; it goes to the dead-letter topic whole"
                    );
                    events.push(Event {
                        topic: self.topic.clone(),
                        partition: self.part.index,
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                        key: None,
                        value: Some(Bytes::copy_from_slice(bytes)),
                        headers: Vec::new(),
                        decode_error: Some(format!(
                            "undecodable batch (offsets {} to {}): {e}",
                            h.base_offset,
                            h.last_offset()
                        )),
                    });
                }
            }
        }
        Ok((events, end))
    }

    /// Checks `events` against the contract; appends the invalid ones to the dead-letter
    /// topic and, with `profiles`, applies the valid ones to the customer profiles, all in one
    /// atomic write with this stage's offsets (`end`). `skip` holds where the contract stage
    /// and the profile stage had got to: records before each were done already.
    fn dead_letter(
        &self,
        dlq: &Topic,
        stats: &IngestStats,
        profiles: Option<&SharedProfiles>,
        events: &[Event],
        end: i64,
        skip: (i64, Option<i64>),
    ) -> Result<(), kafkabox_storage::StoreError> {
        let names: &[&str] = if profiles.is_some() {
            &[DEAD_LETTER_STAGE, PROFILE_STAGE]
        } else {
            &[DEAD_LETTER_STAGE]
        };
        let Some(contract) = &self.contract else {
            return self.append_dead_letters(dlq, &[], names, end, &[]);
        };
        let (checked_before, profiled_before) = (skip.0, skip.1.unwrap_or(i64::MAX));
        let mut rejected = Vec::new();
        let mut observed = Vec::with_capacity(events.len());
        let mut valid: Vec<(Value, &Event)> = Vec::new();
        let mut invalid = Vec::new();
        for e in events {
            let count = e.offset >= checked_before;
            if let Some(reason) = &e.decode_error {
                invalid.push(e.offset);
                if count {
                    observed.push((None, Some(reason.clone())));
                    rejected.push((e, reason.clone(), None));
                }
                continue;
            }
            match contract.check(e.value.as_deref()) {
                Ok(event) => {
                    if count {
                        observed.push((clipped_source(&event), None));
                    }
                    if profiles.is_some() && e.offset >= profiled_before {
                        valid.push((event, e));
                    }
                }
                Err(r) => {
                    invalid.push(e.offset);
                    if count {
                        observed.push((r.source.clone(), Some(r.reason.clone())));
                        rejected.push((e, r.reason, r.source));
                    }
                }
            }
        }
        let _serial = match stats.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut state = stats.writes(&observed)?;
        match profiles {
            None => self.append_dead_letters(dlq, &rejected, names, end, &state)?,
            Some(profiles) => {
                let mut cache = match profiles.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let valid = to_valid(&valid);
                let (changed, writes) = cache.apply(&self.store, &valid)?;
                state.extend(writes);
                if let Err(e) = self.append_dead_letters(dlq, &rejected, names, end, &state) {
                    cache.forget(&changed);
                    return Err(e);
                }
            }
        }
        stats.observe(&observed);
        let start = events.first().map_or(end, |e| e.offset);
        self.verdicts.record(start, end, invalid);
        Ok(())
    }

    /// Appends `rejected` (event, reason, source) to the dead-letter topic with the original
    /// key, value and headers plus `kafkabox.dlq.*` headers, in the same atomic write as the
    /// commit of `end` for consumer `name`; just commits when there is nothing to append.
    fn append_dead_letters(
        &self,
        dlq: &Topic,
        rejected: &[(&Event, String, Option<String>)],
        names: &[&str],
        end: i64,
        state: &[kafkabox_storage::StateEntry],
    ) -> Result<(), kafkabox_storage::StoreError> {
        let name = names.first().copied().unwrap_or_default();
        let index = usize::try_from(self.part.index).unwrap_or(0) % dlq.partitions.len().max(1);
        let Some(target) = dlq.partitions.get(index) else {
            return Err(kafkabox_storage::StoreError::Corrupt(format!(
                "{} has no partitions",
                dlq.meta.name
            )));
        };
        // A pass re-run after a crash between storing its dead letters and committing its
        // offset finds them stored: only those past the writer's position are appended.
        let stored = self.store.writer_position(target, &self.part, name)?;
        let rejected: Vec<&(&Event, String, Option<String>)> = rejected
            .iter()
            .filter(|(e, _, _)| stored.is_none_or(|p| e.offset >= p))
            .collect();
        if rejected.is_empty() {
            return self
                .store
                .commit_with_state(&self.part, names, end, state)
                .map(|_| ());
        }
        let partition = self.part.index.to_string();
        let meta: Vec<[String; 2]> = rejected
            .iter()
            .map(|(e, _, _)| [e.offset.to_string(), e.timestamp.to_string()])
            .collect();
        let headers: Vec<Vec<batch::HeaderRef<'_>>> = rejected
            .iter()
            .zip(meta.iter())
            .map(|((e, reason, source), [offset, timestamp])| {
                let mut h: Vec<batch::HeaderRef<'_>> = e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_deref()))
                    .collect();
                h.push((b"kafkabox.dlq.reason", Some(reason.as_bytes())));
                h.push((
                    b"kafkabox.dlq.source",
                    Some(source.as_deref().unwrap_or("unknown").as_bytes()),
                ));
                h.push((b"kafkabox.dlq.stage", Some(name.as_bytes())));
                h.push((b"kafkabox.dlq.topic", Some(self.topic.as_bytes())));
                h.push((b"kafkabox.dlq.partition", Some(partition.as_bytes())));
                h.push((b"kafkabox.dlq.offset", Some(offset.as_bytes())));
                h.push((b"kafkabox.dlq.timestamp", Some(timestamp.as_bytes())));
                h
            })
            .collect();
        let records: Vec<OutRecord<'_>> = rejected
            .iter()
            .zip(headers.iter())
            .map(|((e, _, _), h)| OutRecord {
                key: e.key.as_deref(),
                value: e.value.as_deref(),
                headers: h,
            })
            .collect();
        let bytes =
            batch::encode_records(&records, crate::services::now_ms(), ProducerFields::NONE);
        let header = batch::parse_header(&bytes).map_err(|e| {
            kafkabox_storage::StoreError::Corrupt(format!("dead-letter batch: {e}"))
        })?;
        let appended = self
            .store
            .append_and_commit(
                target,
                &bytes,
                &header,
                kafkabox_storage::ConsumerCommit {
                    source: &self.part,
                    names,
                    next_offset: end,
                    state,
                },
            )
            .map_err(|e| match e {
                kafkabox_storage::AppendError::Store(s) => s,
                other => kafkabox_storage::StoreError::Corrupt(other.to_string()),
            })?;
        for (i, (e, reason, source)) in rejected.iter().enumerate() {
            let class = match (&e.decode_error, name) {
                (Some(_), _) => "undecodable",
                (None, DEAD_LETTER_STAGE) => "contract",
                (None, _) => "handler",
            };
            self.metrics
                .dead_lettered(&self.topic, source.as_deref(), class);
            tracing::warn!(
                offset = e.offset,
                dlq_topic = %dlq.meta.name,
                dlq_partition = target.index,
                dlq_offset = appended.base_offset + i as i64,
                source = source.as_deref().unwrap_or("unknown"),
                reason = %crate::services::truncate(reason, 300),
                "event sent to the dead-letter topic ({class})"
            );
        }
        Ok(())
    }

    /// Applies the JSON records of a topic without a contract to the customer profiles and
    /// commits them with `end`.
    fn update_profiles(
        &self,
        profiles: &SharedProfiles,
        events: &[Event],
        end: i64,
    ) -> Result<(), kafkabox_storage::StoreError> {
        // Topics with a contract update profiles in their contract stage; here every record
        // that is JSON counts.
        let parsed: Vec<(Value, &Event)> = events
            .iter()
            .filter_map(|e| Some((serde_json::from_slice(e.value.as_deref()?).ok()?, e)))
            .collect();
        let valid = to_valid(&parsed);
        let mut cache = match profiles.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (changed, writes) = cache.apply(&self.store, &valid)?;
        match self
            .store
            .commit_with_state(&self.part, &[PROFILE_STAGE], end, &writes)
        {
            Ok(_) => Ok(()),
            Err(e) => {
                cache.forget(&changed);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdicts;

    #[test]
    fn verdicts_cover_contiguous_passes_only() {
        let v = Verdicts::default();
        v.record(0, 10, vec![3]);
        v.record(10, 20, vec![12, 19]);
        // From 5: both passes, without a gap.
        let (checked, invalid) = v.lookup(5);
        assert_eq!(checked, 20);
        assert_eq!(invalid, [12, 19].into_iter().collect());
        // Past what was checked: nothing is known.
        assert_eq!(v.lookup(25).0, 25);
        // A pass after a gap (records removed) is not reached from before it.
        v.record(30, 40, vec![31]);
        assert_eq!(v.lookup(0).0, 20);
        assert_eq!(v.lookup(30), (40, [31].into_iter().collect()));
        // A re-run from an earlier offset starts over.
        v.record(10, 15, vec![]);
        assert_eq!(v.lookup(0).0, 0);
        assert_eq!(v.lookup(10).0, 15);
    }
}
