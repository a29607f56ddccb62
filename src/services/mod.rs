//! Domain services: what kafkabox does, in its own terms. They know no wire types; the Kafka API
//! layer (`api`), the HTTP API, the CLI and the appliance all call them. This file holds
//! [`Services`] (everything the broker's connections share), its background work, and helpers
//! every service uses ([`run_every`], the clocks, [`truncate`]). Its files and folders:
//!
//! - [`topics`]: creation, deletion, partitions, topic and broker configs, partition offsets and
//!   lookups by time (Kafka's name rule itself is `kafkabox_protocol::names`).
//! - [`groups`]: the group coordinator and committed offsets.
//! - [`produce`]: appending producers' batches (Kafka and HTTP produce).
//! - [`producers`]: idempotent producer ids and the producers a partition remembers.
//! - [`transactions`]: the transaction coordinator (transactional ids, markers, their offsets).
//! - [`records`]: reading records back (browse, dead letters).
//! - [`dead_letters`]: listing, replaying and skipping dead letters.
//! - [`metrics`]: the counters and histograms behind `/metrics`.
//! - [`retention`]: the background sweep (time and size retention, compaction, idle
//!   producers).
//! - [`acl`]: ACL bindings and the authorizer.
//! - [`sasl`], [`users`]: SASL authentication and its users.
//! - [`faults`]: injected faults (tests).
//! - [`log_limit`]: log lines that would repeat as fast as clients retry.
//! - [`error`]: the one error type, mapped to Kafka codes in `api::errors`.

pub mod acl;
pub mod dead_letters;
pub mod error;
pub mod faults;
pub mod groups;
pub mod log_limit;
pub mod metrics;
pub mod produce;
pub mod producers;
pub mod records;
pub mod retention;
pub mod sasl;
pub mod topics;
pub mod transactions;
pub mod users;

use std::collections::HashMap;
use std::sync::Arc;

use kafkabox_protocol::batch;
use kafkabox_storage::{Store, StoreError};
use tokio::sync::watch;

pub use error::{Error, Result};
pub use topics::Topics;

use crate::config::Config;
use crate::contract::Contract;

/// The only node of the cluster.
pub const NODE_ID: i32 = 0;

/// The leader epoch stamped into stored batches and reported by Metadata / ListOffsets.
pub const LEADER_EPOCH: i32 = 0;

/// Current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch as an RFC 3339 time in UTC, for messages people read
/// ("2026-12-07T19:30:00.123Z"); the number itself when out of range.
pub fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

/// `s` cut to at most `max` bytes (at a character boundary), with `…` when cut: for logs and
/// headers that must not repeat a client's megabytes.
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &s[..end]))
}

/// Runs `job` off the async runtime (it may block) every `period`, the first time `first` after
/// the call, until `shutdown` flips; a run in progress finishes first, so what the job uses is
/// free when this returns. `done` gets each run's outcome (an error: the job panicked). The
/// retention sweep and offset expiry run on it.
pub async fn run_every<T, J, D>(
    first: std::time::Duration,
    period: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
    job: J,
    mut done: D,
) where
    T: Send + 'static,
    J: Fn() -> T + Clone + Send + 'static,
    D: FnMut(std::result::Result<T, tokio::task::JoinError>) + Send,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        done(tokio::task::spawn_blocking(job.clone()).await);
    }
}

/// Milliseconds on a monotonic clock (the group coordinator's time).
pub fn mono_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as i64
}

/// What the edge forwarder has not sent yet, against the disk that holds it: nothing is ever
/// dropped (retention keeps unsent records), but once free space falls to
/// `storage.free.bytes.min` producers are refused.
#[derive(Debug, Clone, Default)]
pub struct ForwardOutlook {
    /// Records waiting to be forwarded.
    pub backlog_records: i64,
    pub free_bytes: u64,
    /// `upstream.warn.free.bytes` (or its default).
    pub warn_below_bytes: u64,
    /// `storage.free.bytes.min`: writes are refused below it.
    pub refuse_below_bytes: u64,
    /// Seconds until writes are refused, at the rate free space fell over the last minute
    /// while records waited (None: it is not falling, or nothing waits).
    pub full_in_seconds: Option<u64>,
    /// Why the forwarder warns now, if it does.
    pub warning: Option<String>,
}

/// Everything the broker's connections share.
#[derive(Debug)]
pub struct Services {
    pub store: Store,
    pub config: Arc<Config>,
    pub topics: Topics,
    pub groups: Arc<groups::Coordinator>,
    pub transactions: Arc<transactions::Transactions>,
    pub metrics: Arc<metrics::Metrics>,
    /// ACLs and the authorizer (`authorizer.class.name`).
    pub acl: acl::Authorizer,
    /// SASL users (the one in-memory copy the listeners authenticate against).
    pub users: users::Users,
    /// Failed SASL authentications per client address: the listener makes an address with
    /// recent failures wait before its next attempt is checked.
    pub sasl_slowdown: sasl::Slowdown,
    /// Injected faults (tests): see `faults.allow` and `data.ephemeral`.
    pub faults: faults::Faults,
    /// The edge forwarder's last failure (ms since the epoch, why), for the HTTP API.
    pub forward_error: std::sync::Mutex<Option<(i64, String)>>,
    /// The edge forwarder's backlog against the disk, while it runs.
    pub forward_outlook: std::sync::Mutex<Option<ForwardOutlook>>,
    /// Topics whose produce requests are checked record by record against a contract
    /// (`customer.events.on.invalid = reject`): an invalid record fails the batch.
    contracts: HashMap<String, Arc<Contract>>,
    /// Flips to true at shutdown; long polls and background tasks end on it.
    pub shutdown: watch::Receiver<bool>,
}

impl Services {
    pub async fn start(
        store: Store,
        config: Arc<Config>,
        contracts: HashMap<String, Arc<Contract>>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Services>> {
        let (s, c) = (store.clone(), config.clone());
        let groups =
            tokio::task::spawn_blocking(move || groups::Coordinator::open(s, c, mono_ms()))
                .await??;
        let groups = Arc::new(groups);
        let (s, c, g) = (store.clone(), config.clone(), groups.clone());
        let transactions =
            tokio::task::spawn_blocking(move || transactions::Transactions::open(s, c, g))
                .await??;
        let acl = acl::Authorizer::open(store.clone(), &config)?;
        let metrics: Arc<metrics::Metrics> = Arc::default();
        Ok(Arc::new(Services {
            acl,
            forward_error: std::sync::Mutex::new(None),
            forward_outlook: std::sync::Mutex::new(None),
            faults: faults::Faults::new(config.ephemeral || config.faults_allowed, metrics.clone()),
            users: users::Users::new(store.clone()),
            sasl_slowdown: sasl::Slowdown::default(),
            topics: Topics::new(store.clone(), config.clone())?,
            groups,
            transactions: Arc::new(transactions),
            metrics,
            store,
            config,
            contracts,
            shutdown,
        }))
    }

    /// Background work until shutdown: retention sweeps, the group coordinator's clock and its
    /// offset expiry (`offsets.retention.check.interval.ms`).
    pub async fn run_background(self: Arc<Self>) {
        let expiry = tokio::spawn(
            self.groups
                .clone()
                .expire_offsets_until(self.shutdown.clone()),
        );
        let groups = self.groups.clone();
        let mut shutdown = self.shutdown.clone();
        let clock = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => groups.tick(mono_ms()),
                    _ = shutdown.changed() => return,
                }
            }
        });
        let txn = self.transactions.clone();
        let aborts = tokio::spawn(run_every(
            self.config.transaction_abort_interval,
            self.config.transaction_abort_interval,
            self.shutdown.clone(),
            move || txn.abort_timed_out(),
            |r| {
                if let Err(e) = r {
                    tracing::error!(error = %e, "the transaction timeout sweep failed");
                }
            },
        ));
        let txn = self.transactions.clone();
        let removals = tokio::spawn(run_every(
            self.config.transaction_remove_interval,
            self.config.transaction_remove_interval,
            self.shutdown.clone(),
            move || txn.remove_expired(),
            |r| match r {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot remove expired transactional ids")
                }
                Err(e) => tracing::error!(error = %e, "the transactional id expiry failed"),
                Ok(Ok(_)) => {}
            },
        ));
        retention::run(self).await;
        let _ = aborts.await;
        let _ = removals.await;
        let _ = clock.await;
        let _ = expiry.await;
    }

    /// This data dir's cluster id.
    pub fn cluster_id(&self) -> &str {
        self.store.cluster_id()
    }

    /// Waits until the store's write `seq` (and every one before it) is durable: the group
    /// flush that answers acks=1, acks=all and offset commits.
    pub async fn durable(&self, seq: u64) -> std::result::Result<(), StoreError> {
        self.store.wait_durable(seq).await
    }

    /// Waits until every write made so far is durable.
    pub async fn all_durable(&self) -> std::result::Result<(), StoreError> {
        self.store.wait_durable(self.store.last_write_seq()).await
    }

    /// The reject policy: when `topic` has a contract, every record of `batch` must satisfy it;
    /// the first that does not fails the whole batch, as Kafka fails a batch with an invalid
    /// record. Returns the reason.
    pub fn check_contract(&self, topic: &str, batch: &[u8]) -> Result<(), String> {
        let Some(contract) = self.contracts.get(topic) else {
            return Ok(());
        };
        let (_, records) = batch::decode_batch(batch, self.config.max_inflated_batch_bytes)
            .map_err(|e| e.to_string())?;
        for (i, r) in records.iter().enumerate() {
            if let Err(rejection) = contract.check(r.value.as_deref()) {
                return Err(format!(
                    "record {i} breaks the customer-events contract: {}",
                    rejection.reason
                ));
            }
        }
        Ok(())
    }
}
