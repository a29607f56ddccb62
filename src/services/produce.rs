//! Appending a producer's record batch to a partition: the checks Kafka makes (batch format,
//! `max.message.bytes`, compaction needs keys, the reject policy of a contract, an idempotent
//! producer's id issued to this principal, dead-letter topics written only by kafkabox),
//! LogAppendTime stamping, then the store's append. Kafka's Produce API and the HTTP API's
//! produce both come here, so records from either are stored, counted and handled alike.

use kafkabox_protocol::batch::{self, BatchError};
use kafkabox_storage::AppendError;

use super::Services;

/// A batch appended.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: i64,
    pub log_start_offset: i64,
    /// The LogAppendTime stamped into the batch, or -1 (CreateTime).
    pub log_append_time: i64,
    /// Pass to `Store::wait_durable` for acks=all.
    pub write_seq: u64,
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// Only kafkabox writes this topic (the dead-letter topic of a handler pipeline).
    #[error("{0}")]
    NotWritable(String),
    /// Refused as a whole, with the records that caused it (index in the batch, why).
    #[error("{message}")]
    InvalidRecord {
        message: String,
        record_errors: Vec<(i32, String)>,
    },
    /// An idempotent batch under a producer id that was not issued to this principal (by this
    /// data dir: never issued, or issued to another principal; the two look alike).
    #[error("{0}")]
    ForeignProducerId(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("{error}")]
    Append {
        error: AppendError,
        producer_id: i64,
    },
    /// A transactional batch the transaction coordinator refused (no transactional id, not
    /// its producer, a partition not added to the transaction ...).
    #[error(transparent)]
    Transaction(super::Error),
}

impl ProduceError {
    fn invalid(message: impl Into<String>) -> ProduceError {
        ProduceError::InvalidRecord {
            message: message.into(),
            record_errors: Vec::new(),
        }
    }
}

impl Services {
    /// Validates `records` (one v2 batch, base offset 0) sent by `principal` (whose producer
    /// ids alone it may use) and appends it to partition `index` of `topic`. Blocking (a store
    /// write): call it off the async runtime.
    pub fn produce(
        &self,
        principal: &str,
        topic: &str,
        index: i32,
        records: &[u8],
    ) -> Result<Produced, ProduceError> {
        self.produce_in(principal, None, topic, index, records)
    }

    /// [`Services::produce`] for a producer that may be transactional: a transactional batch
    /// goes only to a partition added to the open transaction of `transactional_id` (its
    /// producer id and epoch the current ones), and the transaction cannot end meanwhile.
    pub fn produce_in(
        &self,
        principal: &str,
        transactional_id: Option<&str>,
        topic: &str,
        index: i32,
        records: &[u8],
    ) -> Result<Produced, ProduceError> {
        let Some(t) = self.topics.get(topic) else {
            return Err(ProduceError::UnknownTopicOrPartition(format!(
                "This server does not host topic '{topic}'."
            )));
        };
        let Some(part) = t.partition(index) else {
            return Err(ProduceError::UnknownTopicOrPartition(format!(
                "Topic '{topic}' has no partition {index}."
            )));
        };
        // A dead-letter topic holds what the pipeline refused, with headers saying why and
        // from where; records written by anyone else would be forgeries.
        if let Some(why) = self.topics.reserved(topic) {
            return Err(ProduceError::NotWritable(why));
        }
        if let Some(base) = topic.strip_suffix(super::dead_letters::DEAD_LETTER_SUFFIX) {
            if !self.groups.pipeline_stages(base).is_empty() {
                return Err(ProduceError::NotWritable(format!(
                    "Topic '{topic}' is the dead-letter topic of '{base}': only kafkabox writes it."
                )));
            }
        }
        let settings = self.topics.settings(&t);
        let header = batch::validate_produce_batch(
            records,
            settings.max_message_bytes,
            self.config.inflate_limit(),
        )?;
        if header.base_offset != 0 {
            return Err(ProduceError::invalid(format!(
                "Record batch base offset must be 0 in a produce request, got {}.",
                header.base_offset
            )));
        }
        self.check_contract(topic, records)
            .map_err(ProduceError::invalid)?;
        if header.is_idempotent()
            && !self
                .store
                .producer_id_owned_by(header.producer_id, principal.as_bytes())
        {
            return Err(ProduceError::ForeignProducerId(format!(
                "Producer id {} was not issued to {principal} by this broker; a producer uses the id InitProducerId gave it.",
                header.producer_id
            )));
        }
        if settings.compacted {
            let (_, recs) = batch::decode_batch(records, self.config.max_inflated_batch_bytes)?;
            let keyless: Vec<(i32, String)> = recs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.key.is_none())
                .map(|(i, _)| {
                    (
                        i as i32,
                        format!("Compacted topic cannot accept message without key in topic partition {topic}-{index}."),
                    )
                })
                .collect();
            if !keyless.is_empty() {
                return Err(ProduceError::InvalidRecord {
                    message: "One or more records have been rejected".into(),
                    record_errors: keyless,
                });
            }
        }
        if header.is_transactional() {
            if !header.is_idempotent() {
                return Err(ProduceError::invalid(
                    "A transactional record batch must carry a producer id.",
                ));
            }
            let Some(id) = transactional_id else {
                return Err(ProduceError::Transaction(
                    super::Error::TransactionalIdAuthorization(
                        "A transactional record batch needs the request's transactional id.".into(),
                    ),
                ));
            };
            return self
                .transactions
                .produce(
                    id,
                    header.producer_id,
                    header.producer_epoch,
                    topic,
                    index,
                    || self.append_checked(part, topic, records, &header, settings.log_append_time),
                )
                .map_err(ProduceError::Transaction)?;
        }
        self.append_checked(part, topic, records, &header, settings.log_append_time)
    }

    /// The store's append of a checked batch, stamped with LogAppendTime if the topic says so.
    fn append_checked(
        &self,
        part: &kafkabox_storage::Partition,
        topic: &str,
        records: &[u8],
        header: &batch::BatchHeader,
        log_append_time_topic: bool,
    ) -> Result<Produced, ProduceError> {
        let header = *header;
        let mut log_append_time = -1;
        let appended = if log_append_time_topic {
            let mut stamped = records.to_vec();
            log_append_time = super::now_ms();
            batch::set_log_append_time(&mut stamped, log_append_time);
            self.store.append(part, &stamped, &header)
        } else {
            self.store.append(part, records, &header)
        };
        match appended {
            Ok(a) => {
                if !a.duplicate {
                    self.metrics.appended(
                        topic,
                        records.len() as u64,
                        header.records_count.max(0) as u64,
                    );
                }
                Ok(Produced {
                    base_offset: a.base_offset,
                    log_start_offset: a.log_start_offset,
                    log_append_time,
                    write_seq: a.write_seq,
                })
            }
            Err(error) => Err(ProduceError::Append {
                error,
                producer_id: header.producer_id,
            }),
        }
    }
}
