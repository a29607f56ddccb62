//! Idempotent producers: issuing a producer id bound to the principal that asked
//! (InitProducerId; only that principal may then write with it, see [`super::produce`]), and
//! the producers each partition remembers (DescribeProducers). Idle producers are forgotten
//! by the retention sweep (`producer.id.expiration.ms`).

use kafkabox_storage::Partition;

use super::{Error, Result, Services};

/// An idempotent or transactional producer a partition remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence number of the last record appended, or -1.
    pub last_sequence: i32,
    /// When it last appended (ms since the epoch).
    pub last_timestamp: i64,
    /// The coordinator epoch of its last transaction marker, -1 if none.
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction on the partition, -1 if none.
    pub current_txn_start_offset: i64,
}

impl Services {
    /// A new producer id (epoch 0) for `principal`, which alone may write with it (blocking: a
    /// store write). Ids cannot be guessed from one another.
    pub fn new_producer_id(&self, principal: &str) -> Result<i64> {
        self.store
            .new_producer_id(principal.as_bytes())
            .map_err(Error::Storage)
    }

    /// The idempotent producers `part` remembers, by producer id.
    pub fn producer_states(&self, part: &Partition) -> Vec<ProducerState> {
        self.store
            .producer_states(part)
            .into_iter()
            .map(|p| ProducerState {
                producer_id: p.producer_id,
                epoch: p.epoch,
                last_sequence: p.last_sequence,
                last_timestamp: p.last_append_ms,
                coordinator_epoch: p.coordinator_epoch,
                current_txn_start_offset: p.txn_first_offset.unwrap_or(-1),
            })
            .collect()
    }
}
