//! The dead letters of the `<topic>.dlq` topics this box's stages write: listed with why they
//! are there, and, for the events a handler refused (not contract violations, which only the
//! producer can fix), replayed through that handler once its downstream is fixed, or skipped.
//! Each replay or skip is recorded in the store (`dlq/<dlq topic>/<partition>/<offset>`)
//! before it is answered, and a recorded dead letter is never replayed again, so nothing is
//! handled twice by accident.
//!
//! A dead letter is a pointer with a reason, not a payload to trust: a replay reads the
//! original record again from its own topic and offset and checks it against the topic's
//! contract before the handler sees it. Only `<topic>.dlq` topics of topics that a stage here
//! handles are read at all, and clients can neither create nor write a `.dlq` topic
//! (`dead.letter.topics.reserved`, `services::topics::Topics::reserved`).
//! The record format (topic suffix, headers) is defined in `services::dead_letters`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use kafkabox_protocol::batch::Record;

use super::{Event, Handler, HandlerError, DEAD_LETTER_STAGE, PROFILE_STAGE};
use crate::contract::Contract;
use crate::services::dead_letters::{
    dead_letter_topic, DEAD_LETTER_SUFFIX, HEADER_PREFIX, OFFSET_HEADER, PARTITION_HEADER,
    REASON_HEADER, SOURCE_HEADER, STAGE_HEADER, TIMESTAMP_HEADER,
};
use crate::services::{now_ms, records, Error, Result, Services};

/// Most records of the dead-letter topics one listing scans (newest kept).
pub const MAX_SCAN: usize = 100_000;
/// Records read per step of a listing (newest first).
const WINDOW: usize = 1000;
/// Most dead letters one answer lists, replays or skips.
pub const MAX_LIST: usize = 1000;

const STATE_PREFIX: &str = "dlq/";

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
}

/// A replay or skip, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolution {
    /// `replayed` or `skipped`.
    pub action: String,
    pub at_ms: i64,
}

/// One record of a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// When it was dead-lettered (ms since the epoch).
    pub timestamp: i64,
    pub reason: String,
    pub source: String,
    /// The stage that refused it: `contract` or a handler's name.
    pub stage: Option<String>,
    pub origin: Origin,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// The original headers, without kafkabox's.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// A handler refused it and that handler runs here.
    pub replayable: bool,
    pub resolution: Option<Resolution>,
}

/// Which resolutions a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Any,
    /// Neither replayed nor skipped.
    Pending,
    Replayed,
    Skipped,
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Status, String> {
        Ok(match s {
            "any" => Status::Any,
            "pending" => Status::Pending,
            "replayed" => Status::Replayed,
            "skipped" => Status::Skipped,
            other => {
                return Err(format!(
                    "status '{other}': expected any, pending, replayed or skipped"
                ))
            }
        })
    }
}

/// What to list (every field optional; all given must match).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The original topic (`customer-events`) or its dead-letter topic (`customer-events.dlq`).
    pub topic: Option<String>,
    pub source: Option<String>,
    /// A part of the reason.
    pub reason: Option<String>,
    pub stage: Option<String>,
    /// Dead-lettered at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (ms since the epoch).
    pub until_ms: Option<i64>,
    pub status: Status,
    /// At most this many, newest first (capped at [`MAX_LIST`]).
    pub limit: usize,
}

/// How a replay or skip of one dead letter ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `replayed`, `skipped`, `failed` (the handler failed again; nothing recorded) or
    /// `refused` (already resolved, or not a handler's refusal).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The dead-letter service: listing, replay, skip.
pub struct DeadLetters {
    services: Arc<Services>,
    /// Handler stages by name, with the topic they handle.
    handlers: HashMap<String, (String, Arc<dyn Handler>)>,
    /// The contracts of the topics that have one: a replayed record is checked again.
    contracts: HashMap<String, Arc<Contract>>,
    /// One replay or skip at a time: two requests for the same dead letter cannot both run it.
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn state_key(topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    format!("{STATE_PREFIX}{topic}/{partition}/{offset}").into_bytes()
}

/// The value of header `name` (the last one of that name).
fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
    r.headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name.as_bytes())
        .and_then(|(_, v)| v.as_deref())
}

fn header_str(r: &Record, name: &str) -> Option<String> {
    header(r, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

fn header_num<T: std::str::FromStr>(r: &Record, name: &str) -> Option<T> {
    std::str::from_utf8(header(r, name)?).ok()?.parse().ok()
}

impl DeadLetters {
    /// `handlers`: (stage name, topic, handler) of every handler stage that may replay.
    /// `contracts`: the contract of each topic that has one.
    pub fn new(
        services: Arc<Services>,
        handlers: Vec<(String, String, Arc<dyn Handler>)>,
        contracts: HashMap<String, Arc<Contract>>,
    ) -> DeadLetters {
        DeadLetters {
            services,
            handlers: handlers
                .into_iter()
                .map(|(name, topic, h)| (name, (topic, h)))
                .collect(),
            contracts,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The source topic of `dlq` when a stage of this box writes it (a stage other than the
    /// profiles runs over that topic): only those hold dead letters.
    fn own_source<'a>(&self, dlq: &'a str) -> Option<&'a str> {
        let base = dlq.strip_suffix(DEAD_LETTER_SUFFIX)?;
        self.services
            .groups
            .pipeline_stages(base)
            .iter()
            .any(|s| s != PROFILE_STAGE)
            .then_some(base)
    }

    fn resolution(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<Resolution>> {
        Ok(self
            .services
            .store
            .state(&state_key(topic, partition, offset))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn parse(&self, topic: &str, partition: i32, r: Record) -> Result<DeadLetter> {
        let reason = header_str(&r, REASON_HEADER).unwrap_or_default();
        let stage = header_str(&r, STAGE_HEADER).or_else(|| {
            // Dead letters written before the stage header: a handler's reason names it.
            reason
                .strip_prefix("handler ")
                .and_then(|rest| rest.split_once(':'))
                .map(|(name, _)| name.to_string())
        });
        // The dead-letter topic names its source: a header cannot point elsewhere.
        let origin = Origin {
            topic: topic
                .strip_suffix(DEAD_LETTER_SUFFIX)
                .unwrap_or(topic)
                .to_string(),
            partition: header_num(&r, PARTITION_HEADER),
            offset: header_num(&r, OFFSET_HEADER),
            timestamp: header_num(&r, TIMESTAMP_HEADER),
        };
        let replayable = match &stage {
            Some(s) if s != DEAD_LETTER_STAGE => {
                !reason.starts_with("undecodable batch")
                    && self
                        .handlers
                        .get(s)
                        .is_some_and(|(t, _)| *t == origin.topic)
            }
            _ => false,
        };
        let resolution = self.resolution(topic, partition, r.offset)?;
        Ok(DeadLetter {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            source: header_str(&r, SOURCE_HEADER).unwrap_or_else(|| "unknown".into()),
            reason,
            stage,
            origin,
            headers: r
                .headers
                .into_iter()
                .filter(|(k, _)| !k.starts_with(HEADER_PREFIX.as_bytes()))
                .collect(),
            key: r.key,
            value: r.value,
            replayable,
            resolution,
        })
    }

    fn matches(f: &Filter, d: &DeadLetter) -> bool {
        f.source.as_ref().is_none_or(|s| *s == d.source)
            && f.reason
                .as_ref()
                .is_none_or(|s| d.reason.contains(s.as_str()))
            && f.stage.as_ref().is_none_or(|s| d.stage.as_ref() == Some(s))
            && f.since_ms.is_none_or(|t| d.timestamp >= t)
            && f.until_ms.is_none_or(|t| d.timestamp < t)
            && match f.status {
                Status::Any => true,
                Status::Pending => d.resolution.is_none(),
                Status::Replayed => d
                    .resolution
                    .as_ref()
                    .is_some_and(|r| r.action == "replayed"),
                Status::Skipped => d.resolution.as_ref().is_some_and(|r| r.action == "skipped"),
            }
    }

    /// The dead letters matching `f`, newest first. Scans at most [`MAX_SCAN`] records of
    /// the dead-letter topics (the newest of each partition). Blocking.
    pub fn list(&self, f: &Filter) -> Result<Vec<DeadLetter>> {
        let limit = f.limit.clamp(1, MAX_LIST);
        let topics: Vec<_> = self
            .services
            .topics
            .list()
            .into_iter()
            .filter(|t| self.own_source(&t.meta.name).is_some())
            .filter(|t| {
                f.topic.as_ref().is_none_or(|want| {
                    t.meta.name == *want || t.meta.name == dead_letter_topic(want)
                })
            })
            .collect();
        let parts: usize = topics.iter().map(|t| t.partitions.len()).sum();
        let per_partition = (MAX_SCAN / parts.max(1)).max(1);
        let mut found: Vec<DeadLetter> = Vec::new();
        for t in &topics {
            for p in &t.partitions {
                // Windows from the newest backwards, until `limit` match or the budget is spent.
                let o = self.services.store.offsets(p);
                let floor = (o.log_end - per_partition as i64).max(o.log_start);
                let mut end = o.log_end;
                let mut newest: VecDeque<DeadLetter> = VecDeque::new();
                while end > floor && newest.len() < limit {
                    let from = (end - WINDOW as i64).max(floor);
                    let (records, _) = records::read(
                        &self.services.store,
                        p,
                        from,
                        (end - from) as usize,
                        self.services.config.max_inflated_batch_bytes,
                    )?;
                    let mut window = Vec::new();
                    for r in records.into_iter().filter(|r| r.offset < end) {
                        let d = self.parse(&t.meta.name, p.index, r)?;
                        if Self::matches(f, &d) {
                            window.push(d);
                        }
                    }
                    for d in window.into_iter().rev() {
                        if newest.len() < limit {
                            newest.push_front(d);
                        }
                    }
                    end = from;
                }
                found.extend(newest);
            }
        }
        found.sort_by(|a, b| {
            (b.timestamp, &b.topic, b.partition, b.offset).cmp(&(
                a.timestamp,
                &a.topic,
                a.partition,
                a.offset,
            ))
        });
        found.truncate(limit);
        Ok(found)
    }

    /// One dead letter.
    pub fn get(&self, topic: &str, partition: i32, offset: i64) -> Result<DeadLetter> {
        if !topic.ends_with(DEAD_LETTER_SUFFIX) {
            return Err(Error::InvalidRequest(format!(
                "'{topic}' is not a dead-letter topic (they end in {DEAD_LETTER_SUFFIX})"
            )));
        }
        if self.own_source(topic).is_none() {
            return Err(Error::InvalidRequest(format!(
                "'{topic}' is not the dead-letter topic of a topic handled here (no stage of this box writes it)"
            )));
        }
        let (mut records, _) = self.services.read_records(topic, partition, offset, 1)?;
        match records.pop() {
            Some(r) if r.offset == offset => self.parse(topic, partition, r),
            _ => Err(Error::OffsetOutOfRange(format!(
                "{topic}/{partition} has no record at offset {offset}"
            ))),
        }
    }

    async fn record(&self, d: &DeadLetter, action: &str) -> Result<()> {
        let value = serde_json::to_vec(&Resolution {
            action: action.to_string(),
            at_ms: now_ms(),
        })
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let key = state_key(&d.topic, d.partition, d.offset);
        let store = self.services.store.clone();
        let seq = tokio::task::spawn_blocking(move || store.put_state(&[(key, value)]))
            .await
            .map_err(|e| Error::InvalidRequest(format!("state write task: {e}")))??;
        self.services.store.wait_durable(seq).await?;
        Ok(())
    }

    fn outcome(d: &DeadLetter, result: &'static str, error: Option<String>) -> Outcome {
        Outcome {
            topic: d.topic.clone(),
            partition: d.partition,
            offset: d.offset,
            result,
            error,
        }
    }

    /// Hands each of `targets` (pending, replayable) back to the handler that refused it, in
    /// order, and records each that it accepts. A failure leaves that dead letter pending.
    pub async fn replay(&self, targets: Vec<DeadLetter>) -> Vec<Outcome> {
        let _one_at_a_time = self.busy.lock().await;
        let mut out = Vec::with_capacity(targets.len());
        for d in targets.into_iter().take(MAX_LIST) {
            // Read the resolution again under the lock: another request may have just run it.
            match self.resolution(&d.topic, d.partition, d.offset) {
                Ok(Some(r)) => {
                    out.push(Self::outcome(
                        &d,
                        "refused",
                        Some(format!(
                            "already {} at {}",
                            r.action,
                            crate::services::time_text(r.at_ms)
                        )),
                    ));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    out.push(Self::outcome(&d, "failed", Some(e.to_string())));
                    continue;
                }
            }
            let handler = match (&d.stage, d.replayable) {
                (Some(stage), true) => self.handlers.get(stage).map(|(_, h)| h.clone()),
                _ => None,
            };
            let Some(handler) = handler else {
                out.push(Self::outcome(
                    &d,
                    "refused",
                    Some(match d.stage.as_deref() {
                        Some(DEAD_LETTER_STAGE) => "it breaks the topic's contract: only the producer can fix it (skip it instead)".to_string(),
                        Some(s) => format!("no handler '{s}' runs here, or the stored batch could not be decoded"),
                        None => "the dead letter does not say which stage refused it".to_string(),
                    }),
                ));
                continue;
            };
            // The original record, from its own topic, checked again: never the payload the
            // dead-letter topic holds.
            let event = match self.original(&d).await {
                Ok(e) => e,
                Err(why) => {
                    out.push(Self::outcome(&d, "refused", Some(why)));
                    continue;
                }
            };
            match handler.handle(std::slice::from_ref(&event)).await {
                Ok(()) => match self.record(&d, "replayed").await {
                    Ok(()) => {
                        tracing::info!(topic = %d.topic, partition = d.partition, offset = d.offset, handler = handler.name(), "dead letter replayed");
                        out.push(Self::outcome(&d, "replayed", None));
                    }
                    Err(e) => out.push(Self::outcome(
                        &d,
                        "failed",
                        Some(format!("handled, but recording the replay failed: {e}")),
                    )),
                },
                Err(HandlerError::Permanent(r)) | Err(HandlerError::Transient(r)) => {
                    out.push(Self::outcome(
                        &d,
                        "failed",
                        Some(format!("handler {}: {r}", handler.name())),
                    ));
                }
            }
        }
        out
    }

    /// The record `d` points at, read from its own topic and offset and valid under the
    /// topic's contract, as the event to hand to the handler; or why it cannot be replayed.
    async fn original(&self, d: &DeadLetter) -> std::result::Result<Event, String> {
        let (Some(partition), Some(offset)) = (d.origin.partition, d.origin.offset) else {
            return Err("the dead letter does not say which record it stands for".into());
        };
        let topic = d.origin.topic.clone();
        let gone = || {
            format!("the original record {topic}/{partition}@{offset} is no longer in the log (retention or compaction removed it)")
        };
        let services = self.services.clone();
        let read = {
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || services.read_records(&topic, partition, offset, 1))
        };
        let (mut records, _) = read
            .await
            .map_err(|e| format!("read task: {e}"))?
            .map_err(|e| {
                format!("cannot read the original record {topic}/{partition}@{offset}: {e}")
            })?;
        let r = match records.pop() {
            Some(r) if r.offset == offset => r,
            _ => return Err(gone()),
        };
        if let Some(contract) = self.contracts.get(&topic) {
            if let Err(rej) = contract.check(r.value.as_deref()) {
                return Err(format!(
                    "the original record {topic}/{partition}@{offset} breaks the topic's contract: {}",
                    rej.reason
                ));
            }
        }
        Ok(Event {
            topic,
            partition,
            offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r.headers,
            decode_error: None,
        })
    }

    /// Records each of `targets` as skipped (it stays in the topic, marked).
    pub async fn skip(&self, targets: Vec<DeadLetter>) -> Vec<Outcome> {
        let _one_at_a_time = self.busy.lock().await;
        let mut out = Vec::with_capacity(targets.len());
        for d in targets.into_iter().take(MAX_LIST) {
            match self.resolution(&d.topic, d.partition, d.offset) {
                Ok(Some(r)) => out.push(Self::outcome(
                    &d,
                    "refused",
                    Some(format!(
                        "already {} at {}",
                        r.action,
                        crate::services::time_text(r.at_ms)
                    )),
                )),
                Ok(None) => match self.record(&d, "skipped").await {
                    Ok(()) => out.push(Self::outcome(&d, "skipped", None)),
                    Err(e) => out.push(Self::outcome(&d, "failed", Some(e.to_string()))),
                },
                Err(e) => out.push(Self::outcome(&d, "failed", Some(e.to_string()))),
            }
        }
        out
    }
}
