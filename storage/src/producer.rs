//! Idempotent producer state per (partition, producer id): the epoch and the last five batches,
//! as Kafka's ProducerStateEntry keeps them (KAFKA-PROTOCOL-NOTES.md §8); and the store's
//! methods over a partition's producers (listing, counting, expiring idle ones).

use crate::keys::producer_key;
use crate::{Partition, Store, StoreError};

/// Kafka keeps the metadata of this many recent batches per producer and partition.
pub const RETAINED_BATCHES: usize = 5;

/// A batch remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset_delta: i32,
}

/// State of one producer on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Wall-clock time of the last append (ms since the epoch); drives expiry
    /// (`producer.id.expiration.ms`).
    pub last_append_ms: i64,
    /// Oldest first.
    pub batches: Vec<BatchMeta>,
    /// The first offset of the producer's open transaction on this partition (set by its
    /// first transactional batch, cleared by the transaction's marker).
    pub txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker written for this producer.
    pub coordinator_epoch: i32,
}

/// What a partition remembers of one producer (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence number of the last record appended, or -1.
    pub last_sequence: i32,
    /// When it last appended (ms since the epoch).
    pub last_append_ms: i64,
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction on the partition.
    pub txn_first_offset: Option<i64>,
}

/// Outcome of checking an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it.
    Append,
    /// A retry of a batch already stored: answer with its original base offset.
    Duplicate { base_offset: i64 },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    OutOfOrder { expected: i32, got: i32 },
    /// INVALID_PRODUCER_EPOCH (47).
    StaleEpoch { current: i16, got: i16 },
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerEntry {
    /// Applies Kafka's sequence rules to a batch `(epoch, first_seq, last_seq)`.
    pub fn check(
        entry: Option<&ProducerEntry>,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> SeqCheck {
        let Some(e) = entry else {
            // No state: Kafka accepts any sequence.
            return SeqCheck::Append;
        };
        if epoch < e.epoch {
            return SeqCheck::StaleEpoch {
                current: e.epoch,
                got: epoch,
            };
        }
        if epoch > e.epoch {
            return if first_seq == 0 {
                SeqCheck::Append
            } else {
                SeqCheck::OutOfOrder {
                    expected: 0,
                    got: first_seq,
                }
            };
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SeqCheck::Duplicate {
                base_offset: b.base_offset,
            };
        }
        match e.batches.last() {
            Some(last) if first_seq != next_seq(last.last_seq) => SeqCheck::OutOfOrder {
                expected: next_seq(last.last_seq),
                got: first_seq,
            },
            _ => SeqCheck::Append,
        }
    }

    /// Records an appended batch, appended at `now_ms`.
    pub fn record(&mut self, epoch: i16, meta: BatchMeta, now_ms: i64) {
        self.last_append_ms = now_ms;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == RETAINED_BATCHES {
            self.batches.remove(0);
        }
        self.batches.push(meta);
    }

    /// Serialised form: epoch (2), last append time (8), count (1), then 20 bytes per batch,
    /// then the open transaction's first offset (8, -1 for none) and the coordinator epoch (4)
    /// (data dirs from before transactions lack those 12 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23 + 20 * self.batches.len());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.last_append_ms.to_be_bytes());
        out.push(self.batches.len() as u8);
        for b in &self.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset_delta.to_be_bytes());
        }
        out.extend_from_slice(&self.txn_first_offset.unwrap_or(-1).to_be_bytes());
        out.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Option<ProducerEntry> {
        let epoch = i16::from_be_bytes([*buf.first()?, *buf.get(1)?]);
        let last_append_ms = i64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
        let n = *buf.get(10)? as usize;
        if n > RETAINED_BATCHES {
            return None;
        }
        let batches_end = 11 + 20 * n;
        let (txn_first_offset, coordinator_epoch) = match buf.get(batches_end..)?.len() {
            0 => (None, 0),
            12 => {
                let first = i64::from_be_bytes(buf[batches_end..batches_end + 8].try_into().ok()?);
                let epoch = i32::from_be_bytes(buf[batches_end + 8..].try_into().ok()?);
                ((first >= 0).then_some(first), epoch)
            }
            _ => return None,
        };
        let mut batches = Vec::with_capacity(n);
        for chunk in buf[11..batches_end].chunks_exact(20) {
            let i32_at =
                |i: usize| i32::from_be_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
            let mut off = [0u8; 8];
            off.copy_from_slice(&chunk[8..16]);
            batches.push(BatchMeta {
                first_seq: i32_at(0),
                last_seq: i32_at(4),
                base_offset: i64::from_be_bytes(off),
                last_offset_delta: i32_at(16),
            });
        }
        Some(ProducerEntry {
            epoch,
            last_append_ms,
            batches,
            txn_first_offset,
            coordinator_epoch,
        })
    }
}

impl Store {
    /// The idempotent and transactional producers of `part`, ordered by id.
    pub fn producer_states(&self, part: &Partition) -> Vec<ProducerInfo> {
        let mut v: Vec<ProducerInfo> = match self.part_state(part) {
            Ok(st) => st
                .producers
                .iter()
                .map(|(id, e)| ProducerInfo {
                    producer_id: *id,
                    epoch: e.epoch,
                    last_sequence: e.batches.last().map(|b| b.last_seq).unwrap_or(-1),
                    last_append_ms: e.last_append_ms,
                    coordinator_epoch: e.coordinator_epoch,
                    txn_first_offset: e.txn_first_offset,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by_key(|p| p.producer_id);
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
            // Never one with an open transaction, as Kafka: its first offset holds the LSO.
            .filter(|(_, e)| e.last_append_ms < cutoff_ms && e.txn_first_offset.is_none())
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
            None => self.inner.state.apply_batch(b)?,
        }
        for id in &expired {
            st.producers.remove(id);
        }
        Ok(expired.len())
    }

    /// Number of producers with state on `part`.
    pub fn producer_count(&self, part: &Partition) -> usize {
        part.state.lock().map(|st| st.producers.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafkabox_protocol::batch::ProducerFields;

    use super::*;
    use crate::test_support::batch;
    use crate::{AppendError, StoreConfig};

    fn meta(first: i32, last: i32, off: i64) -> BatchMeta {
        BatchMeta {
            first_seq: first,
            last_seq: last,
            base_offset: off,
            last_offset_delta: last - first,
        }
    }

    #[test]
    fn sequence_rules() {
        let mut e = ProducerEntry::default();
        e.record(0, meta(0, 4, 100), 1);
        assert_eq!(ProducerEntry::check(Some(&e), 0, 5, 9), SeqCheck::Append);
        assert_eq!(
            ProducerEntry::check(Some(&e), 0, 0, 4),
            SeqCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            ProducerEntry::check(Some(&e), 0, 7, 9),
            SeqCheck::OutOfOrder {
                expected: 5,
                got: 7
            }
        );
        assert_eq!(ProducerEntry::check(Some(&e), 1, 0, 3), SeqCheck::Append);
        assert_eq!(
            ProducerEntry::check(Some(&e), 1, 3, 3),
            SeqCheck::OutOfOrder {
                expected: 0,
                got: 3
            }
        );
        e.record(2, meta(0, 0, 200), 2);
        assert_eq!(
            ProducerEntry::check(Some(&e), 1, 1, 1),
            SeqCheck::StaleEpoch { current: 2, got: 1 }
        );
        assert_eq!(ProducerEntry::check(None, 0, 42, 50), SeqCheck::Append);
    }

    #[test]
    fn keeps_five_and_round_trips() {
        let mut e = ProducerEntry::default();
        for i in 0..8 {
            e.record(0, meta(i, i, i64::from(i)), 77);
        }
        assert_eq!(e.batches.len(), RETAINED_BATCHES);
        assert_eq!(e.batches[0].first_seq, 3);
        assert_eq!(ProducerEntry::decode(&e.encode()), Some(e.clone()));
        assert_eq!(ProducerEntry::decode(&[0, 0, 9]), None);
        assert_eq!(
            ProducerEntry::decode(&e.encode()).unwrap().last_append_ms,
            77
        );
    }

    #[test]
    fn sequence_wraps() {
        let mut e = ProducerEntry::default();
        e.record(0, meta(i32::MAX - 1, i32::MAX, 0), 1);
        assert_eq!(ProducerEntry::check(Some(&e), 0, 0, 3), SeqCheck::Append);
    }

    #[tokio::test]
    async fn idempotent_duplicates_and_gaps_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let pid;
        {
            let s = Store::open(cfg.clone()).unwrap();
            pid = s.new_producer_id(b"User:ANONYMOUS").unwrap();
            let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
            let p = &t.partitions[0];
            let (b, h) = batch(
                5,
                ProducerFields {
                    producer_id: pid,
                    producer_epoch: 0,
                    base_sequence: 0,
                },
            );
            assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 0);
            let dup = s.append(p, &b, &h).unwrap();
            assert!(dup.duplicate);
            assert_eq!(dup.base_offset, 0);
            let (b, h) = batch(
                1,
                ProducerFields {
                    producer_id: pid,
                    producer_epoch: 0,
                    base_sequence: 7,
                },
            );
            assert!(matches!(
                s.append(p, &b, &h),
                Err(AppendError::OutOfOrderSequence {
                    expected: 5,
                    got: 7
                })
            ));
            // An id whose sequence number was never handed out (the store checks only that;
            // whether an id belongs to the principal using it is `producer_id_owned_by`, which
            // the broker asks before appending).
            let (b, h) = batch(
                1,
                ProducerFields {
                    producer_id: pid + (1 << 40),
                    producer_epoch: 0,
                    base_sequence: 0,
                },
            );
            assert!(matches!(
                s.append(p, &b, &h),
                Err(AppendError::UnknownProducerId(_))
            ));
            s.close().unwrap();
        }
        let s = Store::open(cfg).unwrap();
        let t = s.topic("t").unwrap();
        let p = &t.partitions[0];
        let (b, h) = batch(
            5,
            ProducerFields {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: 0,
            },
        );
        let dup = s.append(p, &b, &h).unwrap();
        assert!(dup.duplicate, "producer state must survive a restart");
        let (b, h) = batch(
            2,
            ProducerFields {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: 5,
            },
        );
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 5);
        assert!(s.new_producer_id(b"User:ANONYMOUS").unwrap() > pid);
    }

    #[tokio::test]
    async fn idle_producers_expire_and_stay_expired_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        {
            let s = Store::open(cfg.clone()).unwrap();
            let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
            let p = &t.partitions[0];
            for _ in 0..3 {
                let pid = s.new_producer_id(b"User:ANONYMOUS").unwrap();
                let (b, h) = batch(
                    1,
                    ProducerFields {
                        producer_id: pid,
                        producer_epoch: 0,
                        base_sequence: 0,
                    },
                );
                s.append(p, &b, &h).unwrap();
            }
            assert_eq!(s.producer_count(p), 3);
            assert_eq!(
                s.expire_producers(p, 0).unwrap(),
                0,
                "nothing is older than the epoch"
            );
            assert_eq!(s.expire_producers(p, i64::MAX).unwrap(), 3);
            assert_eq!(s.producer_count(p), 0);
            s.close().unwrap();
        }
        let s = Store::open(cfg).unwrap();
        let t = s.topic("t").unwrap();
        assert_eq!(s.producer_count(&t.partitions[0]), 0, "expiry is persisted");
    }
}
