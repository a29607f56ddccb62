//! Partition logs: a [`Partition`] and the state its lock guards; the lazy load of a
//! partition (segments, offsets, producer state and writer positions, the legacy segment of
//! older data dirs); rolling, sealing and dropping segments; appends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use kafkabox_protocol::batch::BatchHeader;

use crate::keys::{
    aborted_prefix, chunk_key, chunk_key_end, chunk_writes, durable_end_key, gap_prefix,
    log_start_key, offset_floor_key, parse_chunk_key, producer_key, producer_prefix, read_u64,
    segment_key, stored_header, tree_headers, writer_key, writer_prefix,
};
use crate::producer::{BatchMeta, ProducerEntry, SeqCheck};
use crate::segment::{self, Place, SegDb, Segment, Summary};
use crate::{now_ms, AppendError, Appended, StateEntry, Store, StoreError, DEFAULT_SEGMENT_BYTES};

/// When a partition's newest segment is rolled (Kafka's `segment.bytes`, `segment.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPolicy {
    pub bytes: u64,
    pub ms: i64,
}

/// One partition log.
#[derive(Debug)]
pub struct Partition {
    /// Store-wide id: the key prefix of its batches.
    pub id: u32,
    pub topic: String,
    pub index: i32,
    pub(crate) policy: Mutex<SegmentPolicy>,
    pub(crate) state: Mutex<PartitionState>,
    /// The high watermark: the end of what a restart keeps (advanced by the flusher once a
    /// flush covered it, set to the log end when the partition is loaded). Reads, ListOffsets
    /// and the stages never go past it, so nobody sees an offset that a crash could hand out
    /// again.
    pub(crate) high_watermark: Arc<AtomicI64>,
}

impl Partition {
    pub(crate) fn new(
        id: u32,
        topic: &str,
        index: i32,
        policy: SegmentPolicy,
        loaded: bool,
    ) -> Partition {
        Partition {
            id,
            topic: topic.to_string(),
            index,
            policy: Mutex::new(policy),
            high_watermark: Arc::new(AtomicI64::new(0)),
            state: Mutex::new(PartitionState {
                loaded,
                deleted: false,
                floor: 0,
                gaps: BTreeMap::new(),
                damage: None,
                seen_damage: None,
                next_offset: 0,
                log_start: 0,
                producers: HashMap::new(),
                ongoing: BTreeSet::new(),
                writers: HashMap::new(),
                segments: Vec::new(),
            }),
        }
    }

    fn policy(&self) -> SegmentPolicy {
        match self.policy.lock() {
            Ok(p) => *p,
            Err(_) => SegmentPolicy {
                bytes: DEFAULT_SEGMENT_BYTES,
                ms: i64::MAX,
            },
        }
    }
}

/// What the lock of a [`Partition`] guards: its segments, offsets, damage, producer state and
/// writer positions.
#[derive(Debug)]
pub(crate) struct PartitionState {
    /// Segments and offsets are read when the partition is first used.
    pub(crate) loaded: bool,
    /// Its topic was deleted: nothing is written any more.
    pub(crate) deleted: bool,
    /// Offset floor set by a repair: the offsets below it that no batch holds are a gap.
    pub(crate) floor: i64,
    /// Ranges `from..to` a repair dropped from sealed segments (damaged batches): reads step
    /// over them as over a compacted topic's gaps.
    pub(crate) gaps: BTreeMap<i64, i64>,
    /// Set when the partition loaded only in part (its newest segment cannot be read, or
    /// flushed offsets are missing): `(the first offset not intact, why)`. What comes before
    /// is served; reads from there, writes and ListOffsets answer a storage error until
    /// `kafkabox repair`.
    pub(crate) damage: Option<(i64, String)>,
    /// Damage a read ran into after the load (a sealed segment's files): reported, not
    /// refused, since the newest segment takes writes as before.
    pub(crate) seen_damage: Option<(i64, String)>,
    pub(crate) next_offset: i64,
    pub(crate) log_start: i64,
    pub(crate) producers: HashMap<i64, ProducerEntry>,
    /// The open transactions on the partition: (first offset, producer id), oldest first;
    /// what `producers` says, kept ordered for the last stable offset.
    pub(crate) ongoing: BTreeSet<(i64, i64)>,
    /// Positions of broker-internal writers (the dead-letter stage): writer key -> the source
    /// offset up to which its appends are stored.
    pub(crate) writers: HashMap<Vec<u8>, i64>,
    /// Oldest first; the last one is written unless sealed.
    pub(crate) segments: Vec<Arc<Segment>>,
}

impl PartitionState {
    /// Rebuilds `ongoing` from the producers' state (after a load).
    pub(crate) fn rebuild_ongoing(&mut self) {
        self.ongoing = self
            .producers
            .iter()
            .filter_map(|(id, e)| e.txn_first_offset.map(|first| (first, *id)))
            .collect();
    }

    /// Index of the segment holding `offset` (the last one whose base is at or below it).
    pub(crate) fn segment_index(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1)
    }
}

impl PartitionState {
    /// Whether the offsets `from..to`, which no stored batch holds, are a gap a repair left
    /// (below its offset floor, or a dropped range of a sealed segment).
    pub(crate) fn is_gap(&self, from: i64, to: i64) -> bool {
        if to <= from {
            return false;
        }
        if to <= self.floor {
            return true;
        }
        // Gaps of neighbouring segments touch: follow them.
        let mut at = from;
        for _ in 0..=self.gaps.len() {
            match self.gaps.range(..=at).next_back() {
                Some((_, end)) if *end >= at => {
                    if to <= *end {
                        return true;
                    }
                    if *end == at {
                        return false;
                    }
                    at = *end;
                }
                _ => return false,
            }
        }
        false
    }
}

/// What read_committed readers may see of `part`: up to the first offset of its oldest open
/// transaction, and never past the high watermark (Kafka's last stable offset).
pub(crate) fn last_stable(part: &Partition, st: &PartitionState) -> i64 {
    let hw = high_watermark(part, st);
    match st.ongoing.first() {
        Some((first, _)) => (*first).max(st.log_start).min(hw),
        None => hw,
    }
}

/// What readers may see of `part`: up to its high watermark (never past the log end, which a
/// repair's floor or a deleted topic may have moved).
pub(crate) fn high_watermark(part: &Partition, st: &PartitionState) -> i64 {
    part.high_watermark
        .load(Ordering::SeqCst)
        .max(st.log_start)
        .min(st.next_offset)
}

impl Store {
    /// The state of `part`, loading its segments when it is first used.
    pub(crate) fn part_state<'a>(
        &self,
        part: &'a Partition,
    ) -> Result<std::sync::MutexGuard<'a, PartitionState>, StoreError> {
        let mut st = part.state.lock().map_err(|_| StoreError::Closed)?;
        if !st.loaded {
            segment::guarded(
                || format!("partition {}-{}", part.topic, part.index),
                || self.load(part, &mut st),
            )
            .inspect_err(|_| {
                // What the failed load opened is closed, so the next try opens it again.
                self.inner
                    .open_segments
                    .forget_under(&segment::partition_dir(&self.inner.config.path, part.id));
            })
            .map_err(|e| match e {
                StoreError::Corrupt(m) => {
                    StoreError::Corrupt(format!("partition {}-{}: {m}", part.topic, part.index))
                }
                other => other,
            })?;
            st.loaded = true;
        }
        Ok(st)
    }

    /// Loads every partition now (a background task after start-up does this, so the first
    /// requests do not wait for it). Returns the first error with its partition.
    pub fn load_all(&self) -> Result<(), StoreError> {
        for topic in self.topics() {
            for part in &topic.partitions {
                drop(self.part_state(part)?);
            }
        }
        Ok(())
    }

    /// Reads a partition's segments, offsets and producer state.
    fn load(&self, part: &Partition, st: &mut PartitionState) -> Result<(), StoreError> {
        let inner = &self.inner;
        let pid = part.id;
        let root = &inner.config.path;
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut damage: Option<(i64, String)> = None;
        if let Some(legacy) = self.legacy_segment(pid)? {
            segments.push(Arc::new(legacy));
        }
        let mut sealed = HashMap::new();
        for item in inner.segments.scan_prefix(pid.to_be_bytes()) {
            let (k, v) = item?;
            if k.len() == 12 {
                sealed.insert(read_u64(&k[4..])? as i64, Summary::decode(&v)?);
            }
        }
        // One generation per base offset: the one its summary names (compaction writes a new
        // generation whole before naming it), else the only one; others are leftovers.
        let mut bases: Vec<i64> = Vec::new();
        for (base, generation) in segment::list_segments(root, pid)? {
            let wanted = sealed.get(&base).map(|s| s.generation).unwrap_or(0);
            if generation != wanted {
                let dir = segment::segment_dir(root, pid, base, generation);
                tracing::info!(path = %dir.display(), "removing a segment generation left by compaction");
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| StoreError::Io(format!("removing {}: {e}", dir.display())))?;
                continue;
            }
            bases.push(base);
        }
        for (i, &base) in bases.iter().enumerate() {
            let generation = sealed.get(&base).map(|s| s.generation).unwrap_or(0);
            let dir = segment::segment_dir(root, pid, base, generation);
            let seg = match sealed.get(&base) {
                Some(summary) => Arc::new(Segment::new(base, Place::Dir(dir), *summary, true)),
                None => {
                    let created = std::fs::metadata(&dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or_else(now_ms);
                    let seg = Arc::new(Segment::new(
                        base,
                        Place::Dir(dir),
                        Summary::empty(base),
                        false,
                    ));
                    let scanned = segment::guarded(
                        || format!("the segment at {base}"),
                        || {
                            let db = inner.open_segments.get(&seg)?;
                            scan_summary(&db.log, pid, base)
                        },
                    );
                    let mut summary = match scanned {
                        Ok(s) => s,
                        Err(e) if i + 1 == bases.len() => {
                            // The newest segment cannot be read: what comes before it is
                            // still served; the partition is reported damaged from here.
                            inner.open_segments.forget(&seg);
                            tracing::error!(topic = %part.topic, partition = part.index, base, error = %e, "the newest segment of the partition cannot be read; `kafkabox check` lists the damage, `kafkabox repair` keeps what is intact");
                            damage.get_or_insert((
                                base,
                                format!(
                                    "the newest segment, at offset {base}, cannot be read: {e}"
                                ),
                            ));
                            Summary::empty(base)
                        }
                        Err(e) => return Err(e),
                    };
                    if summary.bytes > 0 {
                        summary.created_ms = created;
                    }
                    seg.set_summary(summary);
                    if i + 1 < bases.len() {
                        // A crash between rolling and recording the old segment's summary.
                        inner
                            .segments
                            .insert(segment_key(pid, base), &summary.encode()[..])?;
                        seg.seal();
                    }
                    seg
                }
            };
            if let Some(prev) = segments.last() {
                if prev.summary().end > base {
                    return Err(StoreError::Corrupt(format!(
                        "segment at {base} overlaps the one before it, which ends at {}",
                        prev.summary().end
                    )));
                }
            }
            segments.push(seg);
        }
        let marker = match inner.state.get(log_start_key(pid))? {
            Some(v) => Some(read_u64(&v)? as i64),
            None => None,
        };
        let floor = match inner.state.get(offset_floor_key(pid))? {
            Some(v) => read_u64(&v)? as i64,
            None => 0,
        };
        let first = segments.first().map(|s| s.base).unwrap_or(0);
        let end = segments.last().map(|s| s.summary().end).unwrap_or(0);
        let log_start = first.max(marker.unwrap_or(0));
        let next_offset = end.max(marker.unwrap_or(0)).max(floor);
        if let Some(v) = inner.state.get(durable_end_key(pid))? {
            let durable = read_u64(&v)? as i64;
            if durable > next_offset && damage.is_none() {
                tracing::error!(topic = %part.topic, partition = part.index, next_offset, durable, "flushed offsets are missing from the partition's segment files; `kafkabox check` lists the damage, `kafkabox repair` keeps what is intact");
                damage = Some((
                    next_offset,
                    format!("offsets {next_offset}..{durable} were stored and flushed but are missing from its segment files (damaged or deleted); `kafkabox repair` keeps what is intact without reusing offsets"),
                ));
            }
        }
        let mut gaps = BTreeMap::new();
        for item in inner.state.scan_prefix(gap_prefix(pid)) {
            let (k, v) = item?;
            if k.len() == 20 {
                gaps.insert(read_u64(&k[12..])? as i64, read_u64(&v)? as i64);
            }
        }
        // Producer state and writer positions: the newest segment of its own, else the legacy
        // keys.
        let mut producers = HashMap::new();
        let mut writers = HashMap::new();
        // A damaged partition takes no writes: its producer state is not needed.
        let state_tree = match segments.iter().rev().find(|s| !s.is_legacy()) {
            Some(seg) if damage.is_none() => Some(inner.open_segments.get(seg)?),
            _ => None,
        };
        let tree = match &state_tree {
            Some(db) => &db.log,
            None => &inner.state,
        };
        for item in tree.scan_prefix(producer_prefix(pid)) {
            let (k, v) = item?;
            if k.len() != 20 {
                continue;
            }
            let producer_id = read_u64(&k[12..20])? as i64;
            let entry = ProducerEntry::decode(&v)
                .ok_or_else(|| StoreError::Corrupt(format!("producer state of {producer_id}")))?;
            producers.insert(producer_id, entry);
        }
        for item in tree.scan_prefix(writer_prefix(pid)) {
            let (k, v) = item?;
            writers.insert(k[12..].to_vec(), read_u64(&v)? as i64);
        }
        drop(state_tree);
        if damage.is_some() {
            producers.clear();
            writers.clear();
        }
        st.segments = segments;
        st.gaps = gaps;
        st.damage = damage;
        st.seen_damage = None;
        st.next_offset = next_offset;
        // What was loaded is what a restart keeps.
        part.high_watermark.store(next_offset, Ordering::SeqCst);
        st.floor = floor;
        st.log_start = log_start;
        st.producers = producers;
        st.rebuild_ongoing();
        st.writers = writers;
        // Segments wholly below the log start (a crash during retention) go now.
        while st.segments.len() > 1 {
            let Some(first) = st.segments.first().cloned() else {
                break;
            };
            if first.is_legacy() || first.summary().end > st.log_start {
                break;
            }
            self.drop_segment(pid, &first)?;
            st.segments.remove(0);
        }
        Ok(())
    }

    /// The legacy segment of partition `pid` (batches in the meta `log` tree), if it has one.
    fn legacy_segment(&self, pid: u32) -> Result<Option<Segment>, StoreError> {
        let log = &self.inner.state;
        let range = chunk_key(pid, 0, 0)..chunk_key_end(pid);
        let Some(last) = log.range(range.clone()).next_back() else {
            return Ok(None);
        };
        let (k, _) = last?;
        let (last_base, _) = parse_chunk_key(&k)?;
        let first_chunk = log
            .get(chunk_key(pid, last_base, 0))?
            .ok_or_else(|| StoreError::Corrupt(format!("no first chunk at {last_base}")))?;
        let h = stored_header(&first_chunk)?;
        let first = match log.range(range).next() {
            Some(item) => parse_chunk_key(&item?.0)?.0,
            None => 0,
        };
        // Bytes and timestamps of legacy batches are read when needed (retention scans them).
        let summary = Summary {
            end: h.last_offset() + 1,
            bytes: 0,
            max_ts: i64::MAX,
            created_ms: 0,
            generation: 0,
            aborted: 0,
        };
        Ok(Some(Segment::legacy(
            first,
            summary,
            self.inner.db.clone(),
            log.clone(),
        )))
    }

    /// The segment the next batch of `len` bytes goes to, rolling the newest one when it is
    /// full or old (and sealing it). Returns the segment, its database, and whether it is
    /// empty (its first write carries the snapshot of producer state and writer positions).
    fn writable_segment(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        len: usize,
    ) -> Result<(Arc<Segment>, Arc<SegDb>, bool), StoreError> {
        let inner = &self.inner;
        if st.deleted {
            return Err(StoreError::UnknownTopic(part.topic.clone()));
        }
        let policy = part.policy();
        if let Some(last) = st.segments.last().cloned() {
            if !last.is_sealed() {
                let s = last.summary();
                let full = s.bytes + len as u64 > policy.bytes;
                let old = now_ms().saturating_sub(s.created_ms) >= policy.ms;
                if s.bytes == 0 || !(full || old) {
                    let db = inner.open_segments.get_for_write(&last)?;
                    return Ok((last, db, s.bytes == 0));
                }
                self.seal(part.id, &last)?;
            }
        }
        let base = st.next_offset;
        let dir = segment::segment_dir(&inner.config.path, part.id, base, 0);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let seg = Arc::new(Segment::new(
            base,
            Place::Dir(dir),
            Summary::empty(base),
            false,
        ));
        let db = inner.open_segments.get_for_write(&seg)?;
        st.segments.push(seg.clone());
        tracing::debug!(topic = %part.topic, partition = part.index, base, "rolled a new segment");
        Ok((seg, db, true))
    }

    /// Seals `seg`: flushed, its summary recorded in the meta database, its database closed.
    pub(crate) fn seal(&self, pid: u32, seg: &Arc<Segment>) -> Result<(), StoreError> {
        let inner = &self.inner;
        if seg.is_sealed() {
            return Ok(());
        }
        inner.open_segments.get(seg)?.flush()?;
        inner
            .segments
            .insert(segment_key(pid, seg.base), &seg.summary().encode()[..])?;
        seg.seal();
        inner.open_segments.close(seg);
        Ok(())
    }

    /// Removes a segment's summary and files (its records are already below the log start).
    pub(crate) fn drop_segment(&self, pid: u32, seg: &Arc<Segment>) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.open_segments.forget(seg);
        inner.segments.remove(segment_key(pid, seg.base))?;
        match seg.dir() {
            Some(dir) => match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::Io(format!("removing {}: {e}", dir.display()))),
            },
            None => {
                // The legacy segment: its batches are keys of the meta log tree.
                loop {
                    let mut b = sled::Batch::default();
                    let mut n = 0;
                    for item in inner
                        .state
                        .range(chunk_key(pid, 0, 0)..chunk_key_end(pid))
                        .take(10_000)
                    {
                        b.remove(item?.0);
                        n += 1;
                    }
                    if n == 0 {
                        return Ok(());
                    }
                    inner.state.apply_batch(b)?;
                }
            }
        }
    }

    /// Writes `b` (chunks of a batch at `base_offset` and the state that goes with it) to the
    /// segment the batch belongs in, with the snapshot of producer state and writer positions
    /// when the segment is new, and updates the segment's summary.
    pub(crate) fn write_batch(
        &self,
        part: &Partition,
        st: &mut PartitionState,
        bytes: &[u8],
        h: &BatchHeader,
        extra: &[StateEntry],
    ) -> Result<(), StoreError> {
        if let Some((from, what)) = &st.damage {
            return Err(StoreError::Corrupt(format!(
                "partition {}-{} is damaged from offset {from} ({what}): writes are refused until `kafkabox repair`",
                part.topic, part.index
            )));
        }
        // Chunk keys and sled's own framing come on top of the batch.
        self.inner.space.reserve(bytes.len() as u64 + 4096)?;
        let (seg, db, fresh) = self.writable_segment(part, st, bytes.len())?;
        let mut b = sled::Batch::default();
        if fresh {
            for (id, entry) in &st.producers {
                b.insert(&producer_key(part.id, *id)[..], entry.encode());
            }
            for (w, pos) in &st.writers {
                b.insert(writer_key(part.id, w), &(*pos as u64).to_be_bytes());
            }
        }
        // The batch's own entries come after the snapshot and win over it.
        chunk_writes(&mut b, part.id, st.next_offset, bytes)?;
        for (k, v) in extra {
            b.insert(k.as_slice(), v.as_slice());
        }
        db.log.apply_batch(b)?;
        self.mark_dirty(&db);
        drop(db);
        let mut s = seg.summary();
        s.end = st.next_offset + i64::from(h.last_offset_delta) + 1;
        s.bytes += bytes.len() as u64;
        s.max_ts = s.max_ts.max(h.max_timestamp);
        if s.created_ms == 0 {
            s.created_ms = now_ms();
        }
        seg.set_summary(s);
        if let Ok(mut ends) = self.inner.ends.lock() {
            ends.insert(part.id, (s.end, part.high_watermark.clone()));
        }
        // Past the recycling size, flush now rather than at the next interval, so what sled
        // holds of unflushed writes stays bounded under acks=1 too.
        if self.inner.open_segments.wrote(&seg, bytes.len() as u64) {
            self.inner.request_flush();
        }
        Ok(())
    }

    /// Appends one validated batch (`bytes`, header `h`) to `part`. The base offset is assigned
    /// here and written into the stored copy; idempotent batches are checked against the
    /// producer's sequence numbers and stored atomically with the updated producer state.
    pub fn append(
        &self,
        part: &Partition,
        bytes: &[u8],
        h: &BatchHeader,
    ) -> Result<Appended, AppendError> {
        let inner = &self.inner;
        let mut st = self.part_state(part)?;
        let mut producer_update = None;
        if h.is_idempotent() {
            let last_seq = h.last_sequence();
            let entry = st.producers.get(&h.producer_id);
            if entry.is_none() && !self.producer_id_issued(h.producer_id) {
                return Err(AppendError::UnknownProducerId(h.producer_id));
            }
            match ProducerEntry::check(entry, h.producer_epoch, h.base_sequence, last_seq) {
                SeqCheck::Append => {}
                SeqCheck::Duplicate { base_offset } => {
                    return Ok(Appended {
                        base_offset,
                        log_start_offset: st.log_start,
                        duplicate: true,
                        write_seq: inner.written.load(Ordering::SeqCst),
                    })
                }
                SeqCheck::OutOfOrder { expected, got } => {
                    return Err(AppendError::OutOfOrderSequence { expected, got })
                }
                SeqCheck::StaleEpoch { current, got } => {
                    return Err(AppendError::InvalidProducerEpoch { current, got })
                }
            }
            let mut updated = entry.cloned().unwrap_or_else(|| ProducerEntry {
                epoch: h.producer_epoch,
                ..ProducerEntry::default()
            });
            // Kafka's ProducerAppendInfo: a producer with an open transaction writes only
            // transactional batches; its first transactional batch opens the transaction.
            match (updated.txn_first_offset, h.is_transactional()) {
                (Some(_), false) => {
                    return Err(AppendError::InvalidTxnState(format!(
                        "producer {} has an open transaction on the partition: only transactional batches are accepted",
                        h.producer_id
                    )))
                }
                (None, true) => updated.txn_first_offset = Some(st.next_offset),
                _ => {}
            }
            updated.record(
                h.producer_epoch,
                BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq,
                    base_offset: st.next_offset,
                    last_offset_delta: h.last_offset_delta,
                },
                now_ms(),
            );
            producer_update = Some(updated);
        }
        let base_offset = st.next_offset;
        let extra: Vec<StateEntry> = producer_update
            .iter()
            .map(|e| (producer_key(part.id, h.producer_id).to_vec(), e.encode()))
            .collect();
        self.write_batch(part, &mut st, bytes, h, &extra)?;
        if let Some(entry) = producer_update {
            if let Some(first) = entry.txn_first_offset {
                st.ongoing.insert((first, h.producer_id));
            }
            st.producers.insert(h.producer_id, entry);
        }
        Ok(self.appended(st, base_offset, h))
    }

    /// Bookkeeping after a batch at `base_offset` was written under the partition lock `st`:
    /// advance the log end, count the write, release the lock, wake long polls.
    pub(crate) fn appended(
        &self,
        mut st: std::sync::MutexGuard<'_, PartitionState>,
        base_offset: i64,
        h: &BatchHeader,
    ) -> Appended {
        st.next_offset = base_offset + i64::from(h.last_offset_delta) + 1;
        let write_seq = self.inner.written.fetch_add(1, Ordering::SeqCst) + 1;
        let log_start_offset = st.log_start;
        drop(st);
        // Readers see the batch once a flush covers it (the high watermark): start one now,
        // whatever the producer's acks (group commit: one flush covers every write before it).
        self.inner.request_flush();
        Appended {
            base_offset,
            log_start_offset,
            duplicate: false,
            write_seq,
        }
    }

    /// Segment databases open now (bounded by `StoreConfig::max_open_segments`).
    pub fn open_segments(&self) -> usize {
        self.inner.open_segments.open_count()
    }
}

/// The summary of the segment at `base` of partition `pid` read off its batches.
fn scan_summary(tree: &sled::Tree, pid: u32, base: i64) -> Result<Summary, StoreError> {
    let mut s = Summary::empty(base);
    for h in tree_headers(tree, pid, base, i64::MAX) {
        let h = h?;
        s.end = h.last_offset() + 1;
        s.bytes += h.total_len() as u64;
        s.max_ts = s.max_ts.max(h.max_timestamp);
    }
    s.aborted = tree.scan_prefix(aborted_prefix(pid)).count() as u64;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafkabox_protocol::batch::{self, ProducerFields};

    use super::*;
    use crate::test_support::{batch, read_all, segment_per_batch, seq_batch};
    use crate::{Offsets, StoreConfig};

    #[tokio::test]
    async fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let cluster;
        {
            let s = Store::open(cfg.clone()).unwrap();
            cluster = s.cluster_id().to_string();
            assert_eq!(cluster.len(), 22);
            let t = s.create_topic("t", 2, BTreeMap::new()).unwrap();
            let p = &t.partitions[1];
            let (b, h) = batch(3, ProducerFields::NONE);
            let a1 = s.append(p, &b, &h).unwrap();
            let a2 = s.append(p, &b, &h).unwrap();
            assert_eq!((a1.base_offset, a2.base_offset), (0, 3));
            s.wait_durable(a2.write_seq).await.unwrap();
            let mut out = BytesMut::new();
            // Offset 4 is in the middle of the second batch: the whole batch comes back.
            s.read(p, 4, 1 << 20, true, &mut out).unwrap().unwrap();
            let h2 = batch::parse_header(&out).unwrap();
            assert_eq!(h2.base_offset, 3);
            assert_eq!(out.len(), b.len());
            assert_eq!(&out[21..], &b[21..]);
            // Out of range.
            assert!(s.read(p, 7, 100, true, &mut out).unwrap().is_none());
            s.close().unwrap();
        }
        let s = Store::open(cfg).unwrap();
        assert_eq!(s.cluster_id(), cluster);
        let t = s.topic("t").unwrap();
        assert_eq!(
            s.offsets(&t.partitions[1]),
            Offsets {
                log_start: 0,
                log_end: 6
            }
        );
        assert_eq!(
            s.offsets(&t.partitions[0]),
            Offsets {
                log_start: 0,
                log_end: 0
            }
        );
        assert!(matches!(
            s.create_topic("t", 1, BTreeMap::new()),
            Err(StoreError::TopicExists(_))
        ));
    }

    #[tokio::test]
    async fn segments_roll_by_size_and_reads_cross_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let (probe, _) = batch(3, ProducerFields::NONE);
        // Two batches of 3 records fit a segment; the third rolls a new one.
        let configs =
            BTreeMap::from([("segment.bytes".to_string(), (2 * probe.len()).to_string())]);
        let producer;
        let part_id;
        {
            let s = Store::open(cfg.clone()).unwrap();
            producer = s.new_producer_id(b"User:ANONYMOUS").unwrap();
            let t = s.create_topic("t", 1, configs).unwrap();
            let p = &t.partitions[0];
            part_id = p.id;
            for i in 0..10 {
                let (b, h) = seq_batch(3, producer, i * 3);
                assert_eq!(b.len(), probe.len());
                assert_eq!(s.append(p, &b, &h).unwrap().base_offset, i64::from(i) * 3);
            }
            s.flush().unwrap();
            let bases: Vec<i64> = (0..10).map(|i| i * 3).collect();
            assert_eq!(read_all(&s, p, 0), bases);
            assert_eq!(read_all(&s, p, 7), bases[2..].to_vec());
            assert_eq!(s.partition_size(p).unwrap(), 10 * probe.len() as u64);
            s.close().unwrap();
        }
        let segs = segment::list_segments(dir.path(), part_id).unwrap();
        assert_eq!(segs, vec![(0, 0), (6, 0), (12, 0), (18, 0), (24, 0)]);
        let s = Store::open(cfg).unwrap();
        assert_eq!(s.open_segments(), 0, "opening the store opens no segment");
        let t = s.topic("t").unwrap();
        let p = &t.partitions[0];
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 0,
                log_end: 30
            }
        );
        // Producer state came from the newest segment: a retry of the last batch is a duplicate,
        // the next sequence appends.
        let (b, h) = seq_batch(3, producer, 27);
        let dup = s.append(p, &b, &h).unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, 27);
        let (b, h) = seq_batch(3, producer, 30);
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 30);
        s.flush().unwrap();
        assert_eq!(read_all(&s, p, 25), vec![24, 27, 30]);
        // Timestamp lookups and size retention by whole segments.
        assert_eq!(s.offset_for_timestamp(p, 0).unwrap(), Some((0, 1_000)));
        assert_eq!(
            s.expire_over_size(p, 3 * probe.len() as u64, i64::MAX)
                .unwrap(),
            24
        );
        assert_eq!(s.offsets(p).log_start, 24);
        assert_eq!(read_all(&s, p, 24), vec![24, 27, 30]);
    }

    #[tokio::test]
    async fn open_segment_databases_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.max_open_segments = 3;
        let s = Store::open(cfg).unwrap();
        let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        for i in 0..12 {
            let (b, h) = batch(1, ProducerFields::NONE);
            assert_eq!(s.append(p, &b, &h).unwrap().base_offset, i);
        }
        s.flush().unwrap();
        for i in 0..12 {
            assert_eq!(read_all(&s, p, i).len(), 12 - i as usize);
            assert!(s.open_segments() <= 3, "{} open", s.open_segments());
        }
    }

    #[tokio::test]
    async fn a_data_dir_of_the_single_database_layout_is_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let producer;
        {
            // What kafkabox wrote before segments: batches and producer state in the meta log tree.
            let s = Store::open(cfg.clone()).unwrap();
            producer = s.new_producer_id(b"User:ANONYMOUS").unwrap();
            let t = s.create_topic("old", 1, BTreeMap::new()).unwrap();
            let pid = t.partitions[0].id;
            let mut entry = ProducerEntry::default();
            for i in 0..4i64 {
                let (b, h) = seq_batch(2, producer, (i * 2) as i32);
                let mut w = sled::Batch::default();
                chunk_writes(&mut w, pid, i * 2, &b).unwrap();
                entry.record(
                    0,
                    BatchMeta {
                        first_seq: h.base_sequence,
                        last_seq: h.last_sequence(),
                        base_offset: i * 2,
                        last_offset_delta: h.last_offset_delta,
                    },
                    now_ms(),
                );
                w.insert(&producer_key(pid, producer)[..], entry.encode());
                s.inner.state.apply_batch(w).unwrap();
            }
            s.close().unwrap();
        }
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.topic("old").unwrap();
        let p = &t.partitions[0];
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 0,
                log_end: 8
            }
        );
        assert_eq!(read_all(&s, p, 3), vec![2, 4, 6]);
        // The legacy producer state still detects a retry; new batches go to a segment.
        let (b, h) = seq_batch(2, producer, 6);
        assert!(s.append(p, &b, &h).unwrap().duplicate);
        let (b, h) = seq_batch(2, producer, 8);
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 8);
        s.flush().unwrap();
        assert_eq!(read_all(&s, p, 5), vec![4, 6, 8]);
        assert_eq!(
            segment::list_segments(dir.path(), p.id).unwrap(),
            vec![(8, 0)]
        );
        assert_eq!(s.max_timestamp(p).unwrap(), Some((0, 1_000)));
        // DeleteRecords goes through the legacy batches, then drops them.
        assert_eq!(s.delete_records_before(p, 5).unwrap(), 5);
        assert_eq!(read_all(&s, p, 5), vec![4, 6, 8]);
        assert_eq!(s.delete_records_before(p, 9).unwrap(), 9);
        assert_eq!(read_all(&s, p, 9), vec![8]);
        s.close().unwrap();
        drop(t);
        drop(s);
        let s = Store::open(cfg).unwrap();
        let t = s.topic("old").unwrap();
        let p = &t.partitions[0];
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 9,
                log_end: 10
            }
        );
        // A retry of the batch written after the upgrade is still a duplicate.
        let (b, h) = seq_batch(2, producer, 8);
        assert!(s.append(p, &b, &h).unwrap().duplicate);
    }
}
