//! Which stage runs where: [`Stage`] (what a worker does with the records it reads),
//! [`StageSpec`] (a stage and the topics it runs over) and [`Stages`], which runs a worker for
//! every partition of those topics: those there at start, and those created, grown or
//! re-created later (it follows the store's catalog,
//! [`kafkabox_storage::Store::subscribe_catalog`]). The pipeline owns its stages; the appliance
//! only says which to run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use kafkabox_storage::Topic;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Handler, IngestStats, Shared, DEAD_LETTER_STAGE, PROFILE_STAGE};
use crate::contract::Contract;
use crate::services::dead_letters::{dead_letter_topic, DEAD_LETTER_SUFFIX};
use crate::services::Topics;

/// What a worker does with the records it reads.
#[derive(Clone)]
pub enum Stage {
    /// Hands the records (only the valid ones when the topic has a contract) to a handler;
    /// records it refuses permanently go to `dlq` with its reason.
    Handler {
        handler: Arc<dyn Handler>,
        dlq: Arc<Topic>,
    },
    /// Checks every record against the topic's contract and appends the invalid ones to the
    /// dead-letter topic, in the same atomic write as its own offset commit. Counts per source.
    /// With `profiles`, it also updates the customer profiles from the valid records it has
    /// just checked (each record is parsed and checked once) and commits the profile stage's
    /// offset in that same write.
    DeadLetter {
        dlq: Arc<Topic>,
        stats: IngestStats,
        profiles: Option<SharedProfiles>,
    },
    /// Updates customer profiles ([`crate::profile`]) from the records of a topic without a
    /// contract (every JSON record), in the same atomic write as its offset commit.
    Profile { profiles: SharedProfiles },
}

/// The profile cache shared by every partition's worker; its lock also serialises profile
/// updates across partitions (one customer's events may arrive on several).
pub type SharedProfiles = Arc<Mutex<crate::profile::Profiles>>;

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Handler { handler, .. } => handler.name(),
            Stage::DeadLetter { .. } => DEAD_LETTER_STAGE,
            Stage::Profile { .. } => PROFILE_STAGE,
        }
    }

    /// Every stage name whose offsets this stage commits.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Stage::DeadLetter {
                profiles: Some(_), ..
            } => vec![DEAD_LETTER_STAGE, PROFILE_STAGE],
            other => vec![other.name()],
        }
    }
}

/// Which topics a stage runs over.
pub enum Over {
    Topic(String),
    /// Every topic but the dead-letter ones, also those created later (the edge forwarder).
    AllButDeadLetters,
}

impl Over {
    fn covers(&self, topic: &str) -> bool {
        match self {
            Over::Topic(t) => t == topic,
            Over::AllButDeadLetters => !topic.ends_with(DEAD_LETTER_SUFFIX),
        }
    }
}

/// What a stage does, made into a [`Stage`] for each topic it runs over.
pub enum StageKind {
    DeadLetter {
        stats: IngestStats,
        profiles: Option<SharedProfiles>,
    },
    Profile {
        profiles: SharedProfiles,
    },
    Handler {
        handler: Arc<dyn Handler>,
    },
}

impl StageKind {
    /// The stage's name (its consumer name).
    fn name(&self) -> &str {
        match self {
            StageKind::DeadLetter { .. } => DEAD_LETTER_STAGE,
            StageKind::Profile { .. } => PROFILE_STAGE,
            StageKind::Handler { handler } => handler.name(),
        }
    }

    /// Whether the stage writes the dead-letter topics of the topics it runs over.
    fn dead_letters(&self) -> bool {
        !matches!(self, StageKind::Profile { .. })
    }
}

/// A stage and the topics it runs over.
pub struct StageSpec {
    pub over: Over,
    pub kind: StageKind,
    /// The contract of its topics: the dead-letter stage checks it, a handler stage sees only
    /// the records that keep it.
    pub contract: Option<Arc<Contract>>,
}

impl StageSpec {
    /// The stage over `topic` (its dead-letter topic created when missing).
    async fn stage(&self, topics: &Topics, topic: &kafkabox_storage::Topic) -> Result<Stage> {
        Ok(match &self.kind {
            StageKind::DeadLetter { stats, profiles } => Stage::DeadLetter {
                dlq: ensure_dead_letter_topic(topics, topic).await?,
                stats: stats.clone(),
                profiles: profiles.clone(),
            },
            StageKind::Profile { profiles } => Stage::Profile {
                profiles: profiles.clone(),
            },
            StageKind::Handler { handler } => Stage::Handler {
                handler: handler.clone(),
                dlq: ensure_dead_letter_topic(topics, topic).await?,
            },
        })
    }
}

/// The stages and the partitions they run on.
pub struct Stages {
    specs: Vec<StageSpec>,
    /// (index in `specs`, store-wide partition id) of every running worker.
    running: std::collections::HashSet<(usize, u32)>,
    topics: Topics,
    groups: Arc<crate::services::groups::Coordinator>,
    shared: Shared,
}

impl Stages {
    /// `specs` over the topics of `topics`; `groups` is told which stage runs over which topic
    /// (for the consumer group listings and the dead letters).
    pub fn new(
        specs: Vec<StageSpec>,
        topics: Topics,
        groups: Arc<crate::services::groups::Coordinator>,
        shared: Shared,
    ) -> Stages {
        Stages {
            specs,
            running: std::collections::HashSet::new(),
            topics,
            groups,
            shared,
        }
    }

    /// Starts a worker for every partition of every stage's topics (an error when one cannot
    /// start), then keeps them running over the topics created, grown or re-created later in
    /// a task of `tasks`, which waits for the workers it started at shutdown.
    pub async fn start(mut self, tasks: &mut JoinSet<()>) -> Result<()> {
        let catalog = self.shared.store.subscribe_catalog();
        self.reconcile(tasks).await?;
        let shutdown = self.shared.shutdown.clone();
        tasks.spawn(keep_stages(self, catalog, shutdown));
        Ok(())
    }

    /// Starts a worker for every partition of every stage's topics that has none.
    async fn reconcile(&mut self, tasks: &mut JoinSet<()>) -> Result<()> {
        let live = self.topics.list();
        let ids: std::collections::HashSet<u32> = live
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.id))
            .collect();
        // Partition ids are never reused: what is kept for those of deleted topics can go.
        self.running.retain(|(_, id)| ids.contains(id));
        if let Ok(mut v) = self.shared.verdicts.lock() {
            v.retain(|id, _| ids.contains(id));
        }
        let names: std::collections::HashSet<&str> =
            live.iter().map(|t| t.meta.name.as_str()).collect();
        self.groups.retain_pipeline_topics(|t| names.contains(t));
        // Topics the stages write may not be deleted while they run; one that disappeared
        // anyway (a data dir edited by hand) is created again here, and the workers that
        // retry on it find it.
        let mut written = BTreeMap::new();
        for (i, spec) in self.specs.iter().enumerate() {
            if !spec.kind.dead_letters() {
                continue;
            }
            let stage = spec.kind.name();
            for t in live.iter().filter(|t| spec.over.covers(&t.meta.name)) {
                let dlq = dead_letter_topic(&t.meta.name);
                let runs = t
                    .partitions
                    .iter()
                    .any(|p| self.running.contains(&(i, p.id)));
                if runs && self.topics.get(&dlq).is_none() {
                    tracing::warn!(stage, topic = %dlq, "the dead-letter topic of a running stage is gone; creating it again");
                    ensure_dead_letter_topic(&self.topics, t).await?;
                }
                written
                    .entry(dlq)
                    .or_insert_with(|| (stage.to_string(), t.meta.name.clone()));
            }
        }
        self.topics.set_stage_writes(written);
        for (i, spec) in self.specs.iter().enumerate() {
            for t in live.iter().filter(|t| spec.over.covers(&t.meta.name)) {
                let new: Vec<Arc<kafkabox_storage::Partition>> = t
                    .partitions
                    .iter()
                    .filter(|p| !self.running.contains(&(i, p.id)))
                    .cloned()
                    .collect();
                if new.is_empty() {
                    continue;
                }
                let stage = spec.stage(&self.topics, t).await?;
                for name in stage.names() {
                    self.groups.register_pipeline(name, &t.meta.name);
                }
                if !self.running.is_empty() {
                    tracing::info!(stage = stage.name(), topic = %t.meta.name, partitions = new.len(), "stage started on new partitions");
                }
                super::spawn_partitions(tasks, &self.shared, t, &new, stage, spec.contract.clone());
                self.running.extend(new.iter().map(|p| (i, p.id)));
            }
        }
        Ok(())
    }
}

/// Keeps the stages running over topics created, grown or re-created after the start; waits
/// for the workers it started at shutdown.
async fn keep_stages(
    mut stages: Stages,
    mut catalog: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut log = crate::services::log_limit::RateLimitedLog::new();
    while !*shutdown.borrow() {
        tokio::select! {
            r = catalog.changed() => if r.is_err() { break },
            _ = retry.tick() => {}
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next() => continue,
        }
        if let Err(e) = stages.reconcile(&mut tasks).await {
            if let Some(suppressed) = log.allow() {
                tracing::error!(error = %e, suppressed, "cannot start a stage on a new topic; retrying");
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// `<topic>.dlq`, with as many partitions as `topic` (record i of partition p goes to p).
async fn ensure_dead_letter_topic(
    topics: &Topics,
    topic: &kafkabox_storage::Topic,
) -> Result<Arc<kafkabox_storage::Topic>> {
    ensure_topic(
        topics,
        &dead_letter_topic(&topic.meta.name),
        topic.partitions.len() as u32,
    )
    .await
}

/// The topic `name`, created with `partitions` partitions if it does not exist.
pub(crate) async fn ensure_topic(
    topics: &Topics,
    name: &str,
    partitions: u32,
) -> Result<Arc<kafkabox_storage::Topic>> {
    if let Some(t) = topics.get(name) {
        return Ok(t);
    }
    let t = topics.clone();
    let n = name.to_string();
    match tokio::task::spawn_blocking(move || t.create(&n, partitions, BTreeMap::new()))
        .await
        .context("topic creation task")?
    {
        Ok(t) => Ok(t),
        // Created meanwhile by a producer's Metadata request.
        Err(_) if topics.get(name).is_some() => topics.get(name).context("topic vanished"),
        Err(e) => Err(anyhow::anyhow!("cannot create topic {name}: {e}")),
    }
}
