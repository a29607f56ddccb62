//! Segments of a partition log, as Kafka rolls them: each segment is a sled database of its
//! own under `segments/<partition id>/<base offset>/`, holding the batches from its base offset
//! on (same keys as the legacy `log` tree), and, in the newest segment, the partition's producer
//! state and writer positions, so that a batch and the state it changes stay one atomic
//! `apply_batch`.
//!
//! Only the newest segment of a partition is written. Older ones are sealed: their summary
//! (end offset, bytes, newest timestamp) is kept in the meta database, so start-up, retention
//! and offset lookups need not open them. A segment's database is opened when it is first read
//! or written and closed again when more than [`OpenSegments`]' bound are open and it is not in
//! use, so memory does not grow with the number of segments.
//!
//! Data dirs written before segments existed keep their batches in the meta database's `log`
//! tree: that is the partition's *legacy* segment, read in place (never written again) until
//! retention or DeleteRecords removes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::StoreError;

/// An open segment database and its `log` tree.
#[derive(Debug)]
pub(crate) struct SegDb {
    pub db: sled::Db,
    pub log: sled::Tree,
}

impl SegDb {
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// What the store knows of a segment without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The offset after its last batch (its base offset while empty).
    pub end: i64,
    /// Bytes of stored batches.
    pub bytes: u64,
    /// The newest batch max timestamp, -1 while empty.
    pub max_ts: i64,
    /// Wall-clock time of its first write, ms (for `segment.ms`); 0 while empty.
    pub created_ms: i64,
    /// How many times compaction rewrote it: its files are in `<base>-<generation>/` (just
    /// `<base>/` for 0).
    pub generation: u64,
    /// Aborted transactions whose ABORT marker it holds (its entries of the aborted
    /// transaction index): a read_committed fetch opens only segments that have some.
    pub aborted: u64,
}

impl Summary {
    pub fn empty(base: i64) -> Summary {
        Summary {
            end: base,
            bytes: 0,
            max_ts: -1,
            created_ms: 0,
            generation: 0,
            aborted: 0,
        }
    }

    pub fn encode(&self) -> [u8; 48] {
        let mut v = [0u8; 48];
        v[..8].copy_from_slice(&self.end.to_be_bytes());
        v[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        v[16..24].copy_from_slice(&self.max_ts.to_be_bytes());
        v[24..32].copy_from_slice(&self.created_ms.to_be_bytes());
        v[32..40].copy_from_slice(&self.generation.to_be_bytes());
        v[40..].copy_from_slice(&self.aborted.to_be_bytes());
        v
    }

    /// Reads a stored summary (32 bytes: generation 0; 40 bytes: no aborted transactions;
    /// 48 bytes).
    pub fn decode(v: &[u8]) -> Result<Summary, StoreError> {
        if ![32, 40, 48].contains(&v.len()) {
            return Err(StoreError::Corrupt(format!(
                "segment summary of {} bytes, expected 48",
                v.len()
            )));
        }
        let n = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v[i..i + 8]);
            i64::from_be_bytes(a)
        };
        Ok(Summary {
            end: n(0),
            bytes: n(8) as u64,
            max_ts: n(16),
            created_ms: n(24),
            generation: if v.len() >= 40 { n(32) as u64 } else { 0 },
            aborted: if v.len() == 48 { n(40) as u64 } else { 0 },
        })
    }
}

/// Where a segment's batches live.
#[derive(Debug)]
pub(crate) enum Place {
    /// The meta database's `log` tree (data dirs written before segments existed).
    Legacy,
    /// A sled database of its own in this directory.
    Dir(PathBuf),
}

/// One segment of a partition.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: i64,
    pub place: Place,
    sealed: AtomicBool,
    summary: Mutex<Summary>,
    handle: Mutex<Option<Arc<SegDb>>>,
    last_used: AtomicU64,
    /// Wall-clock ms of the last use (idle databases are closed, see [`IDLE_CLOSE`]).
    last_used_ms: std::sync::atomic::AtomicI64,
    /// Bytes written through the current handle (see [`OpenSegments::recycle_after`]).
    written_since_open: AtomicU64,
    /// Close the handle as soon as it is idle.
    recycle: AtomicBool,
}

impl Segment {
    pub fn new(base: i64, place: Place, summary: Summary, sealed: bool) -> Segment {
        Segment {
            base,
            place,
            sealed: AtomicBool::new(sealed),
            summary: Mutex::new(summary),
            handle: Mutex::new(None),
            last_used: AtomicU64::new(0),
            last_used_ms: std::sync::atomic::AtomicI64::new(0),
            written_since_open: AtomicU64::new(0),
            recycle: AtomicBool::new(false),
        }
    }

    /// The legacy segment, always open on the meta database's `log` tree.
    pub fn legacy(base: i64, summary: Summary, db: sled::Db, log: sled::Tree) -> Segment {
        let s = Segment::new(base, Place::Legacy, summary, true);
        if let Ok(mut h) = s.handle.lock() {
            *h = Some(Arc::new(SegDb { db, log }));
        }
        s
    }

    pub fn is_legacy(&self) -> bool {
        matches!(self.place, Place::Legacy)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    pub fn summary(&self) -> Summary {
        match self.summary.lock() {
            Ok(s) => *s,
            Err(_) => Summary::empty(self.base),
        }
    }

    pub fn set_summary(&self, s: Summary) {
        if let Ok(mut g) = self.summary.lock() {
            *g = s;
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        match &self.place {
            Place::Dir(p) => Some(p),
            Place::Legacy => None,
        }
    }
}

/// The directory of generation `generation` of segment `base` of partition `pid`.
pub(crate) fn segment_dir(root: &Path, pid: u32, base: i64, generation: u64) -> PathBuf {
    let dir = partition_dir(root, pid);
    if generation == 0 {
        dir.join(format!("{base:020}"))
    } else {
        dir.join(format!("{base:020}-{generation}"))
    }
}

pub(crate) fn partition_dir(root: &Path, pid: u32) -> PathBuf {
    root.join("segments").join(pid.to_string())
}

/// The (base offset, generation) of the segment directories of partition `pid`, sorted.
/// Anything else in the directory is ignored with a warning.
pub(crate) fn list_segments(root: &Path, pid: u32) -> Result<Vec<(i64, u64)>, StoreError> {
    let dir = partition_dir(root, pid);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io(format!("reading {}: {e}", dir.display()))),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::Io(format!("reading {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let parsed = name.to_str().and_then(|n| {
            let (base, generation) = match n.split_once('-') {
                Some((b, g)) => (b, g.parse::<u64>().ok()?),
                None => (n, 0),
            };
            Some((base.parse::<i64>().ok().filter(|b| *b >= 0)?, generation))
        });
        match parsed {
            Some(p) => found.push(p),
            None => tracing::warn!(
                path = %entry.path().display(),
                "ignoring an entry of a partition's segment directory that is not a segment"
            ),
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// How long opening waits for another holder of a database's lock to let go (a process that
/// is still exiting, or sled's own IO threads of a database just closed in this process).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often sled's own background thread runs in a segment being written. Durability does not
/// depend on it (the store's flusher does group commit); it is what cleans sled's log: sled
/// 0.34 rewrites pages out of mostly-dead log segments only in that thread, so that the file
/// reuses their space while it grows. Measured on a 64 MiB segment of 64 KiB values: 1.27x the
/// data on disk with it, 1.43x without.
const GC_EVERY_MS: u64 = 10;

/// Opens (or creates) the sled database at `path` the way the store uses them: `cache` bytes of
/// page cache; sled's own background flusher only with `gc` (segments being written, see
/// [`GC_EVERY_MS`]); the store's flusher does group commit.
pub(crate) fn open_sled(path: &Path, cache: u64, gc: bool) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // sled 0.34 panics on some damaged files instead of answering an error.
        let opened = guarded(
            || format!("sled could not open {}", path.display()),
            || {
                Ok(sled::Config::new()
                    .path(path)
                    .cache_capacity(cache)
                    .flush_every_ms(gc.then_some(GC_EVERY_MS))
                    .mode(sled::Mode::HighThroughput)
                    .open())
            },
        )?;
        match opened {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse(path.display().to_string()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Runs `f`, turning a panic inside sled (0.34 panics on some damaged files, e.g. missing
/// blob files, instead of answering an error) into [`StoreError::Corrupt`] naming `what`.
pub(crate) fn guarded<T>(
    what: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(StoreError::Corrupt(format!(
                "{}: sled failed on damaged files ({msg}); `kafkabox check` lists the damage",
                what()
            )))
        }
    }
}

/// The segment databases open at one time, bounded: opening one more closes the least
/// recently used one that nobody is reading or writing.
#[derive(Debug)]
pub(crate) struct OpenSegments {
    max: usize,
    cache_bytes: u64,
    /// A written segment's handle is closed and reopened after this many bytes (sled 0.34
    /// keeps what was written through a handle in memory until it is closed).
    pub recycle_after: u64,
    open: Mutex<Vec<Arc<Segment>>>,
    tick: AtomicU64,
}

impl OpenSegments {
    pub fn new(max: usize, cache_bytes: u64, recycle_after: u64) -> OpenSegments {
        OpenSegments {
            max: max.max(2),
            cache_bytes,
            recycle_after,
            open: Mutex::new(Vec::new()),
            tick: AtomicU64::new(0),
        }
    }

    /// The open database of `seg`, opening it (and closing another) if needed.
    pub fn get(&self, seg: &Arc<Segment>) -> Result<Arc<SegDb>, StoreError> {
        self.get_with(seg, false)
    }

    /// Like [`OpenSegments::get`] for a segment about to be written: opened with sled's
    /// cleaning thread (a database already open for reading stays as it is until recycled).
    pub fn get_for_write(&self, seg: &Arc<Segment>) -> Result<Arc<SegDb>, StoreError> {
        self.get_with(seg, true)
    }

    fn get_with(&self, seg: &Arc<Segment>, write: bool) -> Result<Arc<SegDb>, StoreError> {
        seg.last_used.store(
            self.tick.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        seg.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let db = {
            let mut h = seg.handle.lock().map_err(|_| StoreError::Closed)?;
            if let Some(db) = &*h {
                return Ok(db.clone());
            }
            let Place::Dir(path) = &seg.place else {
                return Err(StoreError::Closed);
            };
            let db = open_sled(path, self.cache_bytes, write)?;
            let log = db.open_tree("log")?;
            let db = Arc::new(SegDb { db, log });
            *h = Some(db.clone());
            seg.written_since_open.store(0, Ordering::Relaxed);
            db
        };
        if let Ok(mut open) = self.open.lock() {
            open.push(seg.clone());
        }
        self.trim(Some(seg));
        Ok(db)
    }

    /// Closes the databases due for recycling or unused for [`IDLE_CLOSE`], then the least
    /// recently used ones while more than the bound are open (never `keep`), each only when
    /// nobody holds it. Databases written since the last flush are held (by the flusher's
    /// list): the flusher trims after each flush and at every interval.
    pub fn trim(&self, keep: Option<&Arc<Segment>>) {
        let victims = {
            let Ok(mut open) = self.open.lock() else {
                return;
            };
            let mut victims = Vec::new();
            let idle_before = now_ms() - IDLE_CLOSE.as_millis() as i64;
            let mut i = 0;
            while i < open.len() {
                if open[i].recycle.load(Ordering::Relaxed)
                    || open[i].last_used_ms.load(Ordering::Relaxed) < idle_before
                {
                    if let Some(db) = take_if_idle(&open[i]) {
                        victims.push(db);
                        open.remove(i);
                        continue;
                    }
                }
                i += 1;
            }
            if open.len() > self.max {
                open.sort_by_key(|s| s.last_used.load(Ordering::Relaxed));
                let mut i = 0;
                while open.len() > self.max && i < open.len() {
                    if keep.is_some_and(|k| Arc::ptr_eq(&open[i], k)) {
                        i += 1;
                        continue;
                    }
                    match take_if_idle(&open[i]) {
                        Some(db) => {
                            victims.push(db);
                            open.remove(i);
                        }
                        None => i += 1,
                    }
                }
            }
            victims
        };
        // Closing flushes: outside every lock.
        let closed = !victims.is_empty();
        drop(victims);
        if closed {
            collect_garbage();
        }
    }

    /// Counts `bytes` written to or read from `seg`; past [`OpenSegments::recycle_after`] its
    /// handle is closed when idle (the next access reopens it), giving back what sled kept in
    /// memory.
    /// Returns true when the handle is due but still held (usually: written and not yet
    /// flushed): the caller asks the flusher for a flush, after which it is closed.
    pub fn wrote(&self, seg: &Arc<Segment>, bytes: u64) -> bool {
        let n = seg.written_since_open.fetch_add(bytes, Ordering::Relaxed) + bytes;
        n >= self.recycle_after && !self.close(seg)
    }

    /// Closes `seg`'s database now if nobody else holds it, else as soon as it is idle (the
    /// flusher trims after every flush).
    /// Returns whether it was closed now.
    pub fn close(&self, seg: &Arc<Segment>) -> bool {
        if seg.is_legacy() {
            return true;
        }
        seg.recycle.store(true, Ordering::Relaxed);
        let Some(victim) = take_if_idle(seg) else {
            return false;
        };
        if let Ok(mut open) = self.open.lock() {
            open.retain(|s| !Arc::ptr_eq(s, seg));
        }
        drop(victim);
        collect_garbage();
        true
    }

    /// Closes `seg`'s database whoever holds it: it is being deleted. Readers that still hold
    /// it finish on the open handle.
    pub fn forget(&self, seg: &Arc<Segment>) {
        let taken = seg.handle.lock().ok().and_then(|mut h| h.take());
        if let Ok(mut open) = self.open.lock() {
            open.retain(|s| !Arc::ptr_eq(s, seg));
        }
        drop(taken);
    }

    /// Closes every open segment database under `dir` (a partition whose load failed: a
    /// later load opens them again through new segment objects).
    pub fn forget_under(&self, dir: &Path) {
        let taken: Vec<Arc<Segment>> = match self.open.lock() {
            Ok(mut open) => {
                let (under, rest): (Vec<_>, Vec<_>) = open
                    .drain(..)
                    .partition(|s| s.dir().is_some_and(|d| d.starts_with(dir)));
                *open = rest;
                under
            }
            Err(_) => return,
        };
        for seg in taken {
            let h = seg.handle.lock().ok().and_then(|mut h| h.take());
            drop(h);
        }
    }

    /// Number of segment databases open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }
}

/// Runs crossbeam-epoch's collector a few rounds. sled 0.34 frees replaced pages (and a closed
/// database's pages) as deferred garbage of the global epoch collector, which collects 8 bags
/// every 128 pins per thread; under a steady stream of appends that falls behind and memory
/// grows with the bytes written (measured: 800 MiB after 4 GiB). Flushing a guard collects
/// expired bags now.
pub(crate) fn collect_garbage() {
    for _ in 0..64 {
        crossbeam_epoch::pin().flush();
    }
}

/// A segment database unused this long is closed at the next trim (the flusher trims at
/// least every flush interval): what sled holds of it goes back.
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes `seg`'s handle when the segment itself holds the only reference.
fn take_if_idle(seg: &Segment) -> Option<Arc<SegDb>> {
    if seg.is_legacy() {
        return None;
    }
    let mut h = seg.handle.try_lock().ok()?;
    match &*h {
        Some(db) if Arc::strong_count(db) == 1 => {
            seg.written_since_open.store(0, Ordering::Relaxed);
            seg.recycle.store(false, Ordering::Relaxed);
            h.take()
        }
        _ => None,
    }
}
