//! [`Health`]: how every stage's workers are doing, per (stage, topic, partition): running,
//! retrying since a time with the error that keeps it from going on, or stopped with the
//! reason. `/ready`, `/api/groups`, `/metrics` and the dashboard read it. A failure is logged
//! when it begins, then once a minute while it lasts, and once more when the stage recovers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a failure that lasts is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The longest error or reason kept (a handler's message may be long).
const MAX_MESSAGE: usize = 1024;

/// (stage name, topic, partition).
type Key = (String, String, i32);

/// What a stage's worker on one partition is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Running,
    /// It failed at `since_ms` and has made no progress since: it retries the same records.
    Retrying {
        since_ms: i64,
        error: String,
        attempts: u64,
    },
    /// The worker ended and will not go on before a restart.
    Stopped {
        since_ms: i64,
        reason: String,
    },
}

/// One worker's health, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageHealth {
    pub stage: String,
    pub topic: String,
    pub partition: i32,
    #[serde(flatten)]
    pub state: State,
}

#[derive(Debug)]
struct Slot {
    state: State,
    /// When the current failure began (monotonic), for the stall timeout.
    failing_since: Option<Instant>,
    logged: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: BTreeMap<Key, Slot>,
    /// Failures per stage since the start (`kafkabox_stage_errors_total`).
    errors: BTreeMap<String, u64>,
}

/// The health of every stage worker. Bounded by the partitions the stages run on.
#[derive(Debug, Default, Clone)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
}

fn key(stage: &str, topic: &str, partition: i32) -> Key {
    (stage.to_string(), topic.to_string(), partition)
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The worker of `stage` on `topic`/`partition` made progress (or started).
    pub(super) fn running(&self, stage: &str, topic: &str, partition: i32) {
        let mut inner = self.lock();
        let slot = inner
            .slots
            .entry(key(stage, topic, partition))
            .or_insert(Slot {
                state: State::Running,
                failing_since: None,
                logged: None,
            });
        if let State::Retrying {
            attempts, since_ms, ..
        } = &slot.state
        {
            tracing::info!(
                stage,
                topic,
                partition,
                attempts,
                failing_for_ms = crate::services::now_ms().saturating_sub(*since_ms),
                "stage recovered; going on"
            );
        }
        slot.state = State::Running;
        slot.failing_since = None;
        slot.logged = None;
    }

    /// The worker of `stage` on `topic`/`partition` failed and will retry the same records.
    /// Logged when the failure begins and then once a minute.
    pub(super) fn failed(&self, stage: &str, topic: &str, partition: i32, error: &str) {
        let mut inner = self.lock();
        *inner.errors.entry(stage.to_string()).or_default() += 1;
        let slot = inner
            .slots
            .entry(key(stage, topic, partition))
            .or_insert(Slot {
                state: State::Running,
                failing_since: None,
                logged: None,
            });
        let error = bounded(error);
        let (since_ms, attempts) = match &slot.state {
            State::Retrying {
                since_ms, attempts, ..
            } => (*since_ms, attempts + 1),
            _ => (crate::services::now_ms(), 1),
        };
        slot.failing_since.get_or_insert_with(Instant::now);
        if slot.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            if attempts == 1 {
                tracing::error!(stage, topic, partition, %error, "stage failed; retrying the same records until it succeeds");
            } else {
                tracing::error!(
                    stage,
                    topic,
                    partition,
                    %error,
                    attempts,
                    failing_for_ms = crate::services::now_ms().saturating_sub(since_ms),
                    "stage still failing; retrying"
                );
            }
            slot.logged = Some(Instant::now());
        }
        slot.state = State::Retrying {
            since_ms,
            error,
            attempts,
        };
    }

    /// The worker of `stage` on `topic`/`partition` ended for `reason` and will not go on.
    pub(super) fn stopped(&self, stage: &str, topic: &str, partition: i32, reason: &str) {
        let reason = bounded(reason);
        tracing::error!(stage, topic, partition, %reason, "stage stopped on this partition until kafkabox restarts");
        let mut inner = self.lock();
        *inner.errors.entry(stage.to_string()).or_default() += 1;
        inner.slots.insert(
            key(stage, topic, partition),
            Slot {
                state: State::Stopped {
                    since_ms: crate::services::now_ms(),
                    reason,
                },
                failing_since: None,
                logged: None,
            },
        );
    }

    /// Forgets the worker of `stage` on `topic`/`partition` (its topic was deleted).
    pub(super) fn remove(&self, stage: &str, topic: &str, partition: i32) {
        self.lock().slots.remove(&key(stage, topic, partition));
    }

    /// Every worker's health, by stage, topic and partition.
    pub fn snapshot(&self) -> Vec<StageHealth> {
        self.lock()
            .slots
            .iter()
            .map(|((stage, topic, partition), slot)| StageHealth {
                stage: stage.clone(),
                topic: topic.clone(),
                partition: *partition,
                state: slot.state.clone(),
            })
            .collect()
    }

    /// Failures per stage since the start.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.lock()
            .errors
            .iter()
            .map(|(s, n)| (s.clone(), *n))
            .collect()
    }

    /// Why the box is not ready, if a stage stopped or has retried without progress for
    /// longer than `stall`: the first such worker, and how many more there are.
    pub fn unready(&self, stall: Duration) -> Option<String> {
        let inner = self.lock();
        let mut reasons = inner.slots.iter().filter_map(|((stage, topic, p), slot)| {
            match &slot.state {
                State::Stopped { reason, .. } => Some(format!(
                    "stage {stage} stopped on {topic}/{p}: {reason}"
                )),
                State::Retrying {
                    error, attempts, ..
                } if slot.failing_since.is_some_and(|t| t.elapsed() >= stall) => {
                    let secs = slot.failing_since.map_or(0, |t| t.elapsed().as_secs());
                    Some(format!(
                        "stage {stage} has made no progress on {topic}/{p} for {secs} s ({attempts} attempts): {error}"
                    ))
                }
                _ => None,
            }
        });
        let first = reasons.next()?;
        Some(match reasons.count() {
            0 => first,
            n => format!("{first} (and {n} more)"),
        })
    }
}

/// Aborts a task when dropped (a worker whose supervising task was cancelled).
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The message of a panic, from a task's [`tokio::task::JoinError`].
pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("worker task ended: {e}");
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    format!("worker panicked: {msg}")
}
