//! Durability: the flusher thread and group commit. sled's own flush timer is off; the flusher
//! flushes every segment database written since the last flush, records each written
//! partition's durable end, flushes the meta database, then publishes the new ends as the
//! partitions' high watermarks and releases every writer waiting for a write it covered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::keys::durable_end_key;
use crate::segment::{self, SegDb};
use crate::{Inner, Store, StoreError};

/// How writers wake the flusher thread. Kept apart from [`Inner`] so that the flusher holds
/// only a weak reference to the store and a dropped store closes its database.
#[derive(Debug, Default)]
pub(crate) struct FlushSignal {
    /// (flush wanted now, shut down)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

/// Durability progress shared between writers and the flusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Every write with a sequence number at or below this is on disk.
    pub(crate) upto: u64,
    /// Set when the last flush failed; writers waiting get it.
    pub(crate) error: Option<String>,
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

impl Store {
    pub(crate) fn mark_dirty(&self, db: &Arc<SegDb>) {
        if let Ok(mut d) = self.inner.dirty.lock() {
            if !d.iter().any(|x| Arc::ptr_eq(x, db)) {
                d.push(db.clone());
            }
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
            self.state
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

    pub(crate) fn request_flush(&self) {
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
pub(crate) fn run_flusher(
    store: std::sync::Weak<Inner>,
    signal: Arc<FlushSignal>,
    interval: Duration,
) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafkabox_protocol::batch::ProducerFields;

    use super::*;
    use crate::test_support::batch;
    use crate::StoreConfig;

    #[tokio::test]
    async fn group_commit_releases_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        let p = t.partitions[0].clone();
        let (b, h) = batch(1, ProducerFields::NONE);
        let mut seqs = Vec::new();
        for _ in 0..100 {
            seqs.push(s.append(&p, &b, &h).unwrap().write_seq);
        }
        for seq in seqs {
            s.wait_durable(seq).await.unwrap();
        }
    }
}
