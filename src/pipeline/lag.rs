//! [`Lag`]: how far each stage is behind on each partition it handles (the partition's last
//! stable offset minus the stage's next offset, read when asked: stages read committed records
//! only, so an open transaction's records are not behind them yet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use kafkabox_storage::{Partition, Store};

/// (stage name, topic, partition).
type LagKey = (String, String, i32);

/// Lag of every partition the pipelines handle: last stable offset minus the next offset to
/// handle.
#[derive(Debug, Default, Clone)]
pub struct Lag {
    inner: Arc<Mutex<HashMap<LagKey, Arc<LagSlot>>>>,
}

/// A worker's position; its lag is the partition's last stable offset minus it, read when
/// asked, so it grows with every append even while the worker is stuck in a handler.
#[derive(Debug)]
pub(super) struct LagSlot {
    pub(super) next: AtomicI64,
    part: Arc<Partition>,
    store: Store,
}

impl LagSlot {
    fn lag(&self) -> i64 {
        let end = self.store.offsets(&self.part).log_end;
        let stable = self
            .store
            .last_stable_offset(&self.part)
            .unwrap_or(end)
            .min(end);
        (stable - self.next.load(Ordering::SeqCst)).max(0)
    }
}

impl Lag {
    pub(super) fn slot(&self, handler: &str, part: &Arc<Partition>, store: &Store) -> Arc<LagSlot> {
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
    pub(super) fn remove(&self, handler: &str, part: &Partition) {
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
