//! Log compaction (`cleanup.policy=compact`): sealed segments are rewritten keeping, for each
//! key, only its latest record in the partition; offsets, timestamps and the batches' offset
//! ranges are preserved (the removed records leave gaps, as in Kafka). Tombstones (null values)
//! are removed too once they are the latest for their key and their segment's newest record is
//! older than the cutoff the caller gives (`delete.retention.ms`). The newest segment is never
//! compacted (Kafka's active segment); the legacy segment is not either.
//!
//! Under transactions (as Kafka's cleaner): nothing at or past the last stable offset is
//! compacted; aborted transactions' records go whatever their keys; a COMMIT or ABORT marker
//! goes, in a later pass than the last of its transaction's records (so a read_committed
//! fetch that read aborted records always finds their index entry), once its segment is older
//! than the same cutoff as tombstones (its newest record older than `delete.retention.ms`;
//! Kafka, since KIP-534, counts that time from the cleaning that emptied the transaction), an
//! ABORT marker with its entry of the aborted transactions index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kafkabox_protocol::batch;

use crate::keys::{
    aborted_key, chunk_key, chunk_key_end, chunk_writes, parse_chunk_key, segment_key,
    stored_header,
};
use crate::segment::{self, Place, Segment};
use crate::{Partition, Store, StoreError};

/// What one compaction pass did to a partition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Segments rewritten.
    pub segments: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Bytes of keys one pass may hold in memory (Kafka's `log.cleaner.dedupe.buffer.size` is
/// 128 MiB for all cleaner threads). A partition with more distinct key bytes is left alone
/// with a warning.
const MAX_KEY_BYTES: usize = 64 << 20;

/// The most a stored compressed batch may inflate to while compacting; a batch that does not
/// decode within it is kept as it is.
const INFLATE_LIMIT: usize = 64 << 20;

/// Whole batches of partition `pid` stored in `tree` with base offsets in `from..to`,
/// reassembled from their chunks.
pub(crate) fn batches(
    tree: &sled::Tree,
    pid: u32,
    from: i64,
    to: i64,
) -> impl Iterator<Item = Result<(i64, Vec<u8>), StoreError>> + '_ {
    let end = if to == i64::MAX {
        chunk_key_end(pid)
    } else {
        chunk_key(pid, to, 0)
    };
    let mut iter = tree.range(chunk_key(pid, from.max(0), 0)..end);
    std::iter::from_fn(move || {
        let (k, v) = match iter.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let (base, chunk) = match parse_chunk_key(&k) {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        if chunk != 0 {
            return Some(Err(StoreError::Corrupt(format!(
                "batch at {base} starts with chunk {chunk}"
            ))));
        }
        let total = match stored_header(&v) {
            Ok(h) => h.total_len(),
            Err(e) => return Some(Err(e)),
        };
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&v);
        while bytes.len() < total {
            match iter.next() {
                Some(Ok((_, v))) => bytes.extend_from_slice(&v),
                Some(Err(e)) => return Some(Err(e.into())),
                None => break,
            }
        }
        if bytes.len() != total {
            return Some(Err(StoreError::Corrupt(format!(
                "batch at {base}: {} of {total} bytes stored",
                bytes.len()
            ))));
        }
        Some(Ok((base, bytes)))
    })
}

impl Store {
    /// Compacts the sealed segments of `part`: see the module docs. `tombstones_before_ms`:
    /// tombstones in segments whose newest record is older than this go.
    pub fn compact(
        &self,
        part: &Partition,
        tombstones_before_ms: i64,
    ) -> Result<Compacted, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        let lso = self.last_stable_offset(part)?;
        let mut done = Compacted::default();
        // Nothing at or past the last stable offset: an open transaction's records wait for
        // its marker (Kafka's first uncleanable offset).
        let candidates: Vec<Arc<Segment>> = segments
            .iter()
            .filter(|s| s.is_sealed() && !s.is_legacy() && s.summary().end <= lso)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(done);
        }
        // Aborted transactions' records go whatever their keys; markers stay (readers skip
        // them) and take no part in the keys.
        let aborted = self.aborted_transactions(part, 0, i64::MAX)?;
        let is_aborted = |h: &batch::BatchHeader| {
            h.is_transactional()
                && !h.is_control()
                && aborted.iter().any(|t| {
                    t.producer_id == h.producer_id
                        && t.first_offset <= h.base_offset
                        && h.base_offset < t.last_offset
                })
        };
        let skipped = |h: &batch::BatchHeader| h.is_control() || is_aborted(h);
        // The latest offset of every key in the partition.
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut key_bytes = 0usize;
        let is_candidate = |seg: &Arc<Segment>| candidates.iter().any(|c| Arc::ptr_eq(c, seg));
        // Whether a candidate segment holds a marker (else markers need no second look), and
        // whether a batch could not be read (then no marker goes this pass).
        let (mut markers, mut unreadable) = (false, false);
        for seg in &segments {
            let db = self.inner.open_segments.get(seg)?;
            let candidate = is_candidate(seg);
            for item in batches(&db.log, part.id, seg.base, offsets.log_end) {
                let (_, bytes) = item?;
                let Ok((h, records)) = batch::decode_batch(&bytes, INFLATE_LIMIT) else {
                    unreadable = true;
                    continue;
                };
                markers |= candidate && h.is_control();
                if skipped(&h) {
                    continue;
                }
                for r in records {
                    let Some(key) = r.key else { continue };
                    match latest.get_mut(key.as_ref()) {
                        Some(o) => *o = r.offset,
                        None => {
                            key_bytes += key.len();
                            latest.insert(key.to_vec(), r.offset);
                        }
                    }
                }
                if key_bytes > MAX_KEY_BYTES {
                    tracing::warn!(topic = %part.topic, partition = part.index, "not compacting: more than {MAX_KEY_BYTES} bytes of distinct keys");
                    return Ok(done);
                }
            }
        }
        let removable = |r: &batch::Record, tombstones_go: bool| match &r.key {
            None => false,
            Some(k) => {
                latest.get(k.as_ref()) != Some(&r.offset) || (r.value.is_none() && tombstones_go)
            }
        };
        let horizon_passed = |seg: &Segment| seg.summary().max_ts < tombstones_before_ms;
        // The markers that go: those past the horizon whose transactions keep no record.
        let mut gone_markers: HashSet<i64> = HashSet::new();
        if markers && !unreadable {
            // Per producer: whether a record of its transaction since its last marker stays.
            let mut live: HashMap<i64, bool> = HashMap::new();
            for seg in &segments {
                let candidate = is_candidate(seg);
                let (horizon, tombstones_go) =
                    (candidate && horizon_passed(seg), horizon_passed(seg));
                let db = self.inner.open_segments.get(seg)?;
                for item in batches(&db.log, part.id, seg.base, offsets.log_end) {
                    let (_, bytes) = item?;
                    let Ok((h, records)) = batch::decode_batch(&bytes, INFLATE_LIMIT) else {
                        continue;
                    };
                    if !h.is_transactional() {
                        continue;
                    }
                    if h.is_control() {
                        if horizon && !live.get(&h.producer_id).copied().unwrap_or(false) {
                            gone_markers.insert(h.base_offset);
                        }
                        live.remove(&h.producer_id);
                    } else if !candidate
                        // Aborted records still here count: their marker and index entry go
                        // no earlier than the pass after them, so a read_committed fetch that
                        // read them always finds their entry.
                        || is_aborted(&h)
                        || records.iter().any(|r| !removable(r, tombstones_go))
                    {
                        live.insert(h.producer_id, true);
                    }
                }
            }
        }
        for seg in &candidates {
            let summary = seg.summary();
            let tombstones_go = horizon_passed(seg);
            let removable = |r: &batch::Record| removable(r, tombstones_go);
            let marker_goes =
                |h: &batch::BatchHeader| h.is_control() && gone_markers.contains(&h.base_offset);
            let db = self.inner.open_segments.get(seg)?;
            // A segment with nothing to remove stays as it is.
            let mut any = false;
            for item in batches(&db.log, part.id, seg.base, i64::MAX) {
                let (_, bytes) = item?;
                if let Ok((h, records)) = batch::decode_batch(&bytes, INFLATE_LIMIT) {
                    if is_aborted(&h)
                        || marker_goes(&h)
                        || (!h.is_control() && records.iter().any(removable))
                    {
                        any = true;
                        break;
                    }
                }
            }
            if !any {
                continue;
            }
            // The new generation is at most as big as the old one, on disk next to it.
            self.inner.space.reserve(summary.bytes.saturating_mul(2))?;
            let generation = summary.generation + 1;
            let dir = segment::segment_dir(&self.inner.config.path, part.id, seg.base, generation);
            let _ = std::fs::remove_dir_all(&dir);
            let mut after = summary;
            after.generation = generation;
            after.bytes = 0;
            let mut removed = 0u64;
            {
                let out = segment::open_sled(&dir, 1 << 20, false)?;
                let out_log = out.open_tree("log")?;
                for item in batches(&db.log, part.id, seg.base, i64::MAX) {
                    let (base, bytes) = item?;
                    let kept = match batch::decode_batch(&bytes, INFLATE_LIMIT) {
                        Ok((h, records)) if is_aborted(&h) || marker_goes(&h) => {
                            removed += records.len() as u64;
                            continue;
                        }
                        Ok((h, records)) if !h.is_control() && records.iter().any(removable) => {
                            let n = records.len() as u64;
                            let keep: Vec<batch::Record> =
                                records.into_iter().filter(|r| !removable(r)).collect();
                            removed += n - keep.len() as u64;
                            if keep.is_empty() {
                                continue;
                            }
                            batch::encode_retained(&h, &keep)
                        }
                        _ => bytes,
                    };
                    let mut b = sled::Batch::default();
                    chunk_writes(&mut b, part.id, base, &kept)?;
                    out_log.apply_batch(b)?;
                    after.bytes += kept.len() as u64;
                }
                // Producer state and writer positions, when this was the newest segment of
                // its own; the aborted transactions index, but for the markers that went.
                let mut b = sled::Batch::default();
                let gone_entries: HashSet<[u8; 20]> = gone_markers
                    .iter()
                    .map(|o| aborted_key(part.id, *o))
                    .collect();
                for item in db.log.range(chunk_key_end(part.id)..) {
                    let (k, v) = item?;
                    if !k.starts_with(&part.id.to_be_bytes()) {
                        break;
                    }
                    if gone_entries.contains(&k[..]) {
                        after.aborted = after.aborted.saturating_sub(1);
                        continue;
                    }
                    b.insert(k, v);
                }
                out_log.apply_batch(b)?;
                out.flush()?;
            }
            drop(db);
            // Swap: the summary names the new generation first (durably), then memory.
            let mut st = self.part_state(part)?;
            let Some(i) = st.segments.iter().position(|s| Arc::ptr_eq(s, seg)) else {
                // Deleted meanwhile (retention, DeleteRecords).
                drop(st);
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            self.inner
                .segments
                .insert(segment_key(part.id, seg.base), &after.encode()[..])?;
            self.inner.db.flush()?;
            st.segments[i] = Arc::new(Segment::new(seg.base, Place::Dir(dir), after, true));
            drop(st);
            self.inner.open_segments.forget(seg);
            if let Some(old) = seg.dir() {
                if let Err(e) = std::fs::remove_dir_all(old) {
                    tracing::warn!(path = %old.display(), error = %e, "cannot remove a compacted segment's old files");
                }
            }
            done.segments += 1;
            done.records_removed += removed;
            done.bytes_before += summary.bytes;
            done.bytes_after += after.bytes;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafkabox_protocol::batch::{encode_uncompressed, validate_produce_batch, ProducerFields};

    use super::*;
    use crate::test_support::segment_per_batch;
    use crate::{Offsets, StoreConfig};

    /// (offset, key, value) of every record from `from` on.
    fn records(s: &Store, p: &Partition, from: i64) -> Vec<(i64, String, Option<String>)> {
        let mut out = BytesMut::new();
        s.read(p, from, 1 << 24, true, &mut out).unwrap().unwrap();
        let text =
            |b: &Option<bytes::Bytes>| b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
        batch::split_batches(&out)
            .flat_map(|r| {
                let (_, bytes) = r.unwrap();
                batch::decode_batch(bytes, 1 << 20).unwrap().1
            })
            .map(|r| (r.offset, text(&r.key).unwrap_or_default(), text(&r.value)))
            .collect()
    }

    #[tokio::test]
    async fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let part_id;
        {
            let s = Store::open(cfg.clone()).unwrap();
            let t = s.create_topic("c", 1, segment_per_batch()).unwrap();
            let p = &t.partitions[0];
            part_id = p.id;
            let batches: [&[batch::KeyValue<'_>]; 5] = [
                &[(Some(b"k1"), Some(b"a")), (Some(b"k2"), Some(b"b"))],
                &[(Some(b"k1"), Some(b"c"))],
                &[(Some(b"k3"), Some(b"x")), (Some(b"k2"), Some(b"d"))],
                &[(Some(b"k2"), None)],
                &[(Some(b"k4"), Some(b"y")), (Some(b"k1"), Some(b"e"))],
            ];
            for (i, recs) in batches.iter().enumerate() {
                let b = encode_uncompressed(recs, 1_000 + i as i64, ProducerFields::NONE);
                let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
                s.append(p, &b, &h).unwrap();
            }
            s.flush().unwrap();
            // Tombstones younger than the cutoff stay; k1's old values go, though its latest is in
            // the newest segment, which is not compacted.
            let done = s.compact(p, 0).unwrap();
            assert_eq!(done.records_removed, 4, "{done:?}");
            let some = |v: &str| Some(v.to_string());
            assert_eq!(
                records(&s, p, 0),
                vec![
                    (3, "k3".into(), some("x")),
                    (5, "k2".into(), None),
                    (6, "k4".into(), some("y")),
                    (7, "k1".into(), some("e")),
                ]
            );
            // Reading from an offset that compaction removed starts at the next record.
            assert_eq!(records(&s, p, 1)[0].0, 3);
            assert_eq!(
                s.offsets(p),
                Offsets {
                    log_start: 0,
                    log_end: 8
                }
            );
            // Old enough tombstones go too; a second pass finds nothing more.
            let done = s.compact(p, i64::MAX).unwrap();
            assert_eq!(done.records_removed, 1);
            assert_eq!(s.compact(p, i64::MAX).unwrap(), Compacted::default());
            assert_eq!(
                records(&s, p, 0),
                vec![
                    (3, "k3".into(), some("x")),
                    (6, "k4".into(), some("y")),
                    (7, "k1".into(), some("e")),
                ]
            );
            s.close().unwrap();
        }
        // One generation per segment is left, and a reopened store reads the compacted log.
        let segs = segment::list_segments(dir.path(), part_id).unwrap();
        let bases: Vec<i64> = segs.iter().map(|(b, _)| *b).collect();
        assert_eq!(bases, vec![0, 2, 3, 5, 6]);
        assert_eq!(segs.iter().filter(|(_, g)| *g == 1).count(), 4, "{segs:?}");
        // A generation left by a crash before its summary named it is removed at load.
        std::fs::create_dir_all(segment::segment_dir(dir.path(), part_id, 3, 9)).unwrap();
        let s = Store::open(cfg).unwrap();
        let t = s.topic("c").unwrap();
        let p = &t.partitions[0];
        assert_eq!(records(&s, p, 0).len(), 3);
        assert!(!segment::segment_dir(dir.path(), part_id, 3, 9).exists());
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 0,
                log_end: 8
            }
        );
    }

    use crate::test_support::txn_batch_of as txn_batch;

    /// (offset, is a marker) of every batch from `from` on, markers included.
    fn batch_offsets(s: &Store, p: &Partition) -> Vec<(i64, bool)> {
        let mut out = BytesMut::new();
        s.read(p, 0, 1 << 24, true, &mut out).unwrap().unwrap();
        batch::split_batches(&out)
            .map(|r| {
                let (h, _) = r.unwrap();
                (h.base_offset, h.is_control())
            })
            .collect()
    }

    #[tokio::test]
    async fn compaction_drops_aborted_records_then_markers_past_the_horizon() {
        use kafkabox_protocol::batch::Marker;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("c", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        let (a, b, c) = (
            s.new_producer_id(b"a").unwrap(),
            s.new_producer_id(b"b").unwrap(),
            s.new_producer_id(b"c").unwrap(),
        );
        let append = |(x, h): (Vec<u8>, batch::BatchHeader)| {
            s.append(p, &x, &h).unwrap();
        };
        // 0-1: a's transaction, aborted at 2.
        append(txn_batch(
            &[(Some(b"k1"), Some(b"a1")), (Some(b"k2"), Some(b"a2"))],
            a,
            0,
        ));
        s.append_marker(p, a, 0, 0, Marker::Abort).unwrap();
        // 3: b's transaction, committed at 4, its record superseded at 5.
        append(txn_batch(&[(Some(b"k1"), Some(b"b1"))], b, 0));
        s.append_marker(p, b, 0, 0, Marker::Commit).unwrap();
        let plain = |recs: &[batch::KeyValue<'_>]| {
            let x = encode_uncompressed(recs, 1_000, ProducerFields::NONE);
            let h = validate_produce_batch(&x, 1 << 20, None).unwrap();
            (x, h)
        };
        append(plain(&[(Some(b"k1"), Some(b"p1"))]));
        // 6: c's transaction, committed at 7, its record the latest of its key.
        append(txn_batch(&[(Some(b"k5"), Some(b"c5"))], c, 0));
        s.append_marker(p, c, 0, 0, Marker::Commit).unwrap();
        // 8: the newest segment, never compacted.
        append(plain(&[(Some(b"k9"), Some(b"z"))]));
        s.flush().unwrap();
        assert_eq!(s.aborted_transactions(p, 0, i64::MAX).unwrap().len(), 1);

        // Before the horizon: the aborted records and the superseded one go, markers stay.
        let done = s.compact(p, 0).unwrap();
        assert_eq!(done.records_removed, 3, "{done:?}");
        assert_eq!(
            batch_offsets(&s, p),
            vec![
                (2, true),
                (4, true),
                (5, false),
                (6, false),
                (7, true),
                (8, false)
            ]
        );
        assert_eq!(s.aborted_transactions(p, 0, i64::MAX).unwrap().len(), 1);

        // Past it: a's and b's markers go (nothing of their transactions is left), with a's
        // entry of the aborted index; c's marker stays, its record does.
        let done = s.compact(p, i64::MAX).unwrap();
        assert_eq!(done.records_removed, 2, "{done:?}");
        assert_eq!(
            batch_offsets(&s, p),
            vec![(5, false), (6, false), (7, true), (8, false)]
        );
        assert!(s.aborted_transactions(p, 0, i64::MAX).unwrap().is_empty());
        assert_eq!(s.compact(p, i64::MAX).unwrap(), Compacted::default());
        // read_committed reads the same.
        let mut out = BytesMut::new();
        let r = s
            .read_committed(p, 0, 1 << 24, true, &mut out)
            .unwrap()
            .unwrap();
        assert!(r.aborted.is_empty());
        assert_eq!(r.offsets.log_end, 9);
        assert_eq!(
            batch::split_batches(&out)
                .map(|b| b.unwrap().0.base_offset)
                .collect::<Vec<_>>(),
            vec![5, 6, 7, 8]
        );
    }
}
