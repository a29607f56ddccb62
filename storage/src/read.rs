//! Reading partitions: fetches (whole batches across segments, up to the high watermark),
//! what a partition's offsets and damage are, timestamp lookups for ListOffsets, and sizes.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::watch;

use crate::keys::{chunk_key, header_in, parse_chunk_key, stored_header, tree_headers};
use crate::log::high_watermark;
use crate::segment::{self, Segment};
use crate::{Offsets, Partition, Store, StoreError};

impl Store {
    /// A receiver that changes after every append (for long-polling fetches).
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.inner.appends.subscribe()
    }

    /// Where `part` is damaged and why, when it loaded only in part (see
    /// [`PartitionState::damage`](crate::log::PartitionState::damage): reads from there, writes
    /// and ListOffsets are refused), or why it does not load at all.
    pub fn damage(&self, part: &Partition) -> Option<(i64, String)> {
        match self.part_state(part) {
            Ok(st) => st.damage.clone(),
            Err(e) => Some((0, e.to_string())),
        }
    }

    /// Where the next append of `part` goes (the log end, past the high watermark until a
    /// flush covers it).
    fn next_offset(&self, part: &Partition) -> Result<i64, StoreError> {
        Ok(self.part_state(part)?.next_offset)
    }

    /// [`Store::damage`], or else damage a read ran into since the load (a sealed segment):
    /// what `/api/topics` and the metrics report.
    pub fn damage_seen(&self, part: &Partition) -> Option<(i64, String)> {
        match self.part_state(part) {
            Ok(st) => st.damage.clone().or_else(|| st.seen_damage.clone()),
            Err(e) => Some((0, e.to_string())),
        }
    }

    /// Log start and end of `part` (0, 0 when its segments cannot be read: the error is
    /// logged, and every read or write of the partition returns it).
    pub fn offsets(&self, part: &Partition) -> Offsets {
        match self.part_state(part) {
            Ok(st) => Offsets {
                log_start: st.log_start,
                log_end: high_watermark(part, &st),
            },
            Err(e) => {
                tracing::error!(topic = %part.topic, partition = part.index, error = %e, "cannot load the partition");
                Offsets {
                    log_start: 0,
                    log_end: 0,
                }
            }
        }
    }

    /// The offsets of `part` and its segments from the one holding `offset` on (all of them
    /// when `offset` is `None`).
    pub(crate) fn segments_from(
        &self,
        part: &Partition,
        offset: Option<i64>,
    ) -> Result<(Offsets, Vec<Arc<Segment>>), StoreError> {
        let st = self.part_state(part)?;
        let offsets = Offsets {
            log_start: st.log_start,
            log_end: high_watermark(part, &st),
        };
        let from = offset.map(|o| st.segment_index(o)).unwrap_or(0);
        let segments = st.segments.get(from..).unwrap_or_default();
        Ok((offsets, segments.to_vec()))
    }

    /// Copies whole batches starting with the one that holds `offset` into `out`, up to
    /// `max_bytes`. With `oversized_first` the first batch is copied even when it alone exceeds
    /// `max_bytes`, so a consumer always makes progress (KIP-74).
    /// Returns `None` when `offset` is outside the log.
    pub fn read(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Offsets>, StoreError> {
        self.read_upto(part, offset, max_bytes, oversized_first, out, i64::MAX)
    }

    /// [`Store::read`] of nothing at or past `bound` (a batch boundary: the last stable
    /// offset).
    pub(crate) fn read_upto(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
        bound: i64,
    ) -> Result<Option<Offsets>, StoreError> {
        let before = out.len();
        let r = segment::guarded(
            || format!("partition {}-{}", part.topic, part.index),
            || self.read_unguarded(part, offset, max_bytes, oversized_first, out, bound),
        );
        if let Err(e) = &r {
            out.truncate(before);
            if matches!(e, StoreError::Corrupt(_) | StoreError::Sled(_)) {
                // Damage found by a read (a sealed segment): reported by `damage_seen` until
                // the next load, while the rest of the log is served and written as before.
                if let Ok(mut st) = part.state.lock() {
                    if st.loaded && st.damage.is_none() && st.seen_damage.is_none() {
                        st.seen_damage = Some((offset, e.to_string()));
                    }
                }
            }
        }
        r
    }

    fn read_unguarded(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut BytesMut,
        bound: i64,
    ) -> Result<Option<Offsets>, StoreError> {
        let (offsets, segments) = self.segments_from(part, Some(offset))?;
        let end = offsets.log_end.min(bound);
        if offset < offsets.log_start {
            return Ok(None);
        }
        if offset > offsets.log_end {
            // Past the high watermark but within the log (a flush will cover it): nothing
            // yet, as Kafka answers a read past what followers copied.
            if offset > self.next_offset(part)? {
                return Ok(None);
            }
            return Ok(Some(offsets));
        }
        if offset == offsets.log_end {
            if let Some((from, what)) = self.damage(part) {
                return Err(StoreError::Corrupt(format!(
                    "partition {}-{} is damaged from offset {from}: {what}",
                    part.topic, part.index
                )));
            }
            return Ok(Some(offsets));
        }
        if offset >= end {
            // At or past the bound, within the high watermark: nothing yet.
            return Ok(Some(offsets));
        }
        let first_len = out.len();
        // Where the next batch must start: a batch elsewhere means stored batches are missing
        // (damaged files), answered as an error rather than skipped over.
        let mut expected: Option<i64> = None;
        let mut after_compacted = false;
        for (i, seg) in segments.iter().enumerate() {
            // Compaction drops whole batches: its segments (and the step out of them) may have
            // gaps.
            let compacted = seg.summary().generation > 0;
            if compacted || after_compacted {
                expected = None;
            }
            after_compacted = compacted;
            // Nothing past the high watermark (or the bound) is read, nor a segment opened
            // for it.
            if seg.base >= end {
                break;
            }
            let db = match self.inner.open_segments.get(seg) {
                Ok(db) => db,
                // What came before a segment that does not open is answered; the fetch that
                // starts in it gets the error.
                Err(_) if out.len() > first_len => return Ok(Some(offsets)),
                Err(e) => return Err(e),
            };
            let log = &db.log;
            let mut start = offset.max(seg.base);
            if i == 0 {
                // The batch holding `offset` is the one with the greatest base offset at or
                // below it.
                if let Some(item) = log
                    .range(chunk_key(part.id, 0, 0)..=chunk_key(part.id, offset, u16::MAX))
                    .next_back()
                {
                    let (k, _) = item?;
                    let (base, _) = parse_chunk_key(&k)?;
                    let h = header_in(log, part.id, base)?;
                    start = if h.last_offset() < offset {
                        h.last_offset() + 1
                    } else {
                        base
                    };
                    expected = Some(start);
                }
            }
            // Bytes of the current batch still to come in later chunks.
            let mut pending = 0usize;
            let mut full = false;
            let segment_start = out.len();
            for item in log.range(chunk_key(part.id, start, 0)..chunk_key(part.id, end, 0)) {
                let (k, v) = item?;
                if pending == 0 {
                    let (base, chunk) = parse_chunk_key(&k)?;
                    if chunk != 0 {
                        return Err(StoreError::Corrupt(format!(
                            "batch at {base} starts with chunk {chunk}"
                        )));
                    }
                    if let (Some(x), false) = (expected, compacted) {
                        // The partition lock again only on the rare path: a gap.
                        if base != x && !self.part_state(part)?.is_gap(x, base) {
                            // What comes before the gap is answered; the fetch that starts
                            // at the gap gets the error.
                            if out.len() > first_len {
                                return Ok(Some(offsets));
                            }
                            return Err(StoreError::Corrupt(format!(
                                "partition {}-{}: offsets {x}..{base} are missing from the stored log (damaged files); `kafkabox check` lists the damage",
                                part.topic, part.index
                            )));
                        }
                    }
                    let header = stored_header(&v)?;
                    expected = Some(header.last_offset() + 1);
                    let total = header.total_len();
                    let first = out.len() == first_len;
                    if out.len() - first_len + total > max_bytes && !(first && oversized_first) {
                        full = true;
                        break;
                    }
                    pending = total;
                }
                if v.len() > pending {
                    return Err(StoreError::Corrupt(
                        "stored chunks longer than their batch".into(),
                    ));
                }
                out.extend_from_slice(&v);
                pending -= v.len();
                if pending == 0 && out.len() - first_len >= max_bytes {
                    full = true;
                    break;
                }
            }
            if pending != 0 {
                return Err(StoreError::Corrupt(format!(
                    "batch missing {pending} bytes of chunks"
                )));
            }
            // sled keeps the pages a read pulls in memory too: reads count toward recycling.
            drop(db);
            if self
                .inner
                .open_segments
                .wrote(seg, (out.len() - segment_start) as u64)
            {
                self.inner.request_flush();
            }
            if full {
                break;
            }
        }
        Ok(Some(offsets))
    }

    /// The earliest offset whose batch has a max timestamp at or after `timestamp`, with that
    /// timestamp; `None` when no batch is that recent. Batch granularity: the returned offset is
    /// the batch's base offset.
    pub fn offset_for_timestamp(
        &self,
        part: &Partition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.offset_for_timestamp_from(part, timestamp, i64::MIN)
    }

    /// Like [`Store::offset_for_timestamp`], among the batches that end after `from`.
    pub fn offset_for_timestamp_from(
        &self,
        part: &Partition,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        for seg in &segments {
            let s = seg.summary();
            if s.end <= from || (!seg.is_legacy() && s.max_ts < timestamp) {
                continue;
            }
            let db = self.inner.open_segments.get(seg)?;
            for h in tree_headers(&db.log, part.id, 0, offsets.log_end) {
                let h = h?;
                if h.last_offset() >= from && h.max_timestamp >= timestamp {
                    return Ok(Some((h.base_offset, h.max_timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// The offset after the batch that starts at `base`.
    pub fn batch_end(&self, part: &Partition, base: i64) -> Result<i64, StoreError> {
        let (_, segments) = self.segments_from(part, Some(base))?;
        let Some(seg) = segments.first() else {
            return Err(StoreError::Corrupt(format!("no batch at {base}")));
        };
        let db = self.inner.open_segments.get(seg)?;
        Ok(header_in(&db.log, part.id, base)?.last_offset() + 1)
    }

    /// The base offset and max timestamp of the first batch holding the largest timestamp
    /// (ListOffsets -3 looks inside it for the record).
    pub fn max_timestamp(&self, part: &Partition) -> Result<Option<(i64, i64)>, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        let mut best: Option<(i64, i64)> = None;
        for seg in &segments {
            let s = seg.summary();
            if !seg.is_legacy() && (s.bytes == 0 || best.is_some_and(|(_, ts)| s.max_ts <= ts)) {
                continue;
            }
            let db = self.inner.open_segments.get(seg)?;
            for h in tree_headers(&db.log, part.id, 0, offsets.log_end) {
                let h = h?;
                if best.is_none_or(|(_, ts)| h.max_timestamp > ts) {
                    best = Some((h.base_offset, h.max_timestamp));
                }
            }
        }
        Ok(best)
    }

    /// Bytes of stored batches in `part` (DescribeLogDirs, retention.bytes).
    pub fn partition_size(&self, part: &Partition) -> Result<u64, StoreError> {
        let (_, segments) = self.segments_from(part, None)?;
        let mut total = 0u64;
        for seg in &segments {
            total += self.segment_bytes(part.id, seg)?;
        }
        Ok(total)
    }

    /// Bytes of stored batches in `seg` (the legacy segment is scanned).
    pub(crate) fn segment_bytes(&self, pid: u32, seg: &Arc<Segment>) -> Result<u64, StoreError> {
        if !seg.is_legacy() {
            return Ok(seg.summary().bytes);
        }
        let db = self.inner.open_segments.get(seg)?;
        let mut total = 0;
        for h in tree_headers(&db.log, pid, 0, i64::MAX) {
            total += h?.total_len() as u64;
        }
        Ok(total)
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
    async fn read_respects_max_bytes_but_returns_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        let p = &t.partitions[0];
        let (b, h) = batch(10, ProducerFields::NONE);
        for _ in 0..5 {
            s.append(p, &b, &h).unwrap();
        }
        // Readers see what a flush covered (the high watermark).
        s.flush().unwrap();
        let mut out = BytesMut::new();
        s.read(p, 0, 1, true, &mut out).unwrap().unwrap();
        assert_eq!(out.len(), b.len());
        out.clear();
        s.read(p, 0, 1, false, &mut out).unwrap().unwrap();
        assert_eq!(out.len(), 0);
        out.clear();
        s.read(p, 0, b.len() * 2 + 1, true, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(out.len(), b.len() * 2);
        out.clear();
        s.read(p, 0, 1 << 20, true, &mut out).unwrap().unwrap();
        assert_eq!(out.len(), b.len() * 5);
    }
}
