//! Partitions under transactions: the COMMIT and ABORT markers that end a producer's
//! transaction on a partition, the last stable offset (the first offset of the oldest open
//! transaction), the aborted transaction index (Kafka's `.txnindex`: one entry per ABORT
//! marker, in the marker's segment) and read_committed reads, which stop at the last stable
//! offset and name the aborted transactions of what they return.

use bytes::BytesMut;
use kafkabox_protocol::batch::{self, Marker};

use crate::keys::{aborted_key, aborted_prefix, producer_key, read_u64};
use crate::log::last_stable;
use crate::producer::ProducerEntry;
use crate::{now_ms, AppendError, Appended, Offsets, Partition, Store, StoreError};

/// An aborted transaction on a partition, as a read_committed fetch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
}

/// What a read_committed read returned besides the batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRead {
    pub offsets: Offsets,
    pub last_stable: i64,
    /// The aborted transactions with records in the returned range, by first offset.
    pub aborted: Vec<AbortedTxn>,
}

impl Store {
    /// The last stable offset of `part` (its high watermark when no transaction is open).
    pub fn last_stable_offset(&self, part: &Partition) -> Result<i64, StoreError> {
        let st = self.part_state(part)?;
        Ok(last_stable(part, &st))
    }

    /// The open transactions of `part`: (producer id, first offset), oldest first.
    pub fn open_transactions(&self, part: &Partition) -> Vec<(i64, i64)> {
        match self.part_state(part) {
            Ok(st) => st.ongoing.iter().map(|(first, id)| (*id, *first)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Appends the marker that ends producer `producer_id`'s transaction on `part` (Kafka's
    /// `appendEndTxnMarker`): refused for an older producer epoch or coordinator epoch;
    /// written also when the producer wrote nothing to the partition. An ABORT of records on
    /// the partition gets its aborted index entry in the same write.
    pub fn append_marker(
        &self,
        part: &Partition,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        marker: Marker,
    ) -> Result<Appended, AppendError> {
        let mut st = self.part_state(part)?;
        let mut entry = match st.producers.get(&producer_id) {
            Some(e) => {
                if producer_epoch < e.epoch {
                    return Err(AppendError::InvalidProducerEpoch {
                        current: e.epoch,
                        got: producer_epoch,
                    });
                }
                if coordinator_epoch < e.coordinator_epoch {
                    return Err(AppendError::CoordinatorFenced {
                        current: e.coordinator_epoch,
                        got: coordinator_epoch,
                    });
                }
                e.clone()
            }
            None => ProducerEntry {
                epoch: producer_epoch,
                ..ProducerEntry::default()
            },
        };
        let now = now_ms();
        let bytes =
            batch::encode_marker(marker, producer_id, producer_epoch, coordinator_epoch, now);
        let h = batch::parse_header(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("transaction marker: {e}")))?;
        let offset = st.next_offset;
        if producer_epoch != entry.epoch {
            entry.epoch = producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_append_ms = now;
        let first = entry.txn_first_offset.take();
        let mut extra = vec![(producer_key(part.id, producer_id).to_vec(), entry.encode())];
        let aborted = marker == Marker::Abort && first.is_some();
        if let (true, Some(first)) = (aborted, first) {
            // Kafka's index entry also keeps the last stable offset once this one is gone:
            // a fetch that ends below it needs no later entry.
            let lso = st
                .ongoing
                .iter()
                .find(|(_, id)| *id != producer_id)
                .map(|(f, _)| *f)
                .unwrap_or(offset + 1);
            let mut v = Vec::with_capacity(24);
            v.extend_from_slice(&producer_id.to_be_bytes());
            v.extend_from_slice(&first.to_be_bytes());
            v.extend_from_slice(&lso.to_be_bytes());
            extra.push((aborted_key(part.id, offset).to_vec(), v));
        }
        self.write_batch(part, &mut st, &bytes, &h, &extra)?;
        if aborted {
            if let Some(seg) = st.segments.last() {
                let mut s = seg.summary();
                s.aborted += 1;
                seg.set_summary(s);
            }
        }
        if let Some(first) = first {
            st.ongoing.remove(&(first, producer_id));
        }
        st.producers.insert(producer_id, entry);
        Ok(self.appended(st, offset, &h))
    }

    /// The aborted transactions of `part` with records in `from..upto`, by first offset
    /// (Kafka's `collectAbortedTxns`: the index of the segment holding `from` and of later
    /// ones, until an entry's last stable offset shows that no later one can start below
    /// `upto`). Segments without entries are not opened.
    pub fn aborted_transactions(
        &self,
        part: &Partition,
        from: i64,
        upto: i64,
    ) -> Result<Vec<AbortedTxn>, StoreError> {
        let (_, segments) = self.segments_from(part, Some(from))?;
        let mut out = Vec::new();
        'segments: for seg in segments {
            if seg.is_legacy() || seg.summary().aborted == 0 {
                continue;
            }
            let db = self.inner.open_segments.get(&seg)?;
            let end = aborted_key(part.id, i64::MAX);
            for item in db.log.range(aborted_key(part.id, from)..=end) {
                let (k, v) = item?;
                if !k.starts_with(&aborted_prefix(part.id)) || v.len() != 24 {
                    return Err(StoreError::Corrupt(format!(
                        "aborted transaction entry of {} bytes",
                        v.len()
                    )));
                }
                let txn = AbortedTxn {
                    producer_id: read_u64(&v[..8])? as i64,
                    first_offset: read_u64(&v[8..16])? as i64,
                    last_offset: read_u64(&k[12..])? as i64,
                };
                let lso = read_u64(&v[16..])? as i64;
                if txn.first_offset < upto {
                    out.push(txn);
                }
                if lso >= upto {
                    break 'segments;
                }
            }
        }
        out.sort_by_key(|t| (t.first_offset, t.producer_id));
        Ok(out)
    }

    /// [`Store::read`] for a read_committed consumer: whole batches from the one holding
    /// `offset`, up to the last stable offset, with the aborted transactions of the range.
    /// `None` when `offset` is outside the log.
    pub fn read_committed(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
    ) -> Result<Option<CommittedRead>, StoreError> {
        let lso = {
            let st = self.part_state(part)?;
            last_stable(part, &st)
        };
        let before = out.len();
        let Some(offsets) = self.read_upto(part, offset, max_bytes, oversized_first, out, lso)?
        else {
            return Ok(None);
        };
        // What the read returned ends at its last batch's end.
        let mut upto = offset;
        let mut at = before;
        while at + batch::HEADER_LEN <= out.len() {
            let Ok(h) = batch::parse_header(&out[at..]) else {
                break;
            };
            upto = h.last_offset() + 1;
            at += h.total_len();
        }
        let aborted = if upto > offset {
            self.aborted_transactions(part, offset, upto)?
        } else {
            Vec::new()
        };
        Ok(Some(CommittedRead {
            offsets,
            last_stable: lso.min(offsets.log_end),
            aborted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafkabox_protocol::batch::{BatchHeader, ProducerFields};

    use super::*;
    use crate::test_support::batch;
    use crate::StoreConfig;

    /// A transactional batch of `n` records of producer `id` (sequence `seq`).
    fn txn_batch(n: usize, id: i64, seq: i32) -> (Vec<u8>, BatchHeader) {
        let recs: Vec<batch::KeyValue<'_>> = (0..n).map(|_| (None, Some(&b"value"[..]))).collect();
        crate::test_support::txn_batch_of(&recs, id, seq)
    }

    fn batches(buf: &[u8]) -> Vec<(i64, bool)> {
        batch::split_batches(buf)
            .map(|r| {
                let (h, _) = r.unwrap();
                (h.base_offset, h.is_control())
            })
            .collect()
    }

    #[tokio::test]
    async fn lso_markers_and_aborted_index() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        {
            let s = Store::open(cfg.clone()).unwrap();
            let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
            let p = &t.partitions[0];
            let a = s.new_producer_id(b"a").unwrap();
            let b = s.new_producer_id(b"b").unwrap();
            // a opens a transaction at 0; b one at 2; a plain batch at 4.
            let (x, h) = txn_batch(2, a, 0);
            s.append(p, &x, &h).unwrap();
            let (x, h) = txn_batch(2, b, 0);
            s.append(p, &x, &h).unwrap();
            let (x, h) = batch(1, ProducerFields::NONE);
            let w = s.append(p, &x, &h).unwrap();
            s.wait_durable(w.write_seq).await.unwrap();
            assert_eq!(s.last_stable_offset(p).unwrap(), 0);
            assert_eq!(s.open_transactions(p), vec![(a, 0), (b, 2)]);
            // A plain batch from a producer with an open transaction is refused.
            let (x, h) = batch(
                1,
                ProducerFields {
                    producer_id: a,
                    producer_epoch: 0,
                    base_sequence: 2,
                },
            );
            assert!(matches!(
                s.append(p, &x, &h),
                Err(AppendError::InvalidTxnState(_))
            ));
            // read_committed sees nothing yet; read_uncommitted everything.
            let mut out = BytesMut::new();
            let r = s
                .read_committed(p, 0, 1 << 20, true, &mut out)
                .unwrap()
                .unwrap();
            assert!(out.is_empty());
            assert_eq!(r.last_stable, 0);
            // a aborts (marker at 5): the LSO moves to b's first offset.
            let m = s.append_marker(p, a, 0, 0, Marker::Abort).unwrap();
            assert_eq!(m.base_offset, 5);
            s.wait_durable(m.write_seq).await.unwrap();
            assert_eq!(s.last_stable_offset(p).unwrap(), 2);
            let r = s
                .read_committed(p, 0, 1 << 20, true, &mut out)
                .unwrap()
                .unwrap();
            assert_eq!(batches(&out), vec![(0, false)]);
            assert_eq!(
                r.aborted,
                vec![AbortedTxn {
                    producer_id: a,
                    first_offset: 0,
                    last_offset: 5
                }]
            );
            // b commits (marker at 6): everything is stable.
            let m = s.append_marker(p, b, 0, 0, Marker::Commit).unwrap();
            s.wait_durable(m.write_seq).await.unwrap();
            assert_eq!(s.last_stable_offset(p).unwrap(), 7);
            out.clear();
            let r = s
                .read_committed(p, 2, 1 << 20, true, &mut out)
                .unwrap()
                .unwrap();
            assert_eq!(
                batches(&out),
                vec![(2, false), (4, false), (5, true), (6, true)]
            );
            // a's aborted records end before 2, but its marker is in range.
            assert_eq!(r.aborted.len(), 1);
            // An older coordinator epoch or producer epoch is refused.
            let (x, h) = txn_batch(1, b, 2);
            s.append(p, &x, &h).unwrap();
            s.append_marker(p, b, 0, 3, Marker::Commit).unwrap();
            assert!(matches!(
                s.append_marker(p, b, 0, 2, Marker::Commit),
                Err(AppendError::CoordinatorFenced { .. })
            ));
            // An open transaction survives a restart.
            let (x, h) = txn_batch(1, a, 2);
            let w = s.append(p, &x, &h).unwrap();
            s.wait_durable(w.write_seq).await.unwrap();
            s.close().unwrap();
        }
        let s = Store::open(cfg).unwrap();
        let t = s.topic("t").unwrap();
        let p = &t.partitions[0];
        let open = s.open_transactions(p);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].1, 9);
        assert_eq!(s.last_stable_offset(p).unwrap(), 9);
        let mut out = BytesMut::new();
        let r = s
            .read_committed(p, 0, 1 << 20, true, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(r.aborted.len(), 1, "the index is read back after a restart");
        assert_eq!(r.last_stable, 9);
    }
}
