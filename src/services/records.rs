//! Reading records back for people and tools (the HTTP API's browse, the dead-letter list):
//! whole stored batches decoded, bounded in bytes and count.

use bytes::BytesMut;
use kafkabox_protocol::batch::{self, Record};
use kafkabox_storage::{Partition, Store};

use super::{Error, Result, Services};

/// Most bytes of stored batches read per call.
const READ_BYTES: usize = 4 * 1024 * 1024;

/// Records of `part` from `offset` on, at most `limit`, and the offset after the last one read
/// (where the next page starts). Stops at the log end; a batch that cannot be decoded is an
/// error naming its offsets.
pub fn read(
    store: &Store,
    part: &Partition,
    offset: i64,
    limit: usize,
    inflate_limit: usize,
) -> Result<(Vec<Record>, i64)> {
    let offsets = store.offsets(part);
    let stable = store.last_stable_offset(part)?.min(offsets.log_end);
    let mut next = offset.max(offsets.log_start);
    let mut out = Vec::new();
    while out.len() < limit && next < stable {
        let mut buf = BytesMut::new();
        let Some(read) = store.read_committed(part, next, READ_BYTES, true, &mut buf)? else {
            break;
        };
        if buf.is_empty() {
            break;
        }
        let mut committed = batch::CommittedFilter::new(
            read.aborted.iter().map(|t| (t.producer_id, t.first_offset)),
        );
        let before = next;
        for b in batch::split_batches(&buf) {
            let (h, bytes) = b.map_err(|e| {
                Error::Storage(kafkabox_storage::StoreError::Corrupt(format!(
                    "stored batches: {e}"
                )))
            })?;
            if !committed.keep(&h, bytes) {
                next = next.max(h.last_offset() + 1);
                continue;
            }
            let (_, records) = batch::decode_batch(bytes, inflate_limit).map_err(|e| {
                Error::InvalidRequest(format!(
                    "the batch at offsets {} to {} cannot be decoded: {e}",
                    h.base_offset,
                    h.last_offset()
                ))
            })?;
            for r in records {
                if r.offset >= next && out.len() < limit {
                    next = r.offset + 1;
                    out.push(r);
                }
            }
            if out.len() >= limit {
                break;
            }
            next = next.max(h.last_offset() + 1);
        }
        if next == before {
            break;
        }
    }
    Ok((out, next))
}

impl Services {
    /// Records of `topic`/`partition` from `offset`, at most `limit` (see [`read`]).
    pub fn read_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        limit: usize,
    ) -> Result<(Vec<Record>, i64)> {
        let t = self
            .topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopic(format!("no topic '{topic}'")))?;
        let part = t.partition(partition).ok_or_else(|| {
            Error::UnknownTopicOrPartition(format!("topic '{topic}' has no partition {partition}"))
        })?;
        read(
            &self.store,
            part,
            offset,
            limit,
            self.config.max_inflated_batch_bytes,
        )
    }
}
