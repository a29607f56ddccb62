//! Retention and DeleteRecords: moving a partition's log start (stored as a marker, so it holds
//! inside a segment across restarts) and dropping the segments wholly below it; time
//! (`retention.ms`) and size (`retention.bytes`) retention, held back by readers that have not
//! caught up.

use std::sync::atomic::Ordering;

use crate::keys::{chunk_count, chunk_key, log_start_key, tree_headers};
use crate::log::{high_watermark, PartitionState};
use crate::{Partition, Store, StoreError};

impl Store {
    /// Moves the log start offset of `part` to `offset` (DeleteRecords): the new start is
    /// stored, so it survives a restart even inside a segment, and segments that end at or
    /// before it are removed whole. `offset` must lie between the log start and the log end.
    pub fn delete_records_before(&self, part: &Partition, offset: i64) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        if offset <= st.log_start {
            return Ok(st.log_start);
        }
        let offset = offset.min(high_watermark(part, &st));
        self.move_log_start(part, &mut st, offset)?;
        Ok(offset)
    }

    /// Stores `offset` as the log start of `part` and removes the segments wholly below it
    /// (batches of the legacy segment one by one). The newest segment goes too when it is
    /// wholly below (after it is sealed); the next append starts a new one.
    fn move_log_start(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        offset: i64,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner
            .state
            .insert(&log_start_key(part.id)[..], &(offset as u64).to_be_bytes())?;
        // The marker must be on disk before the files go.
        inner.db.flush()?;
        st.log_start = st.log_start.max(offset);
        while let Some(first) = st.segments.first().cloned() {
            let s = first.summary();
            if first.is_legacy() {
                if s.end <= offset {
                    self.drop_segment(part.id, &first)?;
                    st.segments.remove(0);
                    continue;
                }
                self.trim_legacy(part.id, offset)?;
                break;
            }
            if s.end > offset || (s.bytes == 0 && st.segments.len() == 1) {
                break;
            }
            self.seal(part.id, &first)?;
            self.drop_segment(part.id, &first)?;
            st.segments.remove(0);
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Moves the log start forward to `new_start` if that is forward; returns by how many
    /// offsets.
    fn advance_log_start(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        new_start: i64,
    ) -> Result<i64, StoreError> {
        let old_start = st.log_start;
        if new_start <= old_start {
            return Ok(0);
        }
        self.move_log_start(part, st, new_start)?;
        Ok(new_start - old_start)
    }

    /// Removes the legacy batches of `pid` that end at or before `offset`.
    fn trim_legacy(&self, pid: u32, offset: i64) -> Result<(), StoreError> {
        let log = &self.inner.state;
        let mut b = sled::Batch::default();
        for h in tree_headers(log, pid, 0, offset) {
            let h = h?;
            if h.last_offset() >= offset {
                break;
            }
            for c in 0..chunk_count(h.total_len()) {
                b.remove(&chunk_key(pid, h.base_offset, c as u16)[..]);
            }
        }
        log.apply_batch(b)?;
        Ok(())
    }

    /// Removes the oldest sealed segments of `part` while what remains holds at least
    /// `max_bytes` of batches (a topic's `retention.bytes`, as Kafka applies it: the newest
    /// segment stays), never past offset `hold` (what every reader that must see the records
    /// has passed; `i64::MAX` for none). Batches of a legacy segment go one by one, at most
    /// 10,000 per call. Returns the number of offsets the log start moved by.
    pub fn expire_over_size(
        &self,
        part: &Partition,
        max_bytes: u64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        let mut sizes = Vec::with_capacity(st.segments.len());
        for seg in &st.segments {
            sizes.push(self.segment_bytes(part.id, seg)?);
        }
        let mut total: u64 = sizes.iter().sum();
        let old_start = st.log_start;
        let mut new_start = old_start;
        let count = st.segments.len();
        for (i, seg) in st.segments.iter().enumerate() {
            if i + 1 == count || total <= max_bytes {
                break;
            }
            if seg.is_legacy() {
                // Batch by batch, as far as the excess goes.
                let db = self.inner.open_segments.get(seg)?;
                for (n, h) in tree_headers(&db.log, part.id, 0, i64::MAX).enumerate() {
                    let h = h?;
                    if total <= max_bytes || n >= 10_000 {
                        break;
                    }
                    if h.last_offset() + 1 > hold {
                        break;
                    }
                    total -= h.total_len() as u64;
                    new_start = new_start.max(h.last_offset() + 1);
                }
                break;
            }
            if total - sizes[i] < max_bytes || seg.summary().end > hold {
                break;
            }
            total -= sizes[i];
            new_start = new_start.max(seg.summary().end);
        }
        self.advance_log_start(part, &mut st, new_start)
    }

    /// Removes the segments at the front of `part` whose records are all older than
    /// `cutoff_ms` (newest timestamp below it), the newest segment too once it is that old
    /// (Kafka rolls it first), never past offset `hold` (see [`Store::expire_over_size`]).
    /// Batches of a legacy segment go one by one, at most 10,000 per call. Returns the number
    /// of offsets the log start moved by.
    pub fn expire_before(
        &self,
        part: &Partition,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut st = self.part_state(part)?;
        let new_start = self.time_target(part, &st, cutoff_ms, hold)?;
        self.advance_log_start(part, &mut st, new_start)
    }

    /// How many offsets [`Store::expire_before`] would remove from `part` without `hold` but
    /// keeps because of it: what a reader that has not caught up holds back.
    pub fn retention_held_back(
        &self,
        part: &Partition,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let st = self.part_state(part)?;
        let free = self.time_target(part, &st, cutoff_ms, i64::MAX)?;
        let held = self.time_target(part, &st, cutoff_ms, hold)?;
        Ok((free - held).max(0))
    }

    /// Where time retention would move the log start of `part`: past the front segments whose
    /// records are all older than `cutoff_ms`, never past `hold`.
    fn time_target(
        &self,
        part: &Partition,
        st: &PartitionState,
        cutoff_ms: i64,
        hold: i64,
    ) -> Result<i64, StoreError> {
        let mut new_start = st.log_start;
        for seg in &st.segments {
            if seg.is_legacy() {
                let db = self.inner.open_segments.get(seg)?;
                for (n, h) in tree_headers(&db.log, part.id, 0, i64::MAX).enumerate() {
                    let h = h?;
                    if h.max_timestamp >= cutoff_ms || n >= 10_000 || h.last_offset() + 1 > hold {
                        break;
                    }
                    new_start = new_start.max(h.last_offset() + 1);
                }
                if new_start < seg.summary().end {
                    break;
                }
                continue;
            }
            let s = seg.summary();
            if s.bytes == 0 || s.max_ts >= cutoff_ms || s.end > hold {
                break;
            }
            new_start = new_start.max(s.end);
        }
        Ok(new_start)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafkabox_protocol::batch::{encode_uncompressed, validate_produce_batch, ProducerFields};

    use super::*;
    use crate::test_support::{batch, segment_per_batch};
    use crate::{Offsets, StoreConfig};

    #[tokio::test]
    async fn timestamps_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        for ts in [100, 200, 300] {
            let b = encode_uncompressed(
                &[(None, Some(b"x")), (None, Some(b"y"))],
                ts,
                ProducerFields::NONE,
            );
            let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
            s.append(p, &b, &h).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.offset_for_timestamp(p, 150).unwrap(), Some((2, 200)));
        assert_eq!(s.offset_for_timestamp(p, 301).unwrap(), None);
        // The batch holding the largest timestamp (its base offset): ListOffsets looks inside it.
        assert_eq!(s.max_timestamp(p).unwrap(), Some((4, 300)));
        // A reader that has only passed offset 3 holds retention at the segment ending at 2.
        assert_eq!(s.expire_before(p, 250, 3).unwrap(), 2);
        assert_eq!(s.offsets(p).log_start, 2);
        // Segments older than 250 go whole.
        assert_eq!(s.expire_before(p, 250, i64::MAX).unwrap(), 2);
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 4,
                log_end: 6
            }
        );
        let mut out = BytesMut::new();
        assert!(s.read(p, 0, 100, true, &mut out).unwrap().is_none());
        // Everything is older than 1000: the newest segment goes too, the log end stays, and the
        // next append goes on from it.
        assert_eq!(s.expire_before(p, 1000, i64::MAX).unwrap(), 2);
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 6,
                log_end: 6
            }
        );
        let (b, h) = batch(1, ProducerFields::NONE);
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 6);
        s.close().unwrap();
        drop(t);
        drop(s);
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let p = &s.topic("t").unwrap().partitions[0];
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 6,
                log_end: 7
            }
        );
    }

    #[tokio::test]
    async fn delete_records_inside_a_batch_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(StoreConfig::new(dir.path())).unwrap();
            let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
            let p = &t.partitions[0];
            for ts in [100, 200, 300] {
                let b = encode_uncompressed(
                    &[(None, Some(b"x")), (None, Some(b"y"))],
                    ts,
                    ProducerFields::NONE,
                );
                let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
                s.append(p, &b, &h).unwrap();
            }
            s.flush().unwrap();
            assert_eq!(s.delete_records_before(p, 3).unwrap(), 3);
            assert_eq!(
                s.offsets(p),
                Offsets {
                    log_start: 3,
                    log_end: 6
                }
            );
            // The batch holding offset 3 is still read whole; the one before it is gone.
            let mut out = BytesMut::new();
            assert!(s.read(p, 2, 100, true, &mut out).unwrap().is_none());
            assert!(s.read(p, 3, 1 << 20, true, &mut out).unwrap().is_some());
            assert_eq!(s.partition_size(p).unwrap() as usize, out.len());
            s.close().unwrap();
        }
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(
            s.offsets(&p),
            Offsets {
                log_start: 3,
                log_end: 6
            }
        );
        // Deleting everything keeps the log end across a restart.
        assert_eq!(s.delete_records_before(&p, 6).unwrap(), 6);
        s.close().unwrap();
        drop(s);
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let p = s.topic("t").unwrap().partitions[0].clone();
        assert_eq!(
            s.offsets(&p),
            Offsets {
                log_start: 6,
                log_end: 6
            }
        );
    }

    #[tokio::test]
    async fn size_retention_keeps_the_newest_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        let b = encode_uncompressed(&[(None, Some(&[7u8; 1000][..]))], 1, ProducerFields::NONE);
        let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
        for _ in 0..10 {
            s.append(p, &b, &h).unwrap();
        }
        s.flush().unwrap();
        let one = b.len() as u64;
        // Held at offset 5, size retention stops there.
        assert_eq!(s.expire_over_size(p, 3 * one, 5).unwrap(), 5);
        assert_eq!(s.expire_over_size(p, 3 * one, i64::MAX).unwrap(), 2);
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 7,
                log_end: 10
            }
        );
        assert_eq!(s.partition_size(p).unwrap(), 3 * one);
        // Even a limit below one batch keeps the newest segment.
        assert_eq!(s.expire_over_size(p, 0, i64::MAX).unwrap(), 2);
        assert_eq!(s.offsets(p).log_start, 9);
    }
}
