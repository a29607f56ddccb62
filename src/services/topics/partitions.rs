//! A partition's log as the Kafka APIs ask about it: its offsets, damage and stored size, the
//! lookups by time of ListOffsets (exact to the record), DeleteRecords, and where the logs
//! live.

use std::path::Path;

use kafkabox_protocol::batch;
use kafkabox_storage::{Offsets, Partition, StoreError};

use super::Topics;
use crate::services::error::{Error, Result};

impl Topics {
    /// The log start and log end (the high watermark) of `part`.
    pub fn offsets(&self, part: &Partition) -> Offsets {
        self.store.offsets(part)
    }

    /// Copies whole stored batches of `part` from the one that holds `offset` into `out`, up to
    /// `max_bytes` (the first one even when larger, with `oversized_first`: KIP-74), never
    /// past the high watermark. `None` when `offset` is outside the log. The Fetch path.
    pub fn read(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<Option<Offsets>, StoreError> {
        self.store
            .read(part, offset, max_bytes, oversized_first, out)
    }

    /// [`Topics::read`] for a read_committed consumer: up to the last stable offset, with the
    /// aborted transactions of what it returns.
    pub fn read_committed(
        &self,
        part: &Partition,
        offset: i64,
        max_bytes: usize,
        oversized_first: bool,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<Option<kafkabox_storage::CommittedRead>, StoreError> {
        self.store
            .read_committed(part, offset, max_bytes, oversized_first, out)
    }

    /// The last stable offset of `part`: the first offset of its oldest open transaction, or
    /// its high watermark.
    pub fn last_stable_offset(&self, part: &Partition) -> std::result::Result<i64, StoreError> {
        self.store.last_stable_offset(part)
    }

    /// A receiver that changes after every append (long-polling fetches wait on it).
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe_appends()
    }

    /// Where `part` is damaged (the first offset that cannot be trusted, and why), if it is.
    pub fn damage(&self, part: &Partition) -> Option<(i64, String)> {
        self.store.damage(part)
    }

    /// Bytes `part` takes in the store (DescribeLogDirs).
    pub fn partition_size(&self, part: &Partition) -> Result<u64> {
        self.store.partition_size(part).map_err(Error::Storage)
    }

    /// The directory that holds every partition's log (DescribeLogDirs' one log dir).
    pub fn log_dir(&self) -> &Path {
        self.store.path()
    }

    /// The first record in the batch at `base` (or later) that satisfies `want`, at or after
    /// the log start.
    fn find_record(
        &self,
        part: &Partition,
        base: i64,
        want: impl Fn(i64) -> bool,
    ) -> Result<Option<(i64, i64)>> {
        let log_start = self.store.offsets(part).log_start;
        let mut buf = bytes::BytesMut::new();
        if self
            .store
            .read(part, base.max(log_start), 1, true, &mut buf)?
            .is_none()
        {
            return Ok(None);
        }
        for b in batch::split_batches(&buf) {
            let (_, bytes) = b.map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))?;
            let (_, records) = batch::decode_batch(bytes, self.config.max_inflated_batch_bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))?;
            for r in records {
                if r.offset >= log_start && want(r.timestamp) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets by time: the earliest offset whose record timestamp is at or after
    /// `timestamp`, with that record's timestamp, exact to the record.
    pub fn offset_for_timestamp(
        &self,
        part: &Partition,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut from = self.store.offsets(part).log_start;
        // The first batch whose max timestamp reaches the target holds the answer, unless the
        // log start cut it: then look further.
        loop {
            let Some((base, _)) = self
                .store
                .offset_for_timestamp_from(part, timestamp, from)?
            else {
                return Ok(None);
            };
            if let Some(found) = self.find_record(part, base, |ts| ts >= timestamp)? {
                return Ok(Some(found));
            }
            let end = self.store.offsets(part).log_end;
            let next = self.store.batch_end(part, base)?;
            if next <= from || next >= end {
                return Ok(None);
            }
            from = next;
        }
    }

    /// ListOffsets -3: the offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(&self, part: &Partition) -> Result<Option<(i64, i64)>> {
        let Some((base, max)) = self.store.max_timestamp(part)? else {
            return Ok(None);
        };
        self.find_record(part, base, |ts| ts == max)
    }

    /// DeleteRecords: moves the log start of `part` to `offset` (-1: the high watermark).
    /// Returns the new low watermark.
    pub fn delete_records(&self, part: &Partition, offset: i64) -> Result<i64> {
        let o = self.store.offsets(part);
        let target = if offset == -1 { o.log_end } else { offset };
        if target < 0 || target > o.log_end {
            return Err(Error::OffsetOutOfRange(format!(
                "Cannot delete records of {}-{} before offset {offset}: the log ends at {}.",
                part.topic, part.index, o.log_end
            )));
        }
        Ok(self.store.delete_records_before(part, target)?)
    }
}
