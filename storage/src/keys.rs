//! The key layout of the store's sled trees, in one place: the keys of a partition in a
//! segment's (and the legacy meta) `log` tree, of the meta `segments` and `meta` trees and of
//! appliance state (builders, parsers, prefixes); how a batch is stored as chunks; and how
//! stored batch headers are read back.
//!
//! Every key of a partition starts with its id (u32 BE), and the 8 bytes after it order the
//! kinds of keys: chunk keys (a base offset, below 2^63, so its first byte is below 0x80), then
//! aborted transactions (0xf8), repair gaps (0xf9), the offset floor (0xfa), the durable end (0xfb), writer positions (0xfc),
//! the log start (0xfd), consumer offsets (0xfe) and producer state (0xff). Appliance state
//! sits under the partition id no partition has (`[0xff; 4]`).

use bytes::BytesMut;
use kafkabox_protocol::batch::{self, BatchHeader};

use crate::StoreError;

/// Stored batches are split into values of at most this size. Measured on this machine (sled
/// 0.34.7, 256 MiB cache, flush every 5 ms, 6 GiB written): 1 MiB values (librdkafka's batch
/// size) made the process RSS grow with every byte written (2.1 GiB RSS after 2 GiB, at 152-161
/// MiB/s, whatever the cache setting or segment size), while 64 KiB values held RSS at 537 MiB,
/// wrote 248 MiB/s, took 1.31x the bytes on disk and reopened in 1.1 s. 32 KiB values with the
/// default 512 KiB segments grew without bound again; 128 KiB grew too.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Key of chunk `chunk` of the batch at `base_offset` in partition `pid`.
pub(crate) fn chunk_key(pid: u32, base_offset: i64, chunk: u16) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..12].copy_from_slice(&(base_offset as u64).to_be_bytes());
    k[12..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Exclusive upper bound of partition `pid`'s chunk keys (offsets are below 2^63).
pub(crate) fn chunk_key_end(pid: u32) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4] = 0x80;
    k
}

/// (base offset, chunk index) of a chunk key; anything else on disk is corruption.
pub(crate) fn parse_chunk_key(k: &[u8]) -> Result<(i64, u16), StoreError> {
    if k.len() != 14 {
        return Err(StoreError::Corrupt(format!(
            "log key of {} bytes, expected 14",
            k.len()
        )));
    }
    let base = read_u64(&k[4..12])? as i64;
    Ok((base, u16::from_be_bytes([k[12], k[13]])))
}

/// Adds the sled writes that store `bytes` as the batch at `base_offset` to `b`: chunks of at most
/// [`CHUNK_BYTES`], the first with the base offset and leader epoch rewritten (only it is
/// copied; the rest go to sled straight from `bytes`).
pub(crate) fn chunk_writes(
    b: &mut sled::Batch,
    pid: u32,
    base_offset: i64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    if chunk_count(bytes.len()) > usize::from(u16::MAX) + 1 {
        return Err(StoreError::Corrupt(format!(
            "batch of {} bytes is too large to store",
            bytes.len()
        )));
    }
    let first_len = bytes.len().min(CHUNK_BYTES);
    let mut first = BytesMut::from(&bytes[..first_len]);
    batch::set_base_offset(&mut first, base_offset);
    batch::set_leader_epoch(&mut first, 0);
    b.insert(&chunk_key(pid, base_offset, 0)[..], first.as_ref());
    for (i, chunk) in bytes[first_len..].chunks(CHUNK_BYTES).enumerate() {
        b.insert(&chunk_key(pid, base_offset, (i + 1) as u16)[..], chunk);
    }
    Ok(())
}

/// Number of chunks a batch of `len` bytes is stored in.
pub(crate) fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES).max(1)
}

/// Key of producer `producer_id`'s state (epoch, recent sequence numbers) on partition `pid`:
/// after every other key of the partition. (The producer-id secret is another thing:
/// [`META_PRODUCER_ID_SECRET`].)
pub(crate) fn producer_key(pid: u32, producer_id: i64) -> [u8; 20] {
    let mut k = [0xffu8; 20];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[12..].copy_from_slice(&producer_id.to_be_bytes());
    k
}

pub(crate) fn producer_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xffu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of consumer `name`'s committed offset on partition `pid`: between the chunk keys
/// (offset bytes below 0x80) and the producer keys (0xff).
pub(crate) fn consumer_key(pid: u32, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + name.len());
    k.extend_from_slice(&pid.to_be_bytes());
    k.extend_from_slice(&[0xfe; 8]);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of partition `pid`'s log start offset when it was moved past the first stored batch
/// (DeleteRecords): between the chunk keys and the consumer keys.
pub(crate) fn log_start_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfdu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of partition `pid`'s durable log end: written with every flush that covers new batches
/// of the partition, after their segment was flushed. A log that ends below it at load has lost
/// acknowledged records (damaged or deleted segment files).
pub(crate) fn durable_end_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfbu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of partition `pid`'s offset floor, written by `repair` when it truncates a damaged log:
/// the next append starts there at least, so offsets are never reused.
pub(crate) fn offset_floor_key(pid: u32) -> [u8; 12] {
    let mut k = [0xfau8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of the aborted transaction whose ABORT marker is at `last_offset` in partition `pid`
/// (Kafka's `.txnindex` entry, kept in the marker's segment). The value: producer id, first
/// offset and the last stable offset when it was aborted (8 bytes each).
pub(crate) fn aborted_key(pid: u32, last_offset: i64) -> [u8; 20] {
    let mut k = [0xf8u8; 20];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[12..].copy_from_slice(&(last_offset as u64).to_be_bytes());
    k
}

pub(crate) fn aborted_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xf8u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of a gap of partition `pid` that a repair left (`from`; the value is its end): the
/// dropped batches of a damaged sealed segment.
pub(crate) fn gap_key(pid: u32, from: i64) -> [u8; 20] {
    let mut k = [0xf9u8; 20];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[12..].copy_from_slice(&(from as u64).to_be_bytes());
    k
}

pub(crate) fn gap_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xf9u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// Key of writer `writer`'s position in a segment of partition `pid`: after the chunk keys,
/// before the producer keys.
pub(crate) fn writer_key(pid: u32, writer: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + writer.len());
    k.extend_from_slice(&pid.to_be_bytes());
    k.extend_from_slice(&[0xfc; 8]);
    k.extend_from_slice(writer);
    k
}

pub(crate) fn writer_prefix(pid: u32) -> [u8; 12] {
    let mut k = [0xfcu8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k
}

/// What an in-process writer (a stage appending to another partition) is called in the writer
/// positions of the partition it appends to: the source partition and the stage.
pub(crate) fn writer_name(source: u32, stage: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + stage.len());
    k.extend_from_slice(&source.to_be_bytes());
    k.extend_from_slice(stage.as_bytes());
    k
}

/// Key of a sealed segment's summary in the meta `segments` tree.
pub(crate) fn segment_key(pid: u32, base: i64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..].copy_from_slice(&(base as u64).to_be_bytes());
    k
}

/// Every key of partition `pid` (chunks, log start, consumer offsets, producer state) starts
/// with these four bytes.
pub(crate) fn partition_prefix(pid: u32) -> [u8; 4] {
    pid.to_be_bytes()
}

/// Prefix of the appliance's own state in the meta `log` tree (profiles and the like): a partition
/// id no partition will have, so such state can be committed in the same `apply_batch` as a
/// consumer offset.
pub(crate) const APP_STATE_PREFIX: [u8; 4] = [0xff; 4];

pub(crate) fn app_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&APP_STATE_PREFIX);
    k.extend_from_slice(key);
    k
}

// Keys of the meta `meta` tree.
pub(crate) const META_CLUSTER_ID: &[u8] = b"cluster_id";
pub(crate) const META_NEXT_PARTITION: &[u8] = b"next_partition_id";
pub(crate) const META_NEXT_PRODUCER: &[u8] = b"next_producer_id";
/// The sequence number of the next producer id (ids of
/// [`Store::new_producer_id`](crate::Store::new_producer_id)).
pub(crate) const META_NEXT_PRODUCER_SEQ: &[u8] = b"next_producer_seq";
/// The data dir's secret key for producer ids' HMACs.
pub(crate) const META_PRODUCER_ID_SECRET: &[u8] = b"producer_id_key";
pub(crate) const META_BROKER_CONFIGS: &[u8] = b"broker_configs";

pub(crate) fn read_u64(v: &[u8]) -> Result<u64, StoreError> {
    let a: [u8; 8] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", v.len())))?;
    Ok(u64::from_be_bytes(a))
}

/// The header of partition `pid`'s batch at `base` in `tree` (its first chunk).
pub(crate) fn header_in(tree: &sled::Tree, pid: u32, base: i64) -> Result<BatchHeader, StoreError> {
    match tree.get(chunk_key(pid, base, 0))? {
        Some(v) => stored_header(&v),
        None => Err(StoreError::Corrupt(format!(
            "no first chunk for the batch at {base}"
        ))),
    }
}

/// The headers of partition `pid`'s batches in `tree` with base offsets in `from..to`.
pub(crate) fn tree_headers(
    tree: &sled::Tree,
    pid: u32,
    from: i64,
    to: i64,
) -> impl Iterator<Item = Result<BatchHeader, StoreError>> {
    let end = if to == i64::MAX {
        chunk_key_end(pid)
    } else {
        chunk_key(pid, to, 0)
    };
    tree.range(chunk_key(pid, from.max(0), 0)..end)
        .filter_map(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((k, v)) => match parse_chunk_key(&k) {
                Err(e) => Some(Err(e)),
                Ok((_, 0)) => Some(stored_header(&v)),
                Ok(_) => None,
            },
        })
}

/// The header of a batch read back from the log; a short one means the store is corrupt.
pub(crate) fn stored_header(v: &[u8]) -> Result<BatchHeader, StoreError> {
    batch::parse_header(v).map_err(|e| StoreError::Corrupt(format!("stored batch: {e}")))
}

#[cfg(test)]
mod tests {
    use kafkabox_protocol::batch::{encode_uncompressed, validate_produce_batch, ProducerFields};

    use super::*;
    use crate::test_support::{batch, segment_per_batch};
    use crate::{Offsets, Store, StoreConfig};

    #[tokio::test]
    async fn large_batches_are_chunked_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let big = vec![0xabu8; 5 * CHUNK_BYTES + 123];
        let b = encode_uncompressed(&[(Some(b"k"), Some(&big))], 1_000, ProducerFields::NONE);
        let h = validate_produce_batch(&b, 1 << 24, None).unwrap();
        assert_eq!(chunk_count(b.len()), 6);
        {
            let s = Store::open(cfg.clone()).unwrap();
            let t = s.create_topic("big", 1, segment_per_batch()).unwrap();
            let p = &t.partitions[0];
            let (small, sh) = batch(2, ProducerFields::NONE);
            assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 0);
            assert_eq!(s.append(p, &small, &sh).unwrap().base_offset, 1);
            let late =
                encode_uncompressed(&[(Some(b"k"), Some(&big))], 9_000, ProducerFields::NONE);
            let lh = validate_produce_batch(&late, 1 << 24, None).unwrap();
            assert_eq!(s.append(p, &late, &lh).unwrap().base_offset, 3);
            s.flush().unwrap();
            let mut out = BytesMut::new();
            s.read(p, 0, 1 << 24, true, &mut out).unwrap().unwrap();
            let got: Vec<(i64, usize)> = batch::split_batches(&out)
                .map(|r| r.map(|(h, bytes)| (h.base_offset, bytes.len())).unwrap())
                .collect();
            assert_eq!(got, vec![(0, b.len()), (1, small.len()), (3, b.len())]);
            assert_eq!(
                &out[21..b.len()],
                &b[21..],
                "chunks reassemble the client's bytes"
            );
            // A limit below the first batch: only with oversized_first.
            out.clear();
            s.read(p, 0, 100, false, &mut out).unwrap().unwrap();
            assert!(out.is_empty());
            s.read(p, 3, 100, true, &mut out).unwrap().unwrap();
            assert_eq!(out.len(), b.len());
            assert_eq!(batch::parse_header(&out).unwrap().base_offset, 3);
            s.close().unwrap();
        }
        let s = Store::open(cfg).unwrap();
        let t = s.topic("big").unwrap();
        let p = &t.partitions[0];
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 0,
                log_end: 4
            }
        );
        // Expiring the first two batches removes their segments whole.
        assert_eq!(s.expire_before(p, 2_000, i64::MAX).unwrap(), 3);
        assert_eq!(s.offsets(p).log_start, 3);
        let left = std::fs::read_dir(dir.path().join("segments").join(p.id.to_string()))
            .unwrap()
            .count();
        assert_eq!(left, 1, "only the last batch's segment remains");
        let mut out = BytesMut::new();
        s.read(p, 3, 1 << 24, true, &mut out).unwrap().unwrap();
        assert_eq!(out.len(), b.len());
    }
}
