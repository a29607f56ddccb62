//! The in-process handler pipeline: an internal consumer per (topic, handler chain) that reads
//! the log straight from storage, hands records to the handlers in offset order per partition,
//! and commits its own offset in sled only after the chain succeeded (at-least-once; it resumes
//! at the first unhandled record after a restart or crash).
//!
//! The listener never waits on a handler: the pipeline only reads the store, so producers keep
//! publishing while a handler is slow or stuck, and the lag per partition shows it.
//!
//! - `mod.rs`: the handler API ([`Event`], [`Handler`], [`HandlerError`]), the stage names
//!   and the retry backoff of transient failures.
//! - `stages.rs`: which stage runs over which topics ([`StageSpec`], [`Stage`]), kept running
//!   over every partition of those topics as the store's catalog changes ([`Stages`]).
//! - `worker.rs`: one worker per (stage, partition) ([`spawn`], [`Shared`]): the loop that
//!   reads, delivers and commits, with retries, backoff and shutdown.
//! - `pass.rs`: the synchronous half of a worker: reading and decoding stored batches, the
//!   contract check, dead letters and profile updates committed with the stage's offset.
//! - `lag.rs`: [`Lag`] per (stage, topic, partition).
//! - `health.rs`: [`Health`] per (stage, topic, partition): running, retrying since a time
//!   with the error, or stopped with the reason (`/ready`, `/api/groups`, `/metrics`).
//! - `ingest.rs`: [`IngestStats`], per-source counters committed with the contract stage.
//! - `verdicts.rs`: [`Verdicts`], what the contract stage found, for the handler stages
//!   behind it.
//! - `dead_letters.rs`: the dead letters of this box's stages, listed, replayed through the
//!   handler that refused them, or skipped.

use std::time::Duration;

use bytes::Bytes;

pub mod dead_letters;
mod health;
mod ingest;
mod lag;
mod pass;
mod stages;
mod verdicts;
mod worker;

pub use health::{Health, StageHealth, State as StageState};
pub use ingest::{IngestStats, MinuteCount, SourceStatus, MINUTES_KEPT};
pub use lag::Lag;
pub(crate) use stages::ensure_topic;
pub use stages::{Over, SharedProfiles, Stage, StageKind, StageSpec, Stages};
pub use verdicts::Verdicts;
pub use worker::{spawn, spawn_partitions, Shared};

/// One record handed to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (the producer's CreateTime).
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// Set when the stored batch at `offset` could not be decoded (a codec failure): `value`
    /// then holds the whole stored batch, and the event goes to the dead-letter topic with
    /// this reason instead of to handlers.
    pub decode_error: Option<String>,
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The events themselves are bad: retrying cannot help. The pipeline moves on.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Something outside is down: the pipeline backs off and retries the same events, in order,
    /// and never skips them.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// An event handler. Called with consecutive records of one partition, in offset order.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// A stable name: the pipeline's committed offsets are kept under it.
    fn name(&self) -> &str;
    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError>;
}

/// Retry backoff for transient failures: first and cap (also `kafkabox handle`'s).
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The consumer name of the dead-letter stage, which checks records against the topic's
/// contract (its offsets are kept under it, and its dead letters carry it in
/// `kafkabox.dlq.stage`). Stored as "contract" in data dirs and dead-letter topics: the
/// string must not change.
pub const DEAD_LETTER_STAGE: &str = "contract";
/// The profile stage's consumer name.
pub const PROFILE_STAGE: &str = "profile";
