//! The free-space reserve: writes are refused while the data dir's file system has less than
//! `min_free` bytes available, so sled never meets ENOSPC itself (sled 0.34 cannot recover from
//! a failed write in place: every later flush fails until the database is reopened). When space
//! returns, writes are accepted again by themselves. Also what the store reports of its disk:
//! its size on disk, free bytes, writes refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Store, StoreError};

/// How long a measurement of free space is trusted (bytes written since are subtracted).
const RECHECK_AFTER: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct DiskSpace {
    path: PathBuf,
    min_free: u64,
    /// When free space was last measured and what it was.
    last: Mutex<(Option<Instant>, u64)>,
    /// Bytes accepted since the last measurement.
    since: AtomicU64,
    /// Whether writes are being refused now (for one log line per change).
    refusing: AtomicBool,
    /// The free bytes the last refused write needed (the reserve plus its size).
    needed: AtomicU64,
    refused: AtomicU64,
}

impl DiskSpace {
    pub(crate) fn new(path: PathBuf, min_free: u64) -> DiskSpace {
        DiskSpace {
            path,
            min_free,
            last: Mutex::new((None, 0)),
            since: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            needed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Accepts or refuses a write of `bytes`. Measures the file system again every 200 ms or
    /// once a quarter of the reserve was written since the last measurement.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let since = self.since.load(Ordering::Relaxed);
        let free = {
            let Ok(mut last) = self.last.lock() else {
                return Err(StoreError::Closed);
            };
            let stale = last.0.is_none_or(|t| t.elapsed() >= RECHECK_AFTER);
            if stale || since >= self.min_free / 4 || last.1 < self.min_free + bytes + since {
                match fs2::available_space(&self.path) {
                    Ok(n) => {
                        *last = (Some(Instant::now()), n);
                        self.since.store(0, Ordering::Relaxed);
                    }
                    // A file system that cannot say: do not guess, accept.
                    Err(e) => {
                        tracing::debug!(error = %e, "statvfs of the data dir failed");
                        return Ok(());
                    }
                }
            }
            last.1.saturating_sub(self.since.load(Ordering::Relaxed))
        };
        if free < self.min_free.saturating_add(bytes) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.needed
                .store(self.min_free.saturating_add(bytes), Ordering::Relaxed);
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    free_bytes = free,
                    min_free_bytes = self.min_free,
                    dir = %self.path.display(),
                    "the data dir's disk is (nearly) full: writes are refused with KAFKA_STORAGE_ERROR until more than storage.free.bytes.min is free again; reads go on"
                );
            }
            return Err(StoreError::DiskFull {
                free,
                min: self.min_free,
            });
        }
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                free_bytes = free,
                "disk space is back: writes are accepted again"
            );
        }
        self.since.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Free bytes at the last measurement, minus what was written since.
    /// Measured again when the last measurement is older than 200 ms.
    pub(crate) fn free(&self) -> u64 {
        let Ok(mut last) = self.last.lock() else {
            return 0;
        };
        if last.0.is_none_or(|t| t.elapsed() >= RECHECK_AFTER) {
            if let Ok(n) = fs2::available_space(&self.path) {
                *last = (Some(Instant::now()), n);
                self.since.store(0, Ordering::Relaxed);
            }
        }
        last.1.saturating_sub(self.since.load(Ordering::Relaxed))
    }

    /// Writes refused for lack of space so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the last write was refused and the space it needed is still not free.
    fn refusing(&self, free: u64) -> bool {
        self.refusing.load(Ordering::Relaxed) && free < self.needed.load(Ordering::Relaxed)
    }
}

impl Store {
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

    /// (free bytes, the reserve) while free space is below the reserve, or the last write was
    /// refused and the space it needed is still not free (a batch larger than what is left
    /// above the reserve); None otherwise (or with no reserve).
    pub fn short_of_space(&self) -> Option<(u64, u64)> {
        let min = self.inner.space.min_free;
        if min == 0 {
            return None;
        }
        let free = self.free_bytes();
        (free < min || self.inner.space.refusing(free)).then_some((free, min))
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
