//! One transactional id as a state machine (Kafka's TransactionMetadata), time passed in: the
//! producer id and epoch it hands out, the transaction's partitions and offsets, and the
//! checks of each request against its state. The coordinator (`super`) persists the result
//! of each transition before it answers and writes the markers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};

/// Kafka keeps the epoch below `i16::MAX - 1`: past it the producer id is replaced (one more
/// epoch stays free for fencing).
pub const MAX_EPOCH: i16 = i16::MAX - 1;

/// The states of a transactional id, by Kafka's names (DescribeTransactions, ListTransactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Every name, for ListTransactions' state filter.
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    fn completed(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// An offset a transaction commits for a group when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub producer_id: i64,
    /// The producer id before the last rotation (a retry after it is recognised).
    pub prev_producer_id: i64,
    pub epoch: i16,
    /// The epoch before the last bump by the same producer (KIP-360), or -1.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the open (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits (AddOffsetsToTxn), with the offsets sent
    /// so far (TxnOffsetCommit), visible only once it commits.
    pub offsets: BTreeMap<String, Vec<PendingOffset>>,
    /// When the current (or last) transaction started, ms since the epoch; -1: never.
    pub start_ms: i64,
    pub updated_ms: i64,
    /// The principal the producer id was issued to.
    pub owner: String,
}

/// What an InitProducerId does to a transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Bump the epoch to this one (or keep it, for a retry).
    Epoch(i16),
    /// A new producer id, epoch 0: the epoch is exhausted, or another principal asks.
    Rotate,
    /// The open transaction must be aborted first (fenced with epoch + 1).
    AbortFirst,
}

impl TxnMeta {
    pub fn new(producer_id: i64, timeout_ms: i32, owner: &str, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            prev_producer_id: -1,
            epoch: -1,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            offsets: BTreeMap::new(),
            start_ms: -1,
            updated_ms: now_ms,
            owner: owner.to_string(),
        }
    }

    /// What InitProducerId asks of this id (Kafka's `prepareInitProducerIdTransit`):
    /// `expected` is the (producer id, epoch) a producer recovering under KIP-360 passes.
    pub fn init(&self, expected: Option<(i64, i16)>, owner: &str) -> Result<Init> {
        if let Some((pid, epoch)) = expected {
            let valid = self.epoch == -1
                || pid == self.producer_id
                || (pid == self.prev_producer_id && epoch >= MAX_EPOCH);
            if !valid {
                return Err(Error::ProducerFenced(format!(
                    "producer id {pid} with epoch {epoch} is not the current producer of this transactional id ({} epoch {})",
                    self.producer_id, self.epoch
                )));
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(Error::ConcurrentTransactions(
                    "the transaction is being completed; retry".into(),
                ))
            }
            TxnState::Ongoing => return Ok(Init::AbortFirst),
            _ => {}
        }
        if owner != self.owner {
            return Ok(Init::Rotate);
        }
        let exhausted = self.epoch >= MAX_EPOCH;
        match expected {
            None if exhausted => Ok(Init::Rotate),
            None => Ok(Init::Epoch(self.epoch + 1)),
            Some((_, e)) if e == self.epoch || self.epoch == -1 => {
                if exhausted {
                    Ok(Init::Rotate)
                } else {
                    Ok(Init::Epoch(self.epoch + 1))
                }
            }
            // A retry of a bump whose answer was lost.
            Some((_, e)) if e == self.last_epoch => Ok(Init::Epoch(self.epoch)),
            Some((pid, e)) if pid == self.prev_producer_id && e >= MAX_EPOCH => {
                Ok(Init::Epoch(self.epoch))
            }
            Some((_, e)) => Err(Error::ProducerFenced(format!(
                "epoch {e} is not the current epoch {} of this transactional id",
                self.epoch
            ))),
        }
    }

    /// Applies an InitProducerId's outcome: the id is Empty with the new epoch (or producer id).
    pub fn apply_init(
        &mut self,
        how: Init,
        new_producer_id: Option<i64>,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        owner: &str,
        now_ms: i64,
    ) {
        match (how, new_producer_id) {
            (Init::Epoch(e), _) => {
                if e != self.epoch {
                    self.last_epoch = if expected.is_some() { self.epoch } else { -1 };
                }
                self.epoch = e;
            }
            (_, Some(pid)) => {
                self.prev_producer_id = self.producer_id;
                self.last_epoch = if expected.is_some() { self.epoch } else { -1 };
                self.producer_id = pid;
                self.epoch = 0;
                self.owner = owner.to_string();
            }
            (_, None) => {}
        }
        self.timeout_ms = timeout_ms;
        self.state = TxnState::Empty;
        self.partitions.clear();
        self.offsets.clear();
        self.updated_ms = now_ms;
    }

    /// The producer of a request on the transaction must be the current one (AddPartitionsToTxn,
    /// AddOffsetsToTxn, EndTxn, TxnOffsetCommit).
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<()> {
        if producer_id != self.producer_id {
            return Err(Error::InvalidProducerIdMapping(format!(
                "producer id {producer_id} is not the producer of this transactional id"
            )));
        }
        if epoch != self.epoch {
            return Err(Error::ProducerFenced(format!(
                "producer epoch {epoch} is not the current epoch {}: a newer producer with this transactional id fenced it",
                self.epoch
            )));
        }
        Ok(())
    }

    /// Whether adding `partitions` changes anything; refused while the transaction completes.
    pub fn check_add(&self) -> Result<()> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(Error::ConcurrentTransactions(
                "the previous transaction is being completed; retry".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Adds partitions (and starts a transaction when none is open).
    pub fn add_partitions(
        &mut self,
        partitions: impl IntoIterator<Item = (String, i32)>,
        now_ms: i64,
    ) {
        if self.state.completed() {
            self.state = TxnState::Ongoing;
            self.start_ms = now_ms;
            self.partitions.clear();
            self.offsets.clear();
        }
        self.partitions.extend(partitions);
        self.updated_ms = now_ms;
    }

    /// Adds a group whose offsets the transaction will commit.
    pub fn add_group(&mut self, group: &str, now_ms: i64) {
        self.add_partitions(std::iter::empty(), now_ms);
        self.offsets.entry(group.to_string()).or_default();
    }

    /// What EndTxn does (Kafka's table for the classic protocol): `Ok(true)` to complete the
    /// transaction now, `Ok(false)` for a retry of what is already done.
    pub fn end(&self, commit: bool) -> Result<bool> {
        use TxnState::*;
        match (self.state, commit) {
            (Ongoing, _) => Ok(true),
            (CompleteCommit, true) | (CompleteAbort, false) => Ok(false),
            (PrepareCommit, true) | (PrepareAbort, false) => Err(Error::ConcurrentTransactions(
                "the transaction is being completed; retry".into(),
            )),
            (state, _) => Err(Error::InvalidTxnState(format!(
                "cannot {} a transaction in state {}",
                if commit { "commit" } else { "abort" },
                state.name()
            ))),
        }
    }

    /// Moves to PrepareCommit or PrepareAbort.
    pub fn prepare(&mut self, commit: bool, now_ms: i64) {
        self.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.updated_ms = now_ms;
    }

    /// Moves from a Prepare state to its Complete state (partitions and offsets done).
    pub fn complete(&mut self, now_ms: i64) {
        self.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        self.partitions.clear();
        self.offsets.clear();
        self.updated_ms = now_ms;
    }

    /// Fences the current producer and prepares to abort its transaction (a timeout, or a new
    /// instance's InitProducerId): epoch + 1, which the ABORT markers carry.
    pub fn fence(&mut self, now_ms: i64) {
        self.epoch = self.epoch.saturating_add(1);
        self.last_epoch = -1;
        self.prepare(false, now_ms);
    }

    /// Whether the open transaction has outlived its timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && self.start_ms + i64::from(self.timeout_ms) < now_ms
    }

    /// Whether the id has been idle past `expiration_ms` (only ids without a transaction).
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        self.state.completed() && self.updated_ms + expiration_ms <= now_ms
    }

    /// Whether `group` has offsets waiting on this transaction for `(topic, partition)`.
    pub fn holds_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        !self.state.completed()
            && self.offsets.get(group).is_some_and(|o| {
                o.iter()
                    .any(|p| p.topic == topic && p.partition == partition)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TxnMeta {
        TxnMeta::new(7, 60_000, "u", 0)
    }

    #[test]
    fn init_bumps_and_fences() {
        let mut m = meta();
        assert_eq!(m.init(None, "u").unwrap(), Init::Epoch(0));
        m.apply_init(Init::Epoch(0), None, None, 60_000, "u", 1);
        assert_eq!((m.epoch, m.state), (0, TxnState::Empty));
        // A second instance bumps; the first one's requests are fenced.
        assert_eq!(m.init(None, "u").unwrap(), Init::Epoch(1));
        m.apply_init(Init::Epoch(1), None, None, 60_000, "u", 2);
        assert!(matches!(
            m.check_producer(7, 0),
            Err(Error::ProducerFenced(_))
        ));
        assert!(matches!(
            m.check_producer(8, 1),
            Err(Error::InvalidProducerIdMapping(_))
        ));
        // KIP-360: the same instance bumps its own epoch, and a retry of it keeps it.
        assert_eq!(m.init(Some((7, 1)), "u").unwrap(), Init::Epoch(2));
        m.apply_init(Init::Epoch(2), None, Some((7, 1)), 60_000, "u", 3);
        assert_eq!(m.init(Some((7, 1)), "u").unwrap(), Init::Epoch(2));
        assert!(matches!(
            m.init(Some((7, 0)), "u"),
            Err(Error::ProducerFenced(_))
        ));
        assert!(matches!(
            m.init(Some((9, 2)), "u"),
            Err(Error::ProducerFenced(_))
        ));
        // An open transaction is aborted first.
        m.add_partitions([("t".to_string(), 0)], 4);
        assert_eq!(m.init(None, "u").unwrap(), Init::AbortFirst);
        m.fence(5);
        assert_eq!((m.epoch, m.state), (3, TxnState::PrepareAbort));
        assert!(matches!(
            m.init(None, "u"),
            Err(Error::ConcurrentTransactions(_))
        ));
        m.complete(6);
        assert_eq!(m.init(None, "u").unwrap(), Init::Epoch(4));
        // The epoch runs out: a new producer id.
        m.epoch = MAX_EPOCH;
        assert_eq!(m.init(None, "u").unwrap(), Init::Rotate);
        m.apply_init(Init::Rotate, Some(11), None, 60_000, "u", 7);
        assert_eq!((m.producer_id, m.epoch, m.prev_producer_id), (11, 0, 7));
        // Another principal gets its own producer id.
        assert_eq!(m.init(None, "v").unwrap(), Init::Rotate);
    }

    #[test]
    fn end_follows_kafkas_table() {
        let mut m = meta();
        m.apply_init(Init::Epoch(0), None, None, 60_000, "u", 1);
        assert!(matches!(m.end(true), Err(Error::InvalidTxnState(_))));
        m.add_partitions([("t".to_string(), 0)], 2);
        assert_eq!(m.start_ms, 2);
        assert!(m.end(true).unwrap());
        m.prepare(true, 3);
        assert!(matches!(m.end(true), Err(Error::ConcurrentTransactions(_))));
        assert!(matches!(m.end(false), Err(Error::InvalidTxnState(_))));
        assert!(matches!(
            m.check_add(),
            Err(Error::ConcurrentTransactions(_))
        ));
        m.complete(4);
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        assert!(!m.end(true).unwrap(), "a retried commit succeeds");
        assert!(matches!(m.end(false), Err(Error::InvalidTxnState(_))));
        // The next transaction starts at its first add.
        m.add_group("g", 10);
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 10));
        assert!(m.timed_out(60_011));
        assert!(!m.timed_out(60_010));
    }

    #[test]
    fn expiry_and_pending_offsets() {
        let mut m = meta();
        m.apply_init(Init::Epoch(0), None, None, 60_000, "u", 100);
        assert!(m.expired(1100, 1000));
        assert!(!m.expired(1099, 1000));
        m.add_group("g", 200);
        m.offsets.get_mut("g").unwrap().push(PendingOffset {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: None,
        });
        assert!(m.holds_offset("g", "t", 0));
        assert!(!m.holds_offset("g", "t", 1));
        assert!(
            !m.expired(i64::MAX / 2, 1000),
            "an open transaction never expires"
        );
        m.prepare(false, 300);
        m.complete(301);
        assert!(!m.holds_offset("g", "t", 0));
    }

    /// Random request orders against one transactional id (a small xorshift generator, seeded
    /// per run): whatever the order, an answered request leaves the id in a state Kafka's
    /// coordinator could be in. The producer of a successful request is the current one; the
    /// epoch never goes back for a producer id; a transaction's partitions and offsets exist
    /// only while it is open or completing; a completed commit is never answered as an abort.
    #[test]
    fn random_request_orders_keep_the_invariants() {
        for seed in 1..=200u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut m = TxnMeta::new(1, 60_000, "u", 0);
            let mut next_pid = 2;
            // What a client holds: (producer id, epoch).
            let mut client = (1i64, -1i16);
            let mut now = 0i64;
            let mut last_result: Option<bool> = None;
            for _ in 0..400 {
                now += next(5_000) as i64;
                let before = m.clone();
                match next(8) {
                    0 => {
                        let expected = (next(2) == 0 && client.1 >= 0).then_some(client);
                        let owner = if next(10) == 0 { "v" } else { "u" };
                        match m.init(expected, owner) {
                            Ok(Init::AbortFirst) => {
                                m.fence(now);
                                m.complete(now);
                                last_result = Some(false);
                            }
                            Ok(how) => {
                                let pid = (how == Init::Rotate).then(|| {
                                    next_pid += 1;
                                    next_pid
                                });
                                m.apply_init(how, pid, expected, 60_000, owner, now);
                                client = (m.producer_id, m.epoch);
                                last_result = None;
                            }
                            Err(_) => assert_eq!(m, before, "a refused init changes nothing"),
                        }
                    }
                    1 | 2 => {
                        let ok = m
                            .check_producer(client.0, client.1)
                            .and_then(|()| m.check_add());
                        if ok.is_ok() {
                            m.add_partitions([("t".to_string(), next(3) as i32)], now);
                            assert_eq!(m.state, TxnState::Ongoing);
                        }
                    }
                    3 => {
                        if m.check_producer(client.0, client.1)
                            .and_then(|()| m.check_add())
                            .is_ok()
                        {
                            m.add_group("g", now);
                        }
                    }
                    4 | 5 => {
                        let commit = next(2) == 0;
                        let answer = m
                            .check_producer(client.0, client.1)
                            .and_then(|()| m.end(commit));
                        match answer {
                            Ok(true) => {
                                m.prepare(commit, now);
                                m.complete(now);
                                last_result = Some(commit);
                            }
                            Ok(false) => assert_eq!(
                                last_result,
                                Some(commit),
                                "a retried EndTxn succeeds only with the same result"
                            ),
                            Err(_) => {}
                        }
                    }
                    6 => {
                        if m.timed_out(now) {
                            m.fence(now);
                            m.complete(now);
                            last_result = Some(false);
                        }
                    }
                    _ => {
                        // A fenced client keeps using its old epoch.
                        if next(2) == 0 {
                            client.1 = client.1.saturating_sub(1);
                        }
                    }
                }
                if m.producer_id == before.producer_id {
                    assert!(
                        m.epoch >= before.epoch,
                        "the epoch went back: {before:?} -> {m:?}"
                    );
                }
                match m.state {
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        assert!(m.start_ms >= 0)
                    }
                    _ => assert!(
                        m.partitions.is_empty() && m.offsets.is_empty(),
                        "a completed transaction holds nothing: {m:?}"
                    ),
                }
                assert!(m.epoch >= -1);
            }
        }
    }
}
