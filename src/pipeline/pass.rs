//! One pass of a worker, the synchronous half ([`Core`]): reading and decoding the stored
//! batches, checking them against the contract, appending dead letters (with the
//! `kafkabox.dlq.*` headers of [`crate::services::dead_letters`]) and applying profile updates,
//! each in the same atomic write as the stage's offset commit. It runs on blocking threads,
//! never on the async runtime's.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafkabox_protocol::batch::{self, OutRecord, ProducerFields};
use kafkabox_storage::{Partition, Store, Topic};
use serde_json::Value;

use super::{Event, IngestStats, SharedProfiles, Verdicts, DEAD_LETTER_STAGE, PROFILE_STAGE};
use crate::contract::Contract;
use crate::services::dead_letters::DeadLetterHeaders;

/// Most a compressed batch may inflate to while decoding.
const INFLATE_LIMIT: usize = 64 * 1024 * 1024;

/// The `source` field of an event's JSON value, when it has one (clipped: it becomes a
/// header, a stored key and a metrics label).
pub(super) fn source_of(e: &Event) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(e.value.as_deref()?).ok()?;
    clipped_source(&v)
}

fn clipped_source(event: &Value) -> Option<String> {
    event
        .get("source")?
        .as_str()
        .map(|s| crate::contract::clip(s.to_string(), crate::contract::MAX_SOURCE_BYTES))
}

/// Parsed events with their stored JSON and place, as the profiles take them.
fn to_valid<'a>(parsed: &'a [(Value, &'a Event)]) -> Vec<crate::profile::Valid<'a>> {
    parsed
        .iter()
        .map(|(event, e)| crate::profile::Valid {
            event,
            raw: e.value.as_deref().unwrap_or_default(),
            partition: e.partition,
            offset: e.offset,
        })
        .collect()
}

/// The synchronous half of a worker: reading, checking and committing. It runs on blocking
/// threads, never on the async runtime's.
pub(super) struct Core {
    pub(super) metrics: Arc<crate::services::metrics::Metrics>,
    pub(super) store: Store,
    pub(super) topic: String,
    pub(super) part: Arc<Partition>,
    pub(super) contract: Option<Arc<Contract>>,
    /// The contract stage's verdicts on this partition (it writes, handler stages read).
    pub(super) verdicts: Arc<Verdicts>,
}

impl Core {
    /// Reads and decodes the committed records from `next` on (read_committed: nothing past
    /// the last stable offset, no aborted transaction's records, no markers); returns them and
    /// the offset after them. A batch that cannot be decoded becomes one event with `decode_error` set and the whole
    /// stored batch as its value (an error log says so): it goes to the dead-letter topic.
    pub(super) fn read(
        &self,
        next: i64,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, i64), kafkabox_storage::StoreError> {
        let mut buf = BytesMut::new();
        let mut end = next;
        let aborted = self
            .store
            .read_committed(&self.part, next, max_bytes, true, &mut buf)?
            .map(|r| r.aborted)
            .unwrap_or_default();
        let mut committed =
            batch::CommittedFilter::new(aborted.iter().map(|t| (t.producer_id, t.first_offset)));
        let mut events = Vec::new();
        for b in batch::split_batches(&buf) {
            let (h, bytes) = match b {
                Ok(b) => b,
                Err(e) => {
                    return Err(kafkabox_storage::StoreError::Corrupt(format!(
                        "stored batches: {e}"
                    )));
                }
            };
            end = h.last_offset() + 1;
            if !committed.keep(&h, bytes) {
                continue;
            }
            match batch::decode_batch(bytes, INFLATE_LIMIT) {
                Ok((_, records)) => events.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= next)
                        .map(|r| Event {
                            topic: self.topic.clone(),
                            partition: self.part.index,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                            decode_error: None,
                        }),
                ),
                Err(e) => {
                    tracing::error!(
                        base_offset = h.base_offset,
                        last_offset = h.last_offset(),
                        error = %e,
                        "stored batch cannot be decoded; it goes to the dead-letter topic whole"
                    );
                    events.push(Event {
                        topic: self.topic.clone(),
                        partition: self.part.index,
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                        key: None,
                        value: Some(Bytes::copy_from_slice(bytes)),
                        headers: Vec::new(),
                        decode_error: Some(format!(
                            "undecodable batch (offsets {} to {}): {e}",
                            h.base_offset,
                            h.last_offset()
                        )),
                    });
                }
            }
        }
        Ok((events, end))
    }

    /// Checks `events` against the contract; appends the invalid ones to the dead-letter
    /// topic and, with `profiles`, applies the valid ones to the customer profiles, all in one
    /// atomic write with this stage's offsets (`end`). `skip` holds where the contract stage
    /// and the profile stage had got to: records before each were done already.
    pub(super) fn dead_letter(
        &self,
        dlq: &Topic,
        stats: &IngestStats,
        profiles: Option<&SharedProfiles>,
        events: &[Event],
        end: i64,
        skip: (i64, Option<i64>),
    ) -> Result<(), kafkabox_storage::StoreError> {
        let names: &[&str] = if profiles.is_some() {
            &[DEAD_LETTER_STAGE, PROFILE_STAGE]
        } else {
            &[DEAD_LETTER_STAGE]
        };
        let Some(contract) = &self.contract else {
            return self.append_dead_letters(dlq, &[], names, end, &[]);
        };
        let (checked_before, profiled_before) = (skip.0, skip.1.unwrap_or(i64::MAX));
        let mut rejected = Vec::new();
        let mut observed = Vec::with_capacity(events.len());
        let mut valid: Vec<(Value, &Event)> = Vec::new();
        let mut invalid = Vec::new();
        for e in events {
            let count = e.offset >= checked_before;
            if let Some(reason) = &e.decode_error {
                invalid.push(e.offset);
                if count {
                    observed.push((None, Some(reason.clone())));
                    rejected.push((e, reason.clone(), None));
                }
                continue;
            }
            match contract.check(e.value.as_deref()) {
                Ok(event) => {
                    if count {
                        observed.push((clipped_source(&event), None));
                    }
                    if profiles.is_some() && e.offset >= profiled_before {
                        valid.push((event, e));
                    }
                }
                Err(r) => {
                    invalid.push(e.offset);
                    if count {
                        observed.push((r.source.clone(), Some(r.reason.clone())));
                        rejected.push((e, r.reason, r.source));
                    }
                }
            }
        }
        let _serial = match stats.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut state = stats.writes(&observed)?;
        match profiles {
            None => self.append_dead_letters(dlq, &rejected, names, end, &state)?,
            Some(profiles) => {
                let mut cache = match profiles.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let valid = to_valid(&valid);
                let (changed, writes) = cache.apply(&self.store, &valid)?;
                state.extend(writes);
                if let Err(e) = self.append_dead_letters(dlq, &rejected, names, end, &state) {
                    cache.forget(&changed);
                    return Err(e);
                }
            }
        }
        stats.observe(&observed);
        let start = events.first().map_or(end, |e| e.offset);
        self.verdicts.record(start, end, invalid);
        Ok(())
    }

    /// Appends `rejected` (event, reason, source) to the dead-letter topic with the original
    /// key, value and headers plus the `kafkabox.dlq.*` headers ([`DeadLetterHeaders`]), in
    /// the same atomic write as the commit of `end` for consumers `names` (the first one is
    /// the stage the dead letters name); just commits when there is nothing to append.
    pub(super) fn append_dead_letters(
        &self,
        dlq: &Topic,
        rejected: &[(&Event, String, Option<String>)],
        names: &[&str],
        end: i64,
        state: &[kafkabox_storage::StateEntry],
    ) -> Result<(), kafkabox_storage::StoreError> {
        let name = names.first().copied().unwrap_or_default();
        let index = usize::try_from(self.part.index).unwrap_or(0) % dlq.partitions.len().max(1);
        let Some(target) = dlq.partitions.get(index) else {
            return Err(kafkabox_storage::StoreError::Corrupt(format!(
                "{} has no partitions",
                dlq.meta.name
            )));
        };
        // A pass re-run after a crash between storing its dead letters and committing its
        // offset finds them stored: only those past the writer's position are appended.
        let stored = self.store.writer_position(target, &self.part, name)?;
        let rejected: Vec<&(&Event, String, Option<String>)> = rejected
            .iter()
            .filter(|(e, _, _)| stored.is_none_or(|p| e.offset >= p))
            .collect();
        if rejected.is_empty() {
            return self
                .store
                .commit_with_state(&self.part, names, end, state)
                .map(|_| ());
        }
        let partition = self.part.index.to_string();
        let meta: Vec<[String; 2]> = rejected
            .iter()
            .map(|(e, _, _)| [e.offset.to_string(), e.timestamp.to_string()])
            .collect();
        let headers: Vec<Vec<batch::HeaderRef<'_>>> = rejected
            .iter()
            .zip(meta.iter())
            .map(|((e, reason, source), [offset, timestamp])| {
                let mut h: Vec<batch::HeaderRef<'_>> = e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_deref()))
                    .collect();
                let dead_letter = DeadLetterHeaders {
                    reason,
                    source: source.as_deref(),
                    stage: name,
                    topic: &self.topic,
                    partition: &partition,
                    offset,
                    timestamp,
                };
                h.extend(
                    dead_letter
                        .pairs()
                        .into_iter()
                        .map(|(k, v)| (k.as_bytes(), Some(v.as_bytes()))),
                );
                h
            })
            .collect();
        let records: Vec<OutRecord<'_>> = rejected
            .iter()
            .zip(headers.iter())
            .map(|((e, _, _), h)| OutRecord {
                key: e.key.as_deref(),
                value: e.value.as_deref(),
                headers: h,
            })
            .collect();
        let bytes =
            batch::encode_records(&records, crate::services::now_ms(), ProducerFields::NONE);
        let header = batch::parse_header(&bytes).map_err(|e| {
            kafkabox_storage::StoreError::Corrupt(format!("dead-letter batch: {e}"))
        })?;
        let appended = self
            .store
            .append_and_commit(
                target,
                &bytes,
                &header,
                kafkabox_storage::ConsumerCommit {
                    source: &self.part,
                    names,
                    next_offset: end,
                    state,
                },
            )
            .map_err(|e| match e {
                kafkabox_storage::AppendError::Store(s) => s,
                other => kafkabox_storage::StoreError::Corrupt(other.to_string()),
            })?;
        for (i, (e, reason, source)) in rejected.iter().enumerate() {
            let class = match (&e.decode_error, name) {
                (Some(_), _) => "undecodable",
                (None, DEAD_LETTER_STAGE) => "contract",
                (None, _) => "handler",
            };
            self.metrics
                .dead_lettered(&self.topic, source.as_deref(), class);
            tracing::warn!(
                offset = e.offset,
                dlq_topic = %dlq.meta.name,
                dlq_partition = target.index,
                dlq_offset = appended.base_offset + i as i64,
                source = source.as_deref().unwrap_or("unknown"),
                reason = %crate::services::truncate(reason, 300),
                "event sent to the dead-letter topic ({class})"
            );
        }
        Ok(())
    }

    /// Applies the JSON records of a topic without a contract to the customer profiles and
    /// commits them with `end`.
    pub(super) fn update_profiles(
        &self,
        profiles: &SharedProfiles,
        events: &[Event],
        end: i64,
    ) -> Result<(), kafkabox_storage::StoreError> {
        // Topics with a contract update profiles in their contract stage; here every record
        // that is JSON counts.
        let parsed: Vec<(Value, &Event)> = events
            .iter()
            .filter_map(|e| Some((serde_json::from_slice(e.value.as_deref()?).ok()?, e)))
            .collect();
        let valid = to_valid(&parsed);
        let mut cache = match profiles.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (changed, writes) = cache.apply(&self.store, &valid)?;
        match self
            .store
            .commit_with_state(&self.part, &[PROFILE_STAGE], end, &writes)
        {
            Ok(_) => Ok(()),
            Err(e) => {
                cache.forget(&changed);
                Err(e)
            }
        }
    }
}
