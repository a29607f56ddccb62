//! The transaction coordinator (Kafka's TransactionCoordinator for a single node): one
//! [`TxnMeta`] per transactional id, each transition durable before it is answered, the
//! COMMIT/ABORT markers written to every partition of a transaction (and its offsets to their
//! groups) before the transaction is complete. Blocking: the Kafka API calls it from its
//! blocking-pool threads.
//!
//! A transaction is ended in one go: EndTxn writes PrepareCommit (or PrepareAbort), the markers,
//! the group offsets, then CompleteCommit, and answers; a request on the same transactional id
//! meanwhile waits for it. After a crash, a prepared transaction is finished when the store
//! opens; an open one is aborted once its `transaction.timeout.ms` has passed, by the sweep
//! (`transaction.abort.timed.out.transaction.cleanup.interval.ms`), which also forgets idle
//! transactional ids (`transactional.id.expiration.ms`).

pub mod txn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kafkabox_protocol::batch::Marker;
use kafkabox_storage::{AppendError, Store};

use super::error::{Error, Result};
use super::groups::{Committer, Coordinator, OffsetToCommit, PartitionResult};
use super::now_ms;
use crate::config::Config;
pub use txn::{Init, PendingOffset, TxnMeta, TxnState};

/// Where a transactional id's record is kept in the store's appliance state.
const KEY_PREFIX: &[u8] = b"txn/";

/// At most this many transactional ids are listed or loaded at once.
const MAX_IDS: usize = 1_000_000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TxnCounts {
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    /// Transactions aborted because they outlived their timeout.
    pub timeouts: AtomicU64,
    /// Producers fenced by a newer instance of their transactional id.
    pub fenced: AtomicU64,
}

/// A transactional id as DescribeTransactions, ListTransactions and the HTTP API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

/// The transaction coordinator.
#[derive(Debug)]
pub struct Transactions {
    store: Store,
    config: Arc<Config>,
    groups: Arc<Coordinator>,
    ids: Mutex<HashMap<String, Arc<Mutex<TxnMeta>>>>,
    pub counts: TxnCounts,
}

fn key(id: &str) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn poisoned() -> Error {
    Error::CoordinatorNotAvailable("transaction coordinator state poisoned".into())
}

impl Transactions {
    /// Loads every transactional id and finishes the transactions a crash left prepared
    /// (blocking; call it where the runtime may be blocked on: it waits for the flusher).
    pub fn open(
        store: Store,
        config: Arc<Config>,
        groups: Arc<Coordinator>,
    ) -> Result<Transactions> {
        let mut ids = HashMap::new();
        let mut after = KEY_PREFIX.to_vec();
        loop {
            let page = store.state_after(KEY_PREFIX, &after, 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (k, v) in &page {
                let id = String::from_utf8_lossy(&k[KEY_PREFIX.len()..]).into_owned();
                match serde_json::from_slice::<TxnMeta>(v) {
                    Ok(m) => {
                        ids.insert(id, Arc::new(Mutex::new(m)));
                    }
                    Err(e) => {
                        tracing::error!(transactional_id = %id, error = %e, "a stored transaction record does not decode; it is ignored");
                    }
                }
            }
            if ids.len() >= MAX_IDS {
                break;
            }
        }
        let t = Transactions {
            store,
            config,
            groups,
            ids: Mutex::new(ids),
            counts: TxnCounts::default(),
        };
        for (id, meta) in t.all() {
            let mut m = meta.lock().map_err(|_| poisoned())?;
            if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                tracing::info!(transactional_id = %id, state = m.state.name(), "finishing a transaction prepared before the restart");
                if let Err(e) = t.finish(&id, &mut m) {
                    tracing::error!(transactional_id = %id, error = %e, "cannot finish a prepared transaction; the sweep retries");
                }
            }
        }
        Ok(t)
    }

    fn all(&self) -> Vec<(String, Arc<Mutex<TxnMeta>>)> {
        match self.ids.lock() {
            Ok(ids) => ids.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Mutex<TxnMeta>>> {
        self.ids
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidProducerIdMapping(format!(
                    "transactional id '{id}' has no producer: InitProducerId first"
                ))
            })
    }

    fn lock(meta: &Mutex<TxnMeta>) -> Result<MutexGuard<'_, TxnMeta>> {
        meta.lock().map_err(|_| poisoned())
    }

    /// Waits for the store's write `seq` (blocking).
    fn durable(&self, seq: u64) -> Result<()> {
        let store = self.store.clone();
        let wait = async move { store.wait_durable(seq).await };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(wait)?,
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| Error::Internal(e.to_string()))?
                .block_on(wait)?,
        }
        Ok(())
    }

    /// Stores `m` as `id`'s record, durably.
    fn persist(&self, id: &str, m: &TxnMeta) -> Result<()> {
        let v = serde_json::to_vec(m).map_err(|e| Error::Internal(e.to_string()))?;
        let seq = self.store.put_state(&[(key(id), v)])?;
        self.durable(seq)
    }

    /// InitProducerId with a transactional id: the producer id and epoch of its new (or
    /// recovering, KIP-360: `expected`) instance. An open transaction of the previous instance
    /// is aborted first, under an epoch that fences it.
    pub fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        owner: &str,
    ) -> Result<(i64, i16)> {
        if id.is_empty() {
            return Err(Error::InvalidRequest(
                "the transactional id is empty".into(),
            ));
        }
        if timeout_ms <= 0 || timeout_ms > self.config.transaction_max_timeout_ms {
            return Err(Error::InvalidTransactionTimeout(format!(
                "transaction.timeout.ms {timeout_ms} is not within 1..={} (transaction.max.timeout.ms)",
                self.config.transaction_max_timeout_ms
            )));
        }
        let meta = {
            let mut ids = self.ids.lock().map_err(|_| poisoned())?;
            match ids.get(id) {
                Some(m) => m.clone(),
                None => {
                    if ids.len() >= MAX_IDS {
                        return Err(Error::PolicyViolation(format!(
                            "this broker holds {MAX_IDS} transactional ids already"
                        )));
                    }
                    let pid = self.store.new_producer_id(owner.as_bytes())?;
                    let m = Arc::new(Mutex::new(TxnMeta::new(pid, timeout_ms, owner, now_ms())));
                    ids.insert(id.to_string(), m.clone());
                    m
                }
            }
        };
        let mut m = Self::lock(&meta)?;
        let mut how = m.init(expected, owner)?;
        if how == Init::AbortFirst {
            m.fence(now_ms());
            self.counts.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(transactional_id = %id, producer_id = m.producer_id, "a new producer instance fences the previous one: its open transaction is aborted");
            self.persist(id, &m)?;
            self.finish(id, &mut m)?;
            how = m.init(expected, owner)?;
        }
        let new_pid = match how {
            Init::Rotate => Some(self.store.new_producer_id(owner.as_bytes())?),
            _ => None,
        };
        let before = m.clone();
        m.apply_init(how, new_pid, expected, timeout_ms, owner, now_ms());
        if let Err(e) = self.persist(id, &m) {
            *m = before;
            return Err(e);
        }
        Ok((m.producer_id, m.epoch))
    }

    /// AddPartitionsToTxn: `partitions` join the transaction (which starts if none is open).
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<()> {
        let meta = self.get(id)?;
        let mut m = Self::lock(&meta)?;
        m.check_producer(producer_id, epoch)?;
        m.check_add()?;
        if m.state == TxnState::Ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
            return Ok(());
        }
        let before = m.clone();
        m.add_partitions(partitions.iter().cloned(), now_ms());
        if let Err(e) = self.persist(id, &m) {
            *m = before;
            return Err(e);
        }
        Ok(())
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890): whether each of `partitions` is in the
    /// open transaction of `id`, nothing added; the producer checked as for an add, and a
    /// transaction being completed answered `CONCURRENT_TRANSACTIONS`.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>> {
        let meta = self.get(id)?;
        let m = Self::lock(&meta)?;
        m.check_producer(producer_id, epoch)?;
        m.check_add()?;
        Ok(partitions
            .iter()
            .map(|p| m.partitions.contains(p))
            .collect())
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    pub fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<()> {
        let meta = self.get(id)?;
        let mut m = Self::lock(&meta)?;
        m.check_producer(producer_id, epoch)?;
        m.check_add()?;
        if m.state == TxnState::Ongoing && m.offsets.contains_key(group) {
            return Ok(());
        }
        let before = m.clone();
        m.add_group(group, now_ms());
        if let Err(e) = self.persist(id, &m) {
            *m = before;
            return Err(e);
        }
        Ok(())
    }

    /// TxnOffsetCommit: offsets of `group` that become its committed offsets when the
    /// transaction commits (the committer checked as OffsetCommit checks it).
    pub fn commit_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        who: &Committer,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Vec<PartitionResult>> {
        let meta = self.get(id)?;
        let mut m = Self::lock(&meta)?;
        if producer_id != m.producer_id {
            return Err(Error::InvalidProducerIdMapping(format!(
                "producer id {producer_id} is not the producer of transactional id '{id}'"
            )));
        }
        if epoch != m.epoch {
            return Err(Error::InvalidProducerEpoch(format!(
                "producer epoch {epoch} is not the current epoch {}",
                m.epoch
            )));
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(Error::ConcurrentTransactions(
                    "the transaction is being completed; retry".into(),
                ))
            }
            TxnState::Ongoing if m.offsets.contains_key(group) => {}
            _ => {
                return Err(Error::InvalidTxnState(format!(
                    "group '{group}' was not added to the transaction (AddOffsetsToTxn)"
                )))
            }
        }
        let results = self.groups.check_txn_offsets(group, who, &offsets)?;
        let before = m.clone();
        let pending = m.offsets.entry(group.to_string()).or_default();
        for o in offsets {
            let ok = results
                .iter()
                .any(|(t, p, r)| *t == o.topic && *p == o.partition && r.is_ok());
            if !ok {
                continue;
            }
            pending.retain(|p| !(p.topic == o.topic && p.partition == o.partition));
            pending.push(PendingOffset {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata,
            });
        }
        m.updated_ms = now_ms();
        if let Err(e) = self.persist(id, &m) {
            *m = before;
            return Err(e);
        }
        Ok(results)
    }

    /// EndTxn: commits or aborts the open transaction (markers on every partition, the group
    /// offsets on commit), durably, before it returns.
    pub fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        let meta = self.get(id)?;
        let mut m = Self::lock(&meta)?;
        m.check_producer(producer_id, epoch)?;
        if !m.end(commit)? {
            return Ok(());
        }
        let before = m.clone();
        m.prepare(commit, now_ms());
        if let Err(e) = self.persist(id, &m) {
            *m = before;
            return Err(e);
        }
        self.finish(id, &mut m)
    }

    /// Writes the markers of a prepared transaction, its offsets when it commits (both durable
    /// before it returns), and completes it.
    fn finish(&self, id: &str, m: &mut TxnMeta) -> Result<()> {
        let commit = m.state == TxnState::PrepareCommit;
        let marker = if commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut last_seq = 0;
        for (topic, index) in &m.partitions {
            let Some(part) = self
                .store
                .topic(topic)
                .and_then(|t| t.partition(*index).cloned())
            else {
                // Deleted since it was added: nothing there to end.
                continue;
            };
            match self
                .store
                .append_marker(&part, m.producer_id, m.epoch, 0, marker)
            {
                Ok(a) => last_seq = last_seq.max(a.write_seq),
                Err(AppendError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    // A newer epoch already wrote there (cannot happen while this coordinator
                    // hands out the epochs); the partition's transaction is over either way.
                    tracing::warn!(transactional_id = %id, topic = %topic, partition = index, error = %e, "transaction marker refused");
                }
            }
        }
        if commit {
            for (group, offsets) in &m.offsets {
                let offsets: Vec<OffsetToCommit> = offsets
                    .iter()
                    .map(|p| OffsetToCommit {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata: p.metadata.clone(),
                    })
                    .collect();
                if offsets.is_empty() {
                    continue;
                }
                if let Some(seq) = self.groups.commit_txn_offsets(group, offsets)? {
                    last_seq = last_seq.max(seq);
                }
            }
        }
        // One wait for the markers and the offsets together.
        if last_seq > 0 {
            self.durable(last_seq)?;
        }
        // Complete need not be durable before the answer: were it lost, the prepared
        // transaction is finished again at start (the same markers and offsets once more,
        // which readers and OffsetFetch take as they are), and the next write of this id
        // waits for it anyway.
        m.complete(now_ms());
        let v = serde_json::to_vec(&*m).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_state(&[(key(id), v)])?;
        if commit {
            self.counts.commits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counts.aborts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs `append` if a transactional batch of `producer_id` at `epoch` may go to
    /// `topic`-`partition` now (the partition added to the open transaction of `id`), holding
    /// the transaction so it cannot end meanwhile.
    pub fn produce<T>(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
        append: impl FnOnce() -> T,
    ) -> Result<T> {
        let meta = self.get(id)?;
        let m = Self::lock(&meta)?;
        if producer_id != m.producer_id {
            return Err(Error::InvalidProducerIdMapping(format!(
                "producer id {producer_id} is not the producer of transactional id '{id}'"
            )));
        }
        if epoch != m.epoch {
            return Err(Error::InvalidProducerEpoch(format!(
                "producer epoch {epoch} is not the current epoch {} of transactional id '{id}'",
                m.epoch
            )));
        }
        match m.state {
            TxnState::Ongoing if m.partitions.contains(&(topic.to_string(), partition)) => {
                Ok(append())
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(Error::NotEnoughReplicas(
                "the transaction is being completed".into(),
            )),
            _ => Err(Error::InvalidTxnState(format!(
                "Partition {topic}-{partition} was not added to the transaction"
            ))),
        }
    }

    /// Whether a transaction holds offsets of `group` on `topic`-`partition` that it has not
    /// committed yet (OffsetFetch's `require_stable`).
    pub fn holds_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.all().iter().any(|(_, meta)| {
            meta.try_lock()
                .map(|m| m.holds_offset(group, topic, partition))
                // Being completed right now: unstable until it is done.
                .unwrap_or(true)
        })
    }

    /// One transactional id (DescribeTransactions).
    pub fn describe(&self, id: &str) -> Result<TxnView> {
        let meta = self
            .ids
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Error::TransactionalIdNotFound(format!("transactional id '{id}' is not known"))
            })?;
        let m = Self::lock(&meta)?.clone();
        Ok(TxnView {
            transactional_id: id.to_string(),
            meta: m,
        })
    }

    /// Every transactional id, by id (ListTransactions, `/api/transactions`).
    pub fn list(&self) -> Vec<TxnView> {
        let mut v: Vec<TxnView> = self
            .all()
            .into_iter()
            .filter_map(|(id, meta)| {
                let m = meta.lock().ok()?.clone();
                Some(TxnView {
                    transactional_id: id,
                    meta: m,
                })
            })
            .collect();
        v.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        v
    }

    /// Open transactions now.
    pub fn open_count(&self) -> usize {
        self.all()
            .iter()
            .filter(|(_, m)| {
                m.try_lock()
                    .map(|m| m.state == TxnState::Ongoing)
                    .unwrap_or(true)
            })
            .count()
    }

    /// Aborts the transactions past their timeout and finishes prepared ones (blocking).
    /// Returns the number aborted for their timeout.
    pub fn abort_timed_out(&self) -> usize {
        let now = now_ms();
        let mut aborted = 0;
        for (id, meta) in self.all() {
            let Ok(mut m) = meta.try_lock() else { continue };
            let result = if m.timed_out(now) {
                tracing::warn!(transactional_id = %id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "aborting a transaction open longer than its transaction.timeout.ms; its producer is fenced");
                m.fence(now);
                aborted += 1;
                self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                self.persist(&id, &m)
                    .and_then(|()| self.finish(&id, &mut m))
            } else if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                self.finish(&id, &mut m)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::error!(transactional_id = %id, error = %e, "cannot complete a transaction; retrying at the next sweep");
            }
        }
        aborted
    }

    /// Forgets transactional ids idle past `transactional.id.expiration.ms` (blocking).
    pub fn remove_expired(&self) -> Result<usize> {
        let now = now_ms();
        let expiration = self.config.transactional_id_expiration_ms;
        let mut ids = self.ids.lock().map_err(|_| poisoned())?;
        let expired: Vec<String> = ids
            .iter()
            .filter(|(_, m)| m.try_lock().is_ok_and(|m| m.expired(now, expiration)))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let keys: Vec<Vec<u8>> = expired.iter().map(|id| key(id)).collect();
        let seq = self.store.remove_state(&keys)?;
        for id in &expired {
            ids.remove(id);
        }
        drop(ids);
        self.durable(seq)?;
        Ok(expired.len())
    }
}
