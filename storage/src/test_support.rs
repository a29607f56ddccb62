//! Helpers shared by the unit tests of the store's modules.

use std::collections::BTreeMap;

use bytes::BytesMut;
use kafkabox_protocol::batch::{
    encode_uncompressed, validate_produce_batch, BatchHeader, ProducerFields,
};

use crate::{Partition, Store};

pub(crate) fn batch(n: usize, producer: ProducerFields) -> (Vec<u8>, BatchHeader) {
    let recs: Vec<kafkabox_protocol::batch::KeyValue<'_>> =
        (0..n).map(|_| (None, Some(&b"value"[..]))).collect();
    let b = encode_uncompressed(&recs, 1_000, producer);
    let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
    (b, h)
}

/// A transactional batch of producer `producer_id` (epoch 0, sequence `base_sequence`) with
/// `recs`.
pub(crate) fn txn_batch_of(
    recs: &[kafkabox_protocol::batch::KeyValue<'_>],
    producer_id: i64,
    base_sequence: i32,
) -> (Vec<u8>, BatchHeader) {
    let mut b = encode_uncompressed(
        recs,
        1_000,
        ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        },
    );
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = kafkabox_protocol::batch::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let h = kafkabox_protocol::batch::parse_header(&b).unwrap();
    (b, h)
}

/// Topic configs that give every batch a segment of its own.
pub(crate) fn segment_per_batch() -> BTreeMap<String, String> {
    BTreeMap::from([("segment.bytes".to_string(), "1".to_string())])
}

pub(crate) fn seq_batch(n: usize, producer_id: i64, base_sequence: i32) -> (Vec<u8>, BatchHeader) {
    batch(
        n,
        ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        },
    )
}

/// Every batch and the bases of the batches read from `from` on.
pub(crate) fn read_all(s: &Store, p: &Partition, from: i64) -> Vec<i64> {
    let mut out = BytesMut::new();
    s.read(p, from, 1 << 24, true, &mut out).unwrap().unwrap();
    kafkabox_protocol::batch::split_batches(&out)
        .map(|r| r.unwrap().0.base_offset)
        .collect()
}
