//! Log compaction (`cleanup.policy=compact`): sealed segments are rewritten keeping, for each
//! key, only its latest record in the partition; offsets, timestamps and the batches' offset
//! ranges are preserved (the removed records leave gaps, as in Kafka). Tombstones (null values)
//! are removed too once they are the latest for their key and their segment's newest record is
//! older than the cutoff the caller gives (`delete.retention.ms`). The newest segment is never
//! compacted (Kafka's active segment); the legacy segment is not either.
//!
//! A rewritten segment is a new generation: a new database in `<base>-<generation>/`, written
//! and flushed whole before the meta database's summary names it; at load, directories of
//! other generations are removed. A crash at any point keeps one complete generation.

use std::collections::HashMap;
use std::sync::Arc;

use kafkabox_protocol::batch;

use crate::segment::{self, Place, Segment};
use crate::{
    chunk_key, chunk_key_end, chunk_writes, parse_chunk_key, segment_key, stored_header, Partition,
    Store, StoreError,
};

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
        let mut done = Compacted::default();
        let candidates: Vec<Arc<Segment>> = segments
            .iter()
            .filter(|s| s.is_sealed() && !s.is_legacy())
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(done);
        }
        // The latest offset of every key in the partition.
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut key_bytes = 0usize;
        for seg in &segments {
            let db = self.inner.open_segments.get(seg)?;
            for item in batches(&db.log, part.id, seg.base, offsets.log_end) {
                let (_, bytes) = item?;
                let Ok((_, records)) = batch::decode_batch(&bytes, INFLATE_LIMIT) else {
                    continue;
                };
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
        for seg in &candidates {
            let summary = seg.summary();
            let tombstones_go = summary.max_ts < tombstones_before_ms;
            let removable = |r: &batch::Record| match &r.key {
                None => false,
                Some(k) => {
                    latest.get(k.as_ref()) != Some(&r.offset)
                        || (r.value.is_none() && tombstones_go)
                }
            };
            let db = self.inner.open_segments.get(seg)?;
            // A segment with nothing to remove stays as it is.
            let mut any = false;
            for item in batches(&db.log, part.id, seg.base, i64::MAX) {
                let (_, bytes) = item?;
                if let Ok((_, records)) = batch::decode_batch(&bytes, INFLATE_LIMIT) {
                    if records.iter().any(removable) {
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
                        Ok((h, records)) if records.iter().any(removable) => {
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
                // its own.
                let mut b = sled::Batch::default();
                for item in db.log.range(chunk_key_end(part.id)..) {
                    let (k, v) = item?;
                    if !k.starts_with(&part.id.to_be_bytes()) {
                        break;
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
