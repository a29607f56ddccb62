//! Idempotent producer state per (partition, producer id): the epoch and the last five batches,
//! as Kafka's ProducerStateEntry keeps them (KAFKA-PROTOCOL-NOTES.md §8).

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

    /// Serialised form: epoch (2), last append time (8), count (1), then 20 bytes per batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + 20 * self.batches.len());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.last_append_ms.to_be_bytes());
        out.push(self.batches.len() as u8);
        for b in &self.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset_delta.to_be_bytes());
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Option<ProducerEntry> {
        let epoch = i16::from_be_bytes([*buf.first()?, *buf.get(1)?]);
        let last_append_ms = i64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
        let n = *buf.get(10)? as usize;
        if n > RETAINED_BATCHES || buf.len() != 11 + 20 * n {
            return None;
        }
        let mut batches = Vec::with_capacity(n);
        for chunk in buf[11..].chunks_exact(20) {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
