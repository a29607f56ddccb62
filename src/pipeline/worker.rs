//! The workers: one per (stage, partition), started by [`spawn`] / [`spawn_partitions`]. A
//! worker waits for appends, reads from its committed offset, hands the records to its stage
//! (a handler, with retries and backoff, or the dead-letter or profile stage) and commits; it
//! stops at shutdown or when its topic is deleted. Reading and committing run off the async
//! runtime (`pass.rs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkabox_storage::{Partition, Store, Topic};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::health::{panic_message, AbortOnDrop, Health};
use super::lag::LagSlot;
use super::pass::{source_of, Core};
use super::{Event, Handler, HandlerError, Lag, Stage, Verdicts, BACKOFF_FIRST, BACKOFF_MAX};
use crate::contract::Contract;

/// Most bytes of stored batches read per pass of a handler stage (a handler's batch).
const READ_BYTES: usize = 1024 * 1024;
/// Most bytes read per pass of the contract and profile stages. Bigger passes under a backlog
/// write each touched profile once for more events (a pass of 1 MiB over 1,000 customers wrote
/// every profile for every ~5 events); when caught up, passes stay as small as what arrived.
const INTERNAL_READ_BYTES: usize = 4 * 1024 * 1024;
/// How long a handler call may go on after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every worker shares: the store, the lag table, the metrics, the shutdown signal and
/// the contract stage's verdicts per partition.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: Store,
    pub lag: Lag,
    pub metrics: Arc<crate::services::metrics::Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub verdicts: Arc<Mutex<std::collections::HashMap<u32, Arc<Verdicts>>>>,
    pub health: Health,
}

impl Shared {
    /// The verdicts of partition `pid` (store-wide partition id).
    fn verdicts(&self, pid: u32) -> Arc<Verdicts> {
        match self.verdicts.lock() {
            Ok(mut m) => m.entry(pid).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

/// Starts one worker per partition of `topic`. They stop when `shutdown` flips or when their
/// topic is deleted.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    shared: &Shared,
    topic: &Arc<Topic>,
    stage: Stage,
    contract: Option<Arc<Contract>>,
) {
    spawn_partitions(tasks, shared, topic, &topic.partitions, stage, contract)
}

/// Starts one worker for each of `parts` (partitions of `topic`).
pub fn spawn_partitions(
    tasks: &mut JoinSet<()>,
    shared: &Shared,
    topic: &Arc<Topic>,
    parts: &[Arc<Partition>],
    stage: Stage,
    contract: Option<Arc<Contract>>,
) {
    let Shared {
        store,
        lag,
        metrics,
        shutdown,
        verdicts: _,
        health,
    } = shared;
    let core_stage = stage.clone();
    for part in parts {
        let worker = Worker {
            core: Arc::new(Core {
                metrics: metrics.clone(),
                store: store.clone(),
                topic: topic.meta.name.clone(),
                part: part.clone(),
                contract: contract.clone(),
                verdicts: shared.verdicts(part.id),
            }),
            lags: core_stage
                .names()
                .iter()
                .map(|n| lag.slot(n, part, store))
                .collect(),
            lag: lag.clone(),
            stage: stage.clone(),
            shutdown: shutdown.clone(),
            health: health.clone(),
        };
        worker.report(|h, name, topic, p| h.running(name, topic, p));
        let span = tracing::info_span!(
            "pipeline",
            stage = %stage.name(),
            topic = %topic.meta.name,
            partition = part.index
        );
        // The worker runs in a task of its own, so that a panic (a handler's) ends only it and
        // is reported as the stage stopping, with the reason.
        let (health, names, topic, index) = (
            health.clone(),
            stage
                .names()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            topic.meta.name.clone(),
            part.index,
        );
        tasks.spawn(async move {
            let inner = tokio::spawn(tracing::Instrument::instrument(worker.run(), span));
            let _abort = AbortOnDrop(inner.abort_handle());
            if let Err(e) = inner.await {
                let reason = panic_message(e);
                for n in &names {
                    health.stopped(n, &topic, index, &reason);
                }
            }
        });
    }
}

/// How a delivery to a handler ended.
enum Delivery {
    Done,
    Refused(String),
    Interrupted,
}

struct Worker {
    core: Arc<Core>,
    stage: Stage,
    /// One per name in `stage.names()`.
    lags: Vec<Arc<LagSlot>>,
    lag: Lag,
    shutdown: watch::Receiver<bool>,
    health: Health,
}

/// Runs `f` on a blocking thread; a panic there becomes a storage error (retried).
async fn off_runtime<T, F>(f: F) -> Result<T, kafkabox_storage::StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, kafkabox_storage::StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| kafkabox_storage::StoreError::Corrupt(format!("pipeline task: {e}")))?
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells `f` about this worker under each of its stage's names.
    fn report(&self, f: impl Fn(&Health, &str, &str, i32)) {
        for n in self.stage.names() {
            f(&self.health, n, &self.core.topic, self.core.part.index);
        }
    }

    /// The dead-letter topic as the catalog has it now: re-created since the stage started,
    /// or gone (the stage retries until the stages re-create it on the catalog change).
    fn current(&self, dlq: &Topic) -> Result<Arc<Topic>, kafkabox_storage::StoreError> {
        self.core
            .store
            .topic(&dlq.meta.name)
            .ok_or_else(|| kafkabox_storage::StoreError::UnknownTopic(dlq.meta.name.clone()))
    }

    /// The partition loop. Bounded waits only: every sleep ends on an append, on shutdown or
    /// after its backoff.
    async fn run(mut self) {
        let name = self.stage.name().to_string();
        // Where each committed name stands; the worker starts at the earliest and each name
        // skips what it already did (a data dir whose stages were apart).
        let mut starts = Vec::new();
        for n in self.stage.names() {
            match self.core.store.consumer_offset(&self.core.part, n) {
                Ok(o) => starts.push(o),
                Err(e) => {
                    let reason = format!("cannot read the committed offset: {e}");
                    self.report(|h, n, t, p| h.stopped(n, t, p, &reason));
                    return;
                }
            }
        }
        let mut next = starts.iter().copied().min().unwrap_or(0);
        let mut appends = self.core.store.subscribe_appends();
        let mut shutdown = self.shutdown.clone();
        let mut backoff = BACKOFF_FIRST;
        while !self.stopping() {
            appends.borrow_and_update();
            if !self.core.store.is_live(&self.core.part) {
                tracing::info!("topic deleted; stage stopped on this partition");
                for n in self.stage.names() {
                    self.lag.remove(n, &self.core.part);
                }
                self.report(|h, n, t, p| h.remove(n, t, p));
                return;
            }
            let offsets = self.core.store.offsets(&self.core.part);
            if next < offsets.log_start {
                tracing::warn!(
                    from = next,
                    to = offsets.log_start,
                    "records removed by retention before they were handled"
                );
                next = offsets.log_start;
            }
            for l in &self.lags {
                l.next.store(next, Ordering::SeqCst);
            }
            // Stages read committed records only: nothing past the last stable offset (an open
            // transaction's records wait for its marker).
            let stable = self
                .core
                .store
                .last_stable_offset(&self.core.part)
                .unwrap_or(offsets.log_end)
                .min(offsets.log_end);
            if next >= stable {
                tokio::select! {
                    _ = appends.changed() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let core = self.core.clone();
            let committed = match self.stage.clone() {
                Stage::Handler { handler, dlq } => {
                    match self.handler_pass(&core, handler, &dlq, &name, next).await {
                        Some(r) => r,
                        None => return, // interrupted: unhandled events are handled next time
                    }
                }
                Stage::DeadLetter {
                    dlq,
                    stats,
                    profiles,
                } => {
                    let skip = (starts.first().copied().unwrap_or(0), starts.get(1).copied());
                    let dlq = self.current(&dlq);
                    off_runtime(move || {
                        let dlq = dlq?;
                        let (events, end) = core.read(next, INTERNAL_READ_BYTES)?;
                        core.dead_letter(&dlq, &stats, profiles.as_ref(), &events, end, skip)?;
                        Ok(end)
                    })
                    .await
                }
                Stage::Profile { profiles } => {
                    off_runtime(move || {
                        let (events, end) = core.read(next, INTERNAL_READ_BYTES)?;
                        core.update_profiles(&profiles, &events, end)?;
                        Ok(end)
                    })
                    .await
                }
            };
            match committed {
                Ok(end) => {
                    next = end;
                    backoff = BACKOFF_FIRST;
                    self.report(|h, n, t, p| h.running(n, t, p));
                }
                Err(e) => {
                    let error = format!("cannot read or commit from offset {next}: {e}");
                    self.report(|h, n, t, p| h.failed(n, t, p, &error));
                    self.sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One pass of a handler stage: read and check off the runtime, deliver, commit off the
    /// runtime. None when shutdown interrupted the handler's retries.
    async fn handler_pass(
        &mut self,
        core: &Arc<Core>,
        handler: Arc<dyn Handler>,
        dlq: &Topic,
        name: &str,
        next: i64,
    ) -> Option<Result<i64, kafkabox_storage::StoreError>> {
        let dlq = match self.current(dlq) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let c = core.clone();
        let read = off_runtime(move || {
            let (events, end) = c.read(next, READ_BYTES)?;
            // Undecodable batches: the dead-letter stage's when the topic has a contract,
            // this stage's to dead-letter otherwise.
            let (broken, events): (Vec<Event>, Vec<Event>) =
                events.into_iter().partition(|e| e.decode_error.is_some());
            let broken = if c.contract.is_some() {
                Vec::new()
            } else {
                broken
            };
            // Invalid records are the dead-letter stage's; handlers see valid ones: those it
            // has checked by its verdict, the rest by checking here.
            let events: Vec<Event> = match &c.contract {
                Some(contract) => {
                    let (checked, invalid) = c.verdicts.lookup(next);
                    events
                        .into_iter()
                        .filter(|e| {
                            if e.offset < checked {
                                !invalid.contains(&e.offset)
                            } else {
                                contract.check(e.value.as_deref()).is_ok()
                            }
                        })
                        .collect()
                }
                None => events,
            };
            Ok((events, broken, end))
        })
        .await;
        let (events, broken, end) = match read {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let outcome = if events.is_empty() {
            Delivery::Done
        } else {
            self.deliver(handler.as_ref(), &events).await
        };
        let name = name.to_string();
        let c = core.clone();
        let done = match outcome {
            Delivery::Interrupted => return None,
            Delivery::Done => {
                off_runtime(move || {
                    let broken: Vec<(&Event, String, Option<String>)> = broken
                        .iter()
                        .map(|e| (e, e.decode_error.clone().unwrap_or_default(), None))
                        .collect();
                    c.append_dead_letters(&dlq, &broken, &[&name], end, &[])
                })
                .await
            }
            Delivery::Refused(reason) => {
                off_runtime(move || {
                    let reason = format!("handler {name}: {reason}");
                    let mut rejected: Vec<(&Event, String, Option<String>)> = events
                        .iter()
                        .map(|e| (e, reason.clone(), source_of(e)))
                        .collect();
                    rejected.extend(
                        broken
                            .iter()
                            .map(|e| (e, e.decode_error.clone().unwrap_or_default(), None)),
                    );
                    rejected.sort_by_key(|(e, _, _)| e.offset);
                    c.append_dead_letters(&dlq, &rejected, &[&name], end, &[])
                })
                .await
            }
        };
        Some(done.map(|()| end))
    }

    /// Runs the handler until it succeeds, refuses the events permanently, or shutdown
    /// interrupts its retries.
    async fn deliver(&mut self, handler: &dyn Handler, events: &[Event]) -> Delivery {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let call = handler.handle(events);
            tokio::pin!(call);
            let mut shutdown = self.shutdown.clone();
            let result = tokio::select! {
                r = &mut call => r,
                _ = shutdown.changed() => {
                    // A handler gets a moment to finish; past it, its events are handled
                    // again at the next start (handlers see events at least once).
                    match tokio::time::timeout(SHUTDOWN_GRACE, &mut call).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(handler = handler.name(), "handler still busy at shutdown; its events are handled again at the next start");
                            return Delivery::Interrupted;
                        }
                    }
                }
            };
            match result {
                Ok(()) => return Delivery::Done,
                Err(HandlerError::Permanent(reason)) => {
                    tracing::warn!(
                        first = events.first().map(|e| e.offset),
                        last = events.last().map(|e| e.offset),
                        %reason,
                        "handler refused these events permanently; they go to the dead-letter topic"
                    );
                    return Delivery::Refused(reason);
                }
                Err(HandlerError::Transient(reason)) => {
                    let error = format!("handler {}: {reason}", handler.name());
                    self.report(|h, n, t, p| h.failed(n, t, p, &error));
                    if !self.sleep(backoff).await {
                        return Delivery::Interrupted;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Sleeps unless shutdown comes first; false on shutdown.
    async fn sleep(&mut self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = shutdown.changed() => false,
        }
    }
}
