//! Committed offsets of groups: OffsetCommit (checked against the group's generation, or a
//! KIP-848 member's epoch), OffsetFetch (pipeline groups read their stage's positions),
//! OffsetDelete, and offset expiry (`offsets.retention.minutes`) with its background loop.
//! Commits and expiry meet at the commit gate, so expiry never deletes what a commit in flight
//! is writing. The offsets themselves are the store's consumer offsets.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kafkabox_storage::{CommittedOffset, Topic};

use super::consumer_protocol::subscribed_topics;
use super::group::{Group, GroupState};
use super::{storage_name, Coordinator};
use crate::services::error::{Error, Result};

/// An offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Who commits: a member of the current generation, or (generation -1, no member) a client
/// outside any group protocol (`assign()` consumers, admin tools).
#[derive(Debug, Clone)]
pub struct Committer {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
}

/// The per-partition result of an offset operation.
pub type PartitionResult = (String, i32, Result<()>);

/// A hold on [`Coordinator`]'s commit gate.
#[allow(dead_code)]
enum GateGuard<'a> {
    Shared(std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(std::sync::RwLockWriteGuard<'a, ()>),
}

impl Coordinator {
    fn gate(&self, exclusive: bool) -> Result<GateGuard<'_>> {
        let poisoned = || Error::CoordinatorNotAvailable("coordinator state poisoned".into());
        Ok(if exclusive {
            GateGuard::Exclusive(self.commit_gate.write().map_err(|_| poisoned())?)
        } else {
            GateGuard::Shared(self.commit_gate.read().map_err(|_| poisoned())?)
        })
    }

    /// OffsetCommit (blocking: writes the store). Returns the per-partition results and the
    /// write to wait for before answering.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        who: &Committer,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<PartitionResult>, Option<u64>)> {
        self.check_writable(group_id)?;
        // Held to the store write: offset expiry does not run on this group meanwhile.
        let _gate = self.gate(false)?;
        self.check_committer(group_id, who, false)?;
        self.write_offsets(group_id, offsets)
    }

    /// TxnOffsetCommit's checks (blocking): the committer as for OffsetCommit, except that a
    /// group between JoinGroup and SyncGroup takes it (Kafka does not check the state for a
    /// transaction's offsets), and each offset's partition and metadata. Returns the
    /// per-partition results; the offsets are written by [`Coordinator::commit_txn_offsets`]
    /// when the transaction commits.
    pub fn check_txn_offsets(
        &self,
        group_id: &str,
        who: &Committer,
        offsets: &[OffsetToCommit],
    ) -> Result<Vec<PartitionResult>> {
        self.check_writable(group_id)?;
        self.check_committer(group_id, who, true)?;
        Ok(self.offset_writes(offsets).0)
    }

    /// Writes the offsets of a committed transaction (blocking; checked when they were sent).
    /// Returns the write to wait for.
    pub fn commit_txn_offsets(
        &self,
        group_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Option<u64>> {
        let _gate = self.gate(false)?;
        Ok(self.write_offsets(group_id, offsets)?.1)
    }

    /// Whether `who` may commit offsets of `group_id` (Kafka's order; `in_txn`: for a
    /// transaction, where the rebalance state is not checked). A commit from outside any group
    /// protocol to a group that does not exist creates it.
    fn check_committer(&self, group_id: &str, who: &Committer, in_txn: bool) -> Result<()> {
        let consumer_group = {
            let consumers = self.lock_consumers()?;
            consumers.get(group_id).map(|g| {
                g.members
                    .get(&who.member_id)
                    .map(|m| m.epoch)
                    .ok_or(g.members.is_empty())
            })
        };
        match consumer_group {
            // A member of a KIP-848 group commits with its member epoch.
            Some(Ok(epoch)) if who.generation != epoch => {
                return Err(Error::StaleMemberEpoch {
                    current: epoch,
                    got: who.generation,
                })
            }
            Some(Err(false)) if !(who.generation < 0 && who.member_id.is_empty()) => {
                return Err(Error::UnknownMemberId(who.member_id.clone()))
            }
            Some(Err(false)) => return Err(Error::UnknownMemberId(String::new())),
            // An empty group takes commits from outside any group protocol (epoch -1) only: a
            // member that was removed (or left) cannot move offsets after it.
            Some(Err(true)) if who.generation >= 0 => {
                return Err(Error::UnknownMemberId(who.member_id.clone()))
            }
            Some(_) => {}
            None => {}
        }
        if consumer_group.is_none() {
            let mut groups = self.lock()?;
            match groups.get_mut(group_id) {
                None if who.generation < 0 => {
                    let count = groups.len() + self.lock_consumers()?.len();
                    self.check_room(group_id, count)?;
                    let mut g = Group::new(group_id);
                    g.dirty = true;
                    self.persist(&mut g);
                    groups.insert(group_id.to_string(), g);
                }
                None => {
                    return Err(Error::IllegalGeneration {
                        current: -1,
                        got: who.generation,
                    })
                }
                // Kafka's order (ClassicGroup's offset-commit validation): a commit from
                // outside any group protocol reaches an empty group only; a member's is checked
                // for who it is (a static member's instance id included: a replaced one is
                // fenced), then its generation, then whether the group is between JoinGroup and
                // SyncGroup.
                Some(g) if who.generation < 0 && g.state == GroupState::Empty => {}
                Some(g)
                    if who.generation >= 0
                        || !who.member_id.is_empty()
                        || who.instance_id.is_some() =>
                {
                    g.check_member(&who.member_id, who.instance_id.as_deref())?;
                    if who.generation != g.generation {
                        return Err(Error::IllegalGeneration {
                            current: g.generation,
                            got: who.generation,
                        });
                    }
                    if g.state == GroupState::CompletingRebalance && !in_txn {
                        return Err(Error::RebalanceInProgress);
                    }
                    // A member's commit keeps its session alive, as Kafka's does.
                    g.touch(&who.member_id, crate::services::mono_ms());
                }
                Some(_) => return Err(Error::UnknownMemberId(String::new())),
            }
        }
        Ok(())
    }

    /// The store writes of `offsets`, with a result for each (an unknown partition or
    /// metadata over `offset.metadata.max.bytes` is refused).
    #[allow(clippy::type_complexity)]
    fn offset_writes(
        &self,
        offsets: &[OffsetToCommit],
    ) -> (
        Vec<PartitionResult>,
        Vec<(Arc<kafkabox_storage::Partition>, CommittedOffset)>,
    ) {
        let now = crate::services::now_ms();
        let mut results = Vec::with_capacity(offsets.len());
        let mut writes = Vec::new();
        let mut topics: BTreeMap<String, Option<Arc<Topic>>> = BTreeMap::new();
        for o in offsets {
            let t = topics
                .entry(o.topic.clone())
                .or_insert_with(|| self.store.topic(&o.topic))
                .clone();
            let Some(part) = t.as_ref().and_then(|t| t.partition(o.partition).cloned()) else {
                results.push((
                    o.topic.clone(),
                    o.partition,
                    Err(Error::UnknownTopicOrPartition(format!(
                        "{}-{} does not exist",
                        o.topic, o.partition
                    ))),
                ));
                continue;
            };
            let metadata = o.metadata.clone().unwrap_or_default();
            if metadata.len() > self.config.offset_metadata_max_bytes {
                results.push((
                    o.topic.clone(),
                    o.partition,
                    Err(Error::OffsetMetadataTooLarge(metadata.len())),
                ));
                continue;
            }
            writes.push((
                part,
                CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    commit_ms: now,
                    metadata,
                },
            ));
            results.push((o.topic.clone(), o.partition, Ok(())));
        }
        (results, writes)
    }

    /// Writes the offsets that pass [`Coordinator::offset_writes`]' checks.
    fn write_offsets(
        &self,
        group_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<(Vec<PartitionResult>, Option<u64>)> {
        let name = storage_name(group_id);
        let (results, writes) = self.offset_writes(&offsets);
        if writes.is_empty() {
            return Ok((results, None));
        }
        let refs: Vec<(&kafkabox_storage::Partition, CommittedOffset)> = writes
            .iter()
            .map(|(p, c)| (p.as_ref(), c.clone()))
            .collect();
        self.note_commit(group_id);
        let seq = self.store.commit_offsets(&name, &refs)?;
        Ok((results, Some(seq)))
    }

    /// Numbers a commit to `group_id` (offset expiry compares the numbers).
    fn note_commit(&self, group_id: &str) {
        let seq = self.commit_seq.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut groups) = self.lock() {
            if let Some(g) = groups.get_mut(group_id) {
                g.last_commit = seq;
                return;
            }
            if let Ok(mut consumers) = self.lock_consumers() {
                if let Some(g) = consumers.get_mut(group_id) {
                    g.last_commit = seq;
                }
            }
        }
    }

    /// Offset expiry (blocking), Kafka's `offsets.retention.minutes`: the offsets of each group
    /// without members whose commit, and the moment the group became empty, are both older
    /// than the retention are deleted; a group left with neither members nor offsets is
    /// removed with its record. Groups with members keep every offset. Returns (offsets
    /// deleted, groups removed).
    pub fn expire_offsets(&self, now_ms: i64) -> Result<(usize, usize)> {
        let retention = self.config.offsets_retention_ms;
        // Groups without members: id, since when, their latest commit. Taken with no commit
        // in flight, so an unchanged number later means nothing was committed since.
        let candidates: Vec<(String, Option<i64>, u64)> = {
            let _gate = self.gate(true)?;
            let groups = self.lock()?;
            let consumers = self.lock_consumers()?;
            groups
                .values()
                .filter(|g| g.state == GroupState::Empty && g.is_empty())
                .map(|g| (g.id.clone(), g.empty_since_ms, g.last_commit))
                .chain(
                    consumers
                        .values()
                        .filter(|g| g.members.is_empty())
                        .map(|g| (g.id.clone(), g.empty_since_ms, g.last_commit)),
                )
                .collect()
        };
        if candidates.is_empty() {
            return Ok((0, 0));
        }
        let topics = self.store.topics();
        let (mut offsets_deleted, mut groups_removed) = (0, 0);
        for (id, empty_since, last_commit) in candidates {
            // Read without holding anything: commits go on meanwhile.
            let name = storage_name(&id);
            let mut expired: Vec<Arc<kafkabox_storage::Partition>> = Vec::new();
            let mut kept = 0usize;
            for t in &topics {
                for part in &t.partitions {
                    if let Some(c) = self.store.committed_offset(part, &name)? {
                        let since = empty_since.map_or(c.commit_ms, |e| e.max(c.commit_ms));
                        if now_ms.saturating_sub(since) >= retention {
                            expired.push(part.clone());
                        } else {
                            kept += 1;
                        }
                    }
                }
            }
            if expired.is_empty() && kept > 0 {
                continue;
            }
            let _gate = self.gate(true)?;
            let mut groups = self.lock()?;
            let mut consumers = self.lock_consumers()?;
            // Still without members, and nothing committed since it was read?
            let unchanged = match (groups.get(&id), consumers.get(&id)) {
                (Some(g), _) => {
                    g.state == GroupState::Empty && g.is_empty() && g.last_commit == last_commit
                }
                (None, Some(g)) => g.members.is_empty() && g.last_commit == last_commit,
                (None, None) => false,
            };
            if !unchanged {
                continue;
            }
            if !expired.is_empty() {
                let parts: Vec<&kafkabox_storage::Partition> =
                    expired.iter().map(|p| p.as_ref()).collect();
                let seq = self.store.delete_offsets(&name, &parts)?;
                self.wrote(seq);
                offsets_deleted += expired.len();
                tracing::debug!(
                    group = %id,
                    partitions = expired.len(),
                    "committed offsets expired"
                );
            }
            if kept == 0 {
                groups.remove(&id);
                consumers.remove(&id);
                let seq = self.store.remove_group_record(&id)?;
                self.wrote(seq);
                groups_removed += 1;
                tracing::debug!(group = %id, "removed the group: no members, no offsets");
            }
        }
        Ok((offsets_deleted, groups_removed))
    }

    /// Runs [`Coordinator::expire_offsets`] every `offsets.retention.check.interval.ms` (the
    /// first time one interval after start) until shutdown.
    pub async fn expire_offsets_until(
        self: Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let period = self.config.offsets_retention_check_interval;
        let retention_ms = self.config.offsets_retention_ms;
        crate::services::run_every(
            period,
            period,
            shutdown,
            move || self.expire_offsets(crate::services::now_ms()),
            move |outcome| match outcome {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((offsets, groups))) => tracing::info!(
                    offsets,
                    groups,
                    retention_ms,
                    "expired the committed offsets of groups without members (offsets.retention.minutes); removed groups left with neither"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "offset expiry failed"),
                Err(e) => tracing::error!(error = %e, "offset expiry task failed"),
            },
        )
        .await;
    }

    /// The consumer name and topics whose offsets a group id reads.
    fn offsets_source(&self, group_id: &str) -> (String, Option<Vec<String>>) {
        match self.pipeline_group(group_id) {
            Some(p) => (p.stage, Some(p.topics)),
            None => (storage_name(group_id), None),
        }
    }

    /// OffsetFetch (blocking): committed offsets of `topics` (each with its partitions, or all
    /// of them), or of every partition with a commit when `topics` is None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<CommittedOffset>)>> {
        let (name, pipeline_topics) = self.offsets_source(group_id);
        let mut out = Vec::new();
        match topics {
            Some(list) => {
                for (topic, partitions) in list {
                    let t = self.store.topic(&topic);
                    for p in partitions {
                        let c = match t.as_ref().and_then(|t| t.partition(p)) {
                            Some(part) => self.store.committed_offset(part, &name)?,
                            None => None,
                        };
                        out.push((topic.clone(), p, c));
                    }
                }
            }
            None => {
                for t in self.store.topics() {
                    if let Some(only) = &pipeline_topics {
                        if !only.contains(&t.meta.name) {
                            continue;
                        }
                    }
                    for part in &t.partitions {
                        if let Some(c) = self.store.committed_offset(part, &name)? {
                            out.push((t.meta.name.clone(), part.index, Some(c)));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// OffsetDelete (blocking): forgets a group's offsets on partitions it is not subscribed to.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<PartitionResult>> {
        self.check_writable(group_id)?;
        let subscribed: Vec<String> = {
            let groups = self.lock()?;
            let Some(g) = groups.get(group_id) else {
                return Err(Error::GroupIdNotFound(group_id.to_string()));
            };
            if g.state == GroupState::Empty {
                Vec::new()
            } else {
                g.members
                    .values()
                    .flat_map(|m| subscribed_topics(&m.metadata(g.protocol.as_deref())))
                    .collect()
            }
        };
        let name = storage_name(group_id);
        let mut out = Vec::new();
        for (topic, p) in partitions {
            if subscribed.contains(&topic) {
                out.push((topic.clone(), p, Err(Error::GroupSubscribedToTopic(topic))));
                continue;
            }
            match self
                .store
                .topic(&topic)
                .and_then(|t| t.partition(p).cloned())
            {
                Some(part) => {
                    self.store.delete_offsets(&name, &[part.as_ref()])?;
                    out.push((topic, p, Ok(())));
                }
                None => out.push((
                    topic.clone(),
                    p,
                    Err(Error::UnknownTopicOrPartition(format!(
                        "{topic}-{p} does not exist"
                    ))),
                )),
            }
        }
        Ok(out)
    }
}
