//! Checking a data dir for damage (`kafkabox check`) and truncating damaged partitions to what
//! is intact (`kafkabox repair`). Both run on a store nobody else has open.
//!
//! What is checked, per partition: that it loads (segments in order, the durable log end that
//! every flush records is reached), and every stored batch: its chunks complete, its length and
//! CRC-32C (the producer's own checksum, which covers every byte but the base offset and leader
//! epoch), and the chain of offsets (each batch starts where the one before ended; a sealed
//! segment ends where its summary says).
//!
//! A repair keeps every intact batch: damage in the newest segment truncates it to its last
//! intact batch (the whole segment when its files cannot be read at all); damage in a sealed
//! segment drops that segment's batches from the damage to its end and records the range as
//! a gap that reads step over, keeping every later segment. An offset floor at the highest
//! offset ever stored or flushed keeps offsets from being handed out twice.

use std::sync::Arc;

use kafkabox_protocol::batch;

use crate::compaction::batches;
use crate::keys::{
    chunk_key, chunk_key_end, durable_end_key, gap_key, offset_floor_key, parse_chunk_key, read_u64,
};
use crate::segment::Segment;
use crate::{Partition, Store, StoreError};

/// Where a partition's damage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// First offset that is not intact (everything from here on is dropped by a repair).
    pub from: i64,
    pub what: String,
}

/// The result of checking one partition.
#[derive(Debug, Clone)]
pub struct PartitionCheck {
    pub topic: String,
    pub partition: i32,
    pub batches: u64,
    pub bytes: u64,
    /// The log end the store recorded as flushed (what must be there).
    pub durable_end: Option<i64>,
    /// End of the intact part of the log.
    pub intact_end: i64,
    pub damage: Option<Damage>,
}

/// What a repair did to one partition.
#[derive(Debug, Clone)]
pub struct PartitionRepair {
    pub topic: String,
    pub partition: i32,
    /// Offsets dropped (`from..to`), the bytes of the batches removed, and why.
    pub dropped_from: i64,
    pub dropped_to: i64,
    pub bytes_dropped: u64,
    pub what: String,
    /// Where the next append goes (never an offset used before).
    pub next_offset: i64,
}

impl Store {
    /// Checks every partition (see the module docs).
    pub fn check(&self) -> Vec<PartitionCheck> {
        let mut out = Vec::new();
        for topic in self.topics() {
            for part in &topic.partitions {
                out.push(self.check_partition(part));
            }
        }
        out
    }

    fn durable_end(&self, pid: u32) -> Option<i64> {
        let v = self.inner.state.get(durable_end_key(pid)).ok()??;
        read_u64(&v).ok().map(|n| n as i64)
    }

    fn check_partition(&self, part: &Partition) -> PartitionCheck {
        let mut c = PartitionCheck {
            topic: part.topic.clone(),
            partition: part.index,
            batches: 0,
            bytes: 0,
            durable_end: self.durable_end(part.id),
            intact_end: 0,
            damage: None,
        };
        let (offsets, segments) = match self.segments_from(part, None) {
            Ok(x) => x,
            Err(e) => {
                c.damage = Some(Damage {
                    from: 0,
                    what: format!("does not load: {e}"),
                });
                return c;
            }
        };
        let mut expect: Option<i64> = None;
        c.intact_end = offsets.log_start;
        let mut after_compacted = false;
        for (i, seg) in segments.iter().enumerate() {
            // Compaction drops whole batches: compacted segments (and the step out of one)
            // may have gaps in their offsets.
            let compacted = seg.summary().generation > 0;
            if compacted || after_compacted {
                expect = None;
            }
            after_compacted = compacted;
            let walked = crate::segment::guarded(
                || format!("the segment at {}", seg.base),
                || Ok(self.check_segment(part, seg, &mut expect, &mut c)),
            )
            .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(what) = walked {
                // In this segment: the one before may end in a repair's gap.
                c.damage = Some(Damage {
                    from: expect.map_or(seg.base, |x| x.max(seg.base)),
                    what,
                });
                return c;
            }
            let end = expect.unwrap_or(seg.base);
            let sealed_end = seg.summary().end;
            let gap = self
                .part_state(part)
                .is_ok_and(|st| st.is_gap(end, sealed_end));
            if seg.is_sealed() && !compacted && i + 1 < segments.len() && end != sealed_end && !gap
            {
                c.damage = Some(Damage {
                    from: end,
                    what: format!(
                        "the segment at {} ends at {end}, its summary says {sealed_end}",
                        seg.base
                    ),
                });
                return c;
            }
        }
        c.intact_end = expect.unwrap_or(offsets.log_end).max(offsets.log_start);
        // What the load found (flushed offsets missing from the files) and the walk did not.
        if let Ok(st) = self.part_state(part) {
            if let Some((from, what)) = &st.damage {
                c.damage = Some(Damage {
                    from: *from,
                    what: what.clone(),
                });
            }
        }
        c
    }

    /// Walks one segment's batches; `expect` is where the next batch must start.
    fn check_segment(
        &self,
        part: &Partition,
        seg: &Arc<Segment>,
        expect: &mut Option<i64>,
        c: &mut PartitionCheck,
    ) -> Result<(), String> {
        let db = self
            .inner
            .open_segments
            .get(seg)
            .map_err(|e| format!("the segment at {} does not open: {e}", seg.base))?;
        for item in batches(&db.log, part.id, seg.base, i64::MAX) {
            let (base, bytes) = item.map_err(|e| e.to_string())?;
            if let (Some(x), false) = (*expect, seg.summary().generation > 0) {
                // Legacy batches removed one by one by retention leave nothing between; the
                // only gaps are those a repair left.
                let gap = self.part_state(part).is_ok_and(|st| st.is_gap(x, base));
                if base != x && !gap {
                    return Err(format!("the batch at {base} follows one that ended at {x}"));
                }
            }
            let h = batch::parse_header(&bytes).map_err(|e| format!("batch at {base}: {e}"))?;
            if h.total_len() != bytes.len() {
                return Err(format!(
                    "batch at {base}: {} bytes stored, its header says {}",
                    bytes.len(),
                    h.total_len()
                ));
            }
            if bytes.len() < 21 || batch::crc32c(&bytes[21..]) != h.crc {
                return Err(format!("batch at {base}: CRC-32C does not match its bytes"));
            }
            c.batches += 1;
            c.bytes += bytes.len() as u64;
            *expect = Some(base + i64::from(h.last_offset_delta) + 1);
        }
        Ok(())
    }

    /// Truncates every damaged partition to its last intact batch and records an offset floor
    /// so no offset is used twice. Returns what was dropped; the store must be reopened before
    /// it is used for anything else.
    pub fn repair(&self) -> Result<Vec<PartitionRepair>, StoreError> {
        let mut out = Vec::new();
        for topic in self.topics() {
            for part in &topic.partitions {
                out.extend(self.repair_partition(part)?);
            }
        }
        self.inner.db.flush()?;
        Ok(out)
    }

    fn repair_partition(&self, part: &Partition) -> Result<Vec<PartitionRepair>, StoreError> {
        let pid = part.id;
        let durable = self.durable_end(pid).unwrap_or(0);
        let mut out = Vec::new();
        // The highest offset ever stored or flushed: the next append goes at least there.
        let mut old_end = durable;
        // Each pass fixes the first damage the check finds; a log has at most one damaged
        // range per segment, and the newest is the last.
        let passes = self
            .segments_from(part, None)
            .map_or(1, |(_, s)| s.len() + 1);
        let mut last: Option<Damage> = None;
        for _ in 0..passes.max(1) {
            let c = self.check_partition(part);
            let Some(damage) = c.damage else {
                break;
            };
            if last.as_ref() == Some(&damage) {
                return Err(StoreError::Corrupt(format!(
                    "partition {}-{}: the repair made no progress at offset {} ({}); not repairable automatically",
                    part.topic, part.index, damage.from, damage.what
                )));
            }
            last = Some(damage.clone());
            let (offsets, segments) = self.segments_from(part, None).map_err(|e| {
                StoreError::Corrupt(format!(
                    "partition {}-{}: {e} (not repairable automatically)",
                    part.topic, part.index
                ))
            })?;
            old_end = old_end
                .max(offsets.log_end)
                .max(self.stored_end(part).unwrap_or(0));
            let at = segments
                .iter()
                .rposition(|s| s.base <= damage.from)
                .unwrap_or(0);
            let newest = at + 1 >= segments.len();
            let mut dropped_from = damage.from;
            let mut bytes_dropped = 0u64;
            let dropped_to;
            if let Some(seg) = segments.get(at) {
                let truncated = crate::segment::guarded(
                    || format!("the segment at {}", seg.base),
                    || self.truncate_segment(pid, seg, damage.from),
                );
                match truncated {
                    Ok(n) => bytes_dropped += n,
                    // Its files cannot even be walked: the whole segment goes.
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping the whole segment");
                        bytes_dropped += seg.summary().bytes;
                        dropped_from = dropped_from.min(seg.base);
                        self.drop_segment(pid, seg)?;
                    }
                }
            }
            if newest {
                // The newest segment: its summary is derived from its contents at load; the
                // offset floor covers what it lost.
                if let Some(seg) = segments.get(at) {
                    if !seg.is_legacy() {
                        self.inner
                            .segments
                            .remove(crate::keys::segment_key(pid, seg.base))?;
                    }
                }
                dropped_to = old_end.max(dropped_from);
                self.inner
                    .state
                    .insert(offset_floor_key(pid), &(dropped_to as u64).to_be_bytes())?;
            } else {
                // A sealed segment: the range up to the next segment becomes a gap; every
                // later segment stays.
                dropped_to = segments[at + 1].base;
                self.inner.state.insert(
                    gap_key(pid, dropped_from),
                    &(dropped_to as u64).to_be_bytes(),
                )?;
            }
            self.inner.db.flush()?;
            if let Ok(mut st) = part.state.lock() {
                st.loaded = false;
            }
            self.inner
                .open_segments
                .forget_under(&crate::segment::partition_dir(&self.inner.config.path, pid));
            out.push(PartitionRepair {
                topic: part.topic.clone(),
                partition: part.index,
                dropped_from,
                dropped_to,
                bytes_dropped,
                what: damage.what,
                next_offset: old_end,
            });
        }
        if !out.is_empty() {
            // Never below anything stored or flushed before the repair.
            self.inner
                .state
                .insert(offset_floor_key(pid), &(old_end as u64).to_be_bytes())?;
            self.inner.db.flush()?;
            if let Ok(mut st) = part.state.lock() {
                st.loaded = false;
            }
            for r in &mut out {
                r.next_offset = old_end;
            }
        }
        Ok(out)
    }

    /// Removes the batches of `seg` from offset `from` on; returns the bytes removed.
    fn truncate_segment(&self, pid: u32, seg: &Arc<Segment>, from: i64) -> Result<u64, StoreError> {
        let db = self.inner.open_segments.get(seg)?;
        let mut b = sled::Batch::default();
        let mut bytes = 0u64;
        for item in db
            .log
            .range(chunk_key(pid, from, 0)..chunk_key_end(pid))
            .keys()
        {
            let k = item?;
            if parse_chunk_key(&k).is_ok() {
                // A value that cannot be read any more counts as nothing.
                bytes += db.log.get(&k).ok().flatten().map_or(0, |v| v.len() as u64);
                b.remove(k);
            }
        }
        db.log.apply_batch(b)?;
        db.db.flush()?;
        Ok(bytes)
    }

    /// End of the batches actually stored (ignoring floors and markers).
    fn stored_end(&self, part: &Partition) -> Result<i64, StoreError> {
        let (offsets, segments) = self.segments_from(part, None)?;
        let Some(seg) = segments.last() else {
            return Ok(offsets.log_start);
        };
        let db = self.inner.open_segments.get(seg)?;
        let mut end = seg.base;
        if let Some(item) = db
            .log
            .range(chunk_key(part.id, 0, 0)..chunk_key_end(part.id))
            .next_back()
        {
            let (k, _) = item?;
            let (base, _) = parse_chunk_key(&k)?;
            let h = crate::keys::header_in(&db.log, part.id, base)?;
            end = h.last_offset() + 1;
        }
        Ok(end)
    }
}
