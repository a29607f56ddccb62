//! The group coordinator: every consumer group's state machine ([`group::Group`]), their
//! committed offsets, and the handler pipeline's own positions shown as read-only groups.
//!
//! Offsets of Kafka groups and of pipeline stages live in one place, the store's consumer
//! offsets (`Store::commit_offsets`, `Store::committed_offset`): a Kafka group `g` is stored
//! under the consumer name `group:g`, a pipeline stage `s` under `s` and shown as the group
//! `kafkabox.s`. Group records (members, generation, assignments) are persisted when a
//! rebalance completes and when a group empties, so both survive a restart and a kill -9.
//!
//! Time is passed in: [`Coordinator::tick`] advances every group's timers, and the background
//! task calls it with the monotonic clock.
//!
//! What clients leave here is bounded: one member's metadata and assignment
//! (`group.max.member.metadata.bytes`), the number of groups (`group.max.count`), and how long
//! the offsets of a group without members are kept (`offsets.retention.minutes`, expired by
//! [`Coordinator::expire_offsets`]; a group left with neither members nor offsets goes too).

pub mod consumer;
pub mod group;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use kafkabox_storage::{CommittedOffset, Store, Topic};

use super::error::{Error, Result};
use super::log_limit::RateLimitedLog;
use crate::config::Config;
use consumer::{ConsumerGroup, ConsumerLimits, Heartbeat, HeartbeatAnswer, Tp};
pub use group::{Answer, GroupLimits, GroupState, JoinCode, JoinRequest, JoinResult, SyncResult};
use group::{Group, StoredGroup};

/// Prefix of the groups that show the handler pipeline's positions.
pub const PIPELINE_GROUP_PREFIX: &str = "kafkabox.";

/// The consumer name a Kafka group's offsets are stored under.
fn storage_name(group_id: &str) -> String {
    format!("group:{group_id}")
}

/// A pipeline stage shown as a group.
#[derive(Debug, Clone)]
struct PipelineGroup {
    stage: String,
    topics: Vec<String>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name.
    pub state: String,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// A KIP-848 member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assignment: Vec<Tp>,
    pub target: Vec<Tp>,
}

/// A KIP-848 group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<ConsumerMemberDescription>,
}

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

/// The per-member result of a LeaveGroup: member id, instance id, outcome.
pub type MemberResult = (String, Option<String>, Result<()>);

/// The per-partition result of an offset operation.
pub type PartitionResult = (String, i32, Result<()>);

/// A stored group record brought back to life.
#[derive(Debug)]
pub enum Restored {
    Classic(Group),
    Consumer(ConsumerGroup),
}

/// Decodes a stored group record (any bytes: it is read from the disk) into the group it
/// describes; its members' sessions start at `now`. A record that does not decode starts the
/// group empty (its committed offsets are stored apart and stay). The fuzz target
/// `group_record` feeds it arbitrary bytes.
pub fn restore_record(id: &str, bytes: &[u8], now: i64) -> Restored {
    match serde_json::from_slice::<StoredGroup>(bytes) {
        Ok(s) if s.kind.as_deref() == Some("consumer") => {
            let mut g = ConsumerGroup::new(id);
            g.epoch = s.generation;
            g.assignment_epoch = s.generation;
            g.empty_since_ms = s.empty_since_ms;
            Restored::Consumer(g)
        }
        Ok(s) => Restored::Classic(Group::restore(id, s, now)),
        Err(e) => {
            tracing::error!(group = %super::truncate(id, 200), error = %e, "unreadable group record; starting the group empty");
            Restored::Classic(Group::new(id))
        }
    }
}

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct Coordinator {
    store: Store,
    config: Arc<Config>,
    groups: Mutex<BTreeMap<String, Group>>,
    /// KIP-848 groups. Lock order: `groups` first, then `consumers`; an id lives in one map.
    consumers: Mutex<BTreeMap<String, ConsumerGroup>>,
    pipeline: Mutex<BTreeMap<String, PipelineGroup>>,
    /// Write sequence of the latest group record: answers that change a group wait until it
    /// is durable (`Store::wait_durable`), as Kafka's wait for the group metadata write.
    persisted: std::sync::atomic::AtomicU64,
    /// Offset commits hold it shared from their checks to their store write; offset expiry
    /// holds it alone while it picks groups and while it deletes, so it never deletes an
    /// offset (or a group) a commit in flight is writing. Lock order: this, `groups`,
    /// `consumers`.
    commit_gate: RwLock<()>,
    /// Numbers the offset commits (each group keeps the number of its latest).
    commit_seq: AtomicU64,
    /// "group.max.count reached", at most once a minute.
    full_log: Mutex<RateLimitedLog>,
}

impl Coordinator {
    /// Loads the stored groups (blocking).
    pub fn open(store: Store, config: Arc<Config>, now: i64) -> Result<Coordinator> {
        let mut groups = BTreeMap::new();
        let mut consumers = BTreeMap::new();
        for (id, bytes) in store.group_records()? {
            match restore_record(&id, &bytes, now) {
                Restored::Classic(g) => {
                    groups.insert(id, g);
                }
                Restored::Consumer(g) => {
                    consumers.insert(id, g);
                }
            }
        }
        Ok(Coordinator {
            store,
            config,
            groups: Mutex::new(groups),
            consumers: Mutex::new(consumers),
            pipeline: Mutex::new(BTreeMap::new()),
            persisted: std::sync::atomic::AtomicU64::new(0),
            commit_gate: RwLock::new(()),
            commit_seq: AtomicU64::new(0),
            full_log: Mutex::new(RateLimitedLog::every(std::time::Duration::from_secs(60))),
        })
    }

    /// Refuses to create a group when `count` groups exist already (`group.max.count`).
    fn check_room(&self, group_id: &str, count: usize) -> Result<()> {
        let max = self.config.group_max_count;
        if count < max {
            return Ok(());
        }
        let allowed = self.full_log.lock().ok().and_then(|mut l| l.allow());
        if let Some(suppressed) = allowed {
            tracing::warn!(
                group = %super::truncate(group_id, 200),
                max,
                suppressed,
                "group.max.count reached: new groups are refused with INVALID_GROUP_ID until groups are deleted or their offsets expire (offsets.retention.minutes), or the bound is raised"
            );
        }
        Err(Error::TooManyGroups(
            super::truncate(group_id, 200).into_owned(),
            max,
        ))
    }

    /// Refuses protocol metadata over `group.max.member.metadata.bytes` (all of one member's
    /// protocols together, names included).
    fn check_metadata(&self, protocols: &[(String, Bytes)]) -> Result<()> {
        let limit = self.config.group_max_member_metadata_bytes;
        let size: usize = protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if size > limit {
            return Err(Error::InvalidRequest(format!(
                "the member's protocol metadata takes {size} bytes, over group.max.member.metadata.bytes ({limit})"
            )));
        }
        Ok(())
    }

    fn gate(&self, exclusive: bool) -> Result<GateGuard<'_>> {
        let poisoned = || Error::CoordinatorNotAvailable("coordinator state poisoned".into());
        Ok(if exclusive {
            GateGuard::Exclusive(self.commit_gate.write().map_err(|_| poisoned())?)
        } else {
            GateGuard::Shared(self.commit_gate.read().map_err(|_| poisoned())?)
        })
    }

    /// Sets when a group became empty (for offset expiry), marking the record to be written.
    fn note_emptiness(empty: bool, since: &mut Option<i64>, dirty: &mut bool) {
        match (empty, since.is_some()) {
            (true, false) => {
                *since = Some(super::now_ms());
                *dirty = true;
            }
            (false, true) => *since = None,
            _ => {}
        }
    }

    fn limits(&self) -> GroupLimits {
        GroupLimits {
            min_session_timeout_ms: self.config.group_min_session_timeout_ms,
            max_session_timeout_ms: self.config.group_max_session_timeout_ms,
            max_size: self.config.group_max_size,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<String, Group>>> {
        self.groups
            .lock()
            .map_err(|_| Error::CoordinatorNotAvailable("coordinator state poisoned".into()))
    }

    fn wrote(&self, seq: u64) {
        self.persisted
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
    }

    /// The write to wait for before answering a request that changed a group.
    pub fn persisted_seq(&self) -> u64 {
        self.persisted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock_consumers(&self) -> Result<MutexGuard<'_, BTreeMap<String, ConsumerGroup>>> {
        self.consumers
            .lock()
            .map_err(|_| Error::CoordinatorNotAvailable("coordinator state poisoned".into()))
    }

    fn consumer_limits(&self) -> ConsumerLimits {
        ConsumerLimits {
            session_timeout_ms: self.config.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: self.config.group_consumer_heartbeat_interval_ms,
            max_size: self.config.group_max_size,
        }
    }

    /// Partition count of a topic, for the server-side assignor.
    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.store.topic(topic).map(|t| t.partitions.len() as i32)
    }

    fn persist_consumer(&self, g: &mut ConsumerGroup) {
        Self::note_emptiness(g.members.is_empty(), &mut g.empty_since_ms, &mut g.dirty);
        if !g.dirty {
            return;
        }
        g.dirty = false;
        let stored = StoredGroup {
            kind: Some("consumer".into()),
            protocol_type: Some("consumer".into()),
            protocol: None,
            generation: g.epoch,
            leader: None,
            members: Vec::new(),
            rebalancing: false,
            empty_since_ms: g.empty_since_ms,
        };
        match serde_json::to_vec(&stored) {
            Ok(bytes) => match self.store.put_group_record(&g.id, &bytes) {
                Ok(seq) => self.wrote(seq),
                Err(e) => tracing::error!(group = %g.id, error = %e, "could not store the group"),
            },
            Err(e) => tracing::error!(group = %g.id, error = %e, "could not encode the group"),
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848).
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat,
        now: i64,
    ) -> Result<HeartbeatAnswer> {
        self.check_writable(group_id)?;
        let limits = self.consumer_limits();
        let mut classic = self.lock()?;
        if let Some(g) = classic.get(group_id) {
            if !g.is_empty() {
                return Err(Error::WrongGroupType(group_id.to_string(), "classic"));
            }
        }
        let mut consumers = self.lock_consumers()?;
        let created = !consumers.contains_key(group_id);
        let mut converted = false;
        if created {
            // Only a joining member (epoch 0) creates a group, as in Kafka: a leave or a
            // heartbeat for a group nobody knows must not leave an empty group behind.
            match hb.member_epoch {
                0 if classic.contains_key(group_id) => {
                    // An empty classic group (offsets only) becomes a consumer group.
                    classic.remove(group_id);
                    converted = true;
                }
                0 => self.check_room(group_id, classic.len() + consumers.len())?,
                -1 | -2 => {
                    return Ok(HeartbeatAnswer {
                        member_id: hb.member_id,
                        member_epoch: hb.member_epoch,
                        heartbeat_interval_ms: 0,
                        assignment: None,
                    })
                }
                _ => return Err(Error::UnknownMemberId(hb.member_id)),
            }
        }
        drop(classic);
        let g = consumers
            .entry(group_id.to_string())
            .or_insert_with(|| ConsumerGroup::new(group_id));
        let r = g.heartbeat(hb, &limits, &|t| self.partition_count(t), now);
        if r.is_err() && created && !converted && g.members.is_empty() {
            // A refused first heartbeat leaves no group behind.
            consumers.remove(group_id);
            return r;
        }
        self.persist_consumer(g);
        r
    }

    /// ConsumerGroupDescribe; None when there is no such KIP-848 group.
    pub fn consumer_describe(&self, group_id: &str) -> Result<Option<ConsumerGroupDescription>> {
        if self.lock()?.contains_key(group_id) {
            return Err(Error::WrongGroupType(group_id.to_string(), "classic"));
        }
        let consumers = self.lock_consumers()?;
        Ok(consumers.get(group_id).map(|g| ConsumerGroupDescription {
            group_id: g.id.clone(),
            state: consumer::state_name(g),
            epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.name(),
            members: g
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assignment: m.assigned.iter().cloned().collect(),
                    target: g
                        .target
                        .get(&m.id)
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                })
                .collect(),
        }))
    }

    /// Shows the pipeline stage `stage` over `topics` as the read-only group `kafkabox.<stage>`.
    pub fn register_pipeline(&self, stage: &str, topic: &str) {
        if let Ok(mut p) = self.pipeline.lock() {
            let e = p
                .entry(format!("{PIPELINE_GROUP_PREFIX}{stage}"))
                .or_insert_with(|| PipelineGroup {
                    stage: stage.to_string(),
                    topics: Vec::new(),
                });
            if !e.topics.iter().any(|t| t == topic) {
                e.topics.push(topic.to_string());
            }
        }
    }

    /// Forgets the topics of pipeline groups for which `exists` is false (deleted topics).
    pub fn retain_pipeline_topics(&self, exists: impl Fn(&str) -> bool) {
        if let Ok(mut p) = self.pipeline.lock() {
            for g in p.values_mut() {
                g.topics.retain(|t| exists(t));
            }
        }
    }

    /// The pipeline stages that read `topic` (their names, as committed in the store).
    pub fn pipeline_stages(&self, topic: &str) -> Vec<String> {
        match self.pipeline.lock() {
            Ok(p) => p
                .values()
                .filter(|g| g.topics.iter().any(|t| t == topic))
                .map(|g| g.stage.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn pipeline_group(&self, id: &str) -> Option<PipelineGroup> {
        self.pipeline.lock().ok()?.get(id).cloned()
    }

    fn check_writable(&self, group_id: &str) -> Result<()> {
        if group_id.is_empty() {
            return Err(Error::InvalidGroupId(group_id.to_string()));
        }
        if group_id.starts_with(PIPELINE_GROUP_PREFIX) {
            return Err(Error::GroupAuthorization(group_id.to_string()));
        }
        Ok(())
    }

    /// Writes a group's record if it changed (a rebalance completed, it emptied, a member went).
    fn persist(&self, g: &mut Group) {
        Self::note_emptiness(
            g.state == GroupState::Empty && g.is_empty(),
            &mut g.empty_since_ms,
            &mut g.dirty,
        );
        if !g.dirty {
            return;
        }
        if matches!(
            g.state,
            GroupState::PreparingRebalance | GroupState::CompletingRebalance
        ) && !g.members_removed
        {
            // Kafka persists a group when it becomes Stable or Empty; it stays dirty until then.
            // A member that went is the exception: what it sent leaves the record now.
            return;
        }
        g.dirty = false;
        g.members_removed = false;
        match serde_json::to_vec(&g.to_stored()) {
            Ok(bytes) => match self.store.put_group_record(&g.id, &bytes) {
                Ok(seq) => self.wrote(seq),
                Err(e) => tracing::error!(group = %g.id, error = %e, "could not store the group"),
            },
            Err(e) => tracing::error!(group = %g.id, error = %e, "could not encode the group"),
        }
    }

    /// JoinGroup.
    pub fn join(
        &self,
        group_id: &str,
        mut req: JoinRequest,
        now: i64,
    ) -> Result<Answer<JoinResult>> {
        self.check_writable(group_id)?;
        self.check_metadata(&req.protocols)?;
        // Kept for the member's lifetime: copied out of the request frame, which slices of it
        // would keep in memory whole (a small metadata behind a large request).
        req.protocols = req
            .protocols
            .into_iter()
            .map(|(n, m)| (n, Bytes::copy_from_slice(&m)))
            .collect();
        let limits = self.limits();
        let mut groups = self.lock()?;
        let mut converted = false;
        let count = {
            let mut consumers = self.lock_consumers()?;
            match consumers.get(group_id) {
                Some(c) if !c.members.is_empty() => {
                    return Err(Error::InconsistentGroupProtocol(format!(
                        "group '{group_id}' is a consumer (KIP-848) group with members"
                    )))
                }
                Some(_) => {
                    consumers.remove(group_id);
                    converted = true;
                }
                None => {}
            }
            groups.len() + consumers.len()
        };
        // A new group (not an empty KIP-848 one turning classic) must fit group.max.count.
        let created = !groups.contains_key(group_id) && !converted;
        if created {
            self.check_room(group_id, count)?;
        }
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        let r = g.join(req, &limits, now);
        if r.is_err() && created && g.is_empty() {
            // A refused first join leaves no group behind.
            groups.remove(group_id);
            return r;
        }
        self.persist(g);
        r
    }

    /// SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> Result<Answer<SyncResult>> {
        self.check_writable(group_id)?;
        let limit = self.config.group_max_member_metadata_bytes;
        if let Some((member, a)) = assignments.iter().find(|(_, a)| a.len() > limit) {
            return Err(Error::InvalidRequest(format!(
                "the assignment of member '{}' takes {} bytes, over group.max.member.metadata.bytes ({limit})",
                super::truncate(member, 200),
                a.len()
            )));
        }
        let mut groups = self.lock()?;
        let Some(g) = groups.get_mut(group_id) else {
            return Err(Error::UnknownMemberId(member_id.to_string()));
        };
        let r = g.sync(
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol,
            assignments,
            now,
        );
        self.persist(g);
        r
    }

    /// Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<()> {
        self.check_writable(group_id)?;
        let mut groups = self.lock()?;
        let Some(g) = groups.get_mut(group_id) else {
            return Err(Error::UnknownMemberId(member_id.to_string()));
        };
        g.heartbeat(member_id, instance_id, generation, now)
    }

    /// LeaveGroup: each (member id, instance id) leaves; a result per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> Result<Vec<MemberResult>> {
        self.check_writable(group_id)?;
        let mut groups = self.lock()?;
        let Some(g) = groups.get_mut(group_id) else {
            return Ok(members
                .iter()
                .map(|(m, i)| (m.clone(), i.clone(), Err(Error::UnknownMemberId(m.clone()))))
                .collect());
        };
        let out = members
            .iter()
            .map(|(m, i)| {
                let r = g.leave(m, i.as_deref(), now);
                match r {
                    Ok(id) => (id, i.clone(), Ok(())),
                    Err(e) => (m.clone(), i.clone(), Err(e)),
                }
            })
            .collect();
        self.persist(g);
        Ok(out)
    }

    /// Advances every group's timers to `now`.
    pub fn tick(&self, now: i64) {
        if let Ok(mut groups) = self.lock() {
            for g in groups.values_mut() {
                g.tick(now);
                self.persist(g);
            }
        }
        let limits = self.consumer_limits();
        if let Ok(mut consumers) = self.lock_consumers() {
            for g in consumers.values_mut() {
                g.tick(&limits, &|t| self.partition_count(t), now);
                self.persist_consumer(g);
            }
        }
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
                Some(g) if who.generation < 0 && who.member_id.is_empty() => {
                    if g.state != GroupState::Empty {
                        return Err(Error::UnknownMemberId(String::new()));
                    }
                }
                Some(g) => {
                    if g.state == GroupState::CompletingRebalance {
                        return Err(Error::RebalanceInProgress);
                    }
                    if !g.members.contains_key(&who.member_id) {
                        return Err(Error::UnknownMemberId(who.member_id.clone()));
                    }
                    if who.generation != g.generation {
                        return Err(Error::IllegalGeneration {
                            current: g.generation,
                            got: who.generation,
                        });
                    }
                }
            }
        }
        let name = storage_name(group_id);
        let now = super::now_ms();
        let mut results = Vec::with_capacity(offsets.len());
        let mut writes = Vec::new();
        let mut topics: BTreeMap<String, Option<Arc<Topic>>> = BTreeMap::new();
        for o in &offsets {
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
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let period = self.config.offsets_retention_check_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let c = self.clone();
            match tokio::task::spawn_blocking(move || c.expire_offsets(super::now_ms())).await {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((offsets, groups))) => tracing::info!(
                    offsets,
                    groups,
                    retention_ms = self.config.offsets_retention_ms,
                    "expired the committed offsets of groups without members (offsets.retention.minutes); removed groups left with neither"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "offset expiry failed"),
                Err(e) => tracing::error!(error = %e, "offset expiry task failed"),
            }
        }
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

    /// Whether `group_id` is known (has state or is a pipeline group).
    pub fn exists(&self, group_id: &str) -> bool {
        self.pipeline_group(group_id).is_some()
            || self
                .lock()
                .map(|g| g.contains_key(group_id))
                .unwrap_or(false)
            || self
                .lock_consumers()
                .map(|g| g.contains_key(group_id))
                .unwrap_or(false)
    }

    /// DescribeGroups for one group; None when it does not exist.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        if let Some(p) = self.pipeline_group(group_id) {
            return Some(GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Stable,
                protocol_type: "consumer".into(),
                protocol: "kafkabox-pipeline".into(),
                members: vec![MemberDescription {
                    member_id: format!("kafkabox-{}", p.stage),
                    instance_id: None,
                    client_id: "kafkabox".into(),
                    client_host: "/127.0.0.1".into(),
                    metadata: consumer_subscription(&p.topics),
                    assignment: consumer_assignment(&self.store, &p.topics),
                }],
            });
        }
        let groups = self.lock().ok()?;
        let Some(g) = groups.get(group_id) else {
            drop(groups);
            let c = self.consumer_describe(group_id).ok()??;
            return Some(GroupDescription {
                group_id: c.group_id,
                state: GroupState::Stable,
                protocol_type: "consumer".into(),
                protocol: c.assignor.to_string(),
                members: c
                    .members
                    .into_iter()
                    .map(|m| MemberDescription {
                        member_id: m.member_id,
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        metadata: consumer_subscription(&m.subscribed),
                        assignment: Bytes::new(),
                    })
                    .collect(),
            });
        };
        let protocol = g.protocol.clone();
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable {
                protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(protocol.as_deref()),
                    assignment: if g.state == GroupState::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// ListGroups: every group, pipeline groups included.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .lock()
            .map(|g| {
                g.values()
                    .map(|g| GroupListing {
                        group_id: g.id.clone(),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        state: g.state.name().to_string(),
                        group_type: "classic",
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(c) = self.lock_consumers() {
            out.extend(c.values().map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: "consumer".into(),
                state: consumer::state_name(g).to_string(),
                group_type: "consumer",
            }));
        }
        if let Ok(p) = self.pipeline.lock() {
            out.extend(p.keys().map(|id| GroupListing {
                group_id: id.clone(),
                protocol_type: "consumer".into(),
                state: GroupState::Stable.name().to_string(),
                group_type: "classic",
            }));
        }
        out
    }

    /// DeleteGroups for one group (blocking): only an empty group can go, with its offsets.
    pub fn delete(&self, group_id: &str) -> Result<()> {
        self.check_writable(group_id)?;
        {
            let mut groups = self.lock()?;
            let mut consumers = self.lock_consumers()?;
            if let Some(c) = consumers.get(group_id) {
                if !c.members.is_empty() {
                    return Err(Error::NonEmptyGroup(group_id.to_string()));
                }
                consumers.remove(group_id);
            }
            drop(consumers);
            match groups.get(group_id) {
                None if !self.store_has_group(group_id) => {
                    return Err(Error::GroupIdNotFound(group_id.to_string()))
                }
                None => {}
                Some(g) if !g.is_empty() || g.state != GroupState::Empty => {
                    return Err(Error::NonEmptyGroup(group_id.to_string()))
                }
                Some(_) => {}
            }
            groups.remove(group_id);
        }
        let name = storage_name(group_id);
        for t in self.store.topics() {
            let parts: Vec<&kafkabox_storage::Partition> =
                t.partitions.iter().map(|p| p.as_ref()).collect();
            self.store.delete_offsets(&name, &parts)?;
        }
        let seq = self.store.remove_group_record(group_id)?;
        self.wrote(seq);
        Ok(())
    }

    fn store_has_group(&self, group_id: &str) -> bool {
        self.store
            .group_records()
            .map(|r| r.iter().any(|(id, _)| id == group_id))
            .unwrap_or(false)
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

/// A hold on [`Coordinator`]'s commit gate.
#[allow(dead_code)]
enum GateGuard<'a> {
    Shared(std::sync::RwLockReadGuard<'a, ()>),
    Exclusive(std::sync::RwLockWriteGuard<'a, ()>),
}

/// Topics named in a ConsumerProtocolSubscription (version, topics, user data ...); empty when
/// the metadata is not one.
fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 2usize;
    let read_i32 = |p: usize| -> Option<i32> {
        Some(i32::from_be_bytes(metadata.get(p..p + 4)?.try_into().ok()?))
    };
    let Some(n) = read_i32(pos) else { return out };
    pos += 4;
    for _ in 0..n.clamp(0, 10_000) {
        let Some(len) = metadata.get(pos..pos + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]);
        pos += 2;
        if len < 0 {
            break;
        }
        let Some(name) = metadata.get(pos..pos + len as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len as usize;
    }
    out
}

/// A ConsumerProtocolSubscription v0 naming `topics`.
fn consumer_subscription(topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// A ConsumerProtocolAssignment v0 of every partition of `topics`.
fn consumer_assignment(store: &Store, topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    let known: Vec<Arc<Topic>> = topics.iter().filter_map(|t| store.topic(t)).collect();
    b.extend_from_slice(&(known.len() as i32).to_be_bytes());
    for t in known {
        b.extend_from_slice(&(t.meta.name.len() as i16).to_be_bytes());
        b.extend_from_slice(t.meta.name.as_bytes());
        b.extend_from_slice(&(t.partitions.len() as i32).to_be_bytes());
        for p in &t.partitions {
            b.extend_from_slice(&p.index.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_round_trip() {
        let s = consumer_subscription(&["a".into(), "bb".into()]);
        assert_eq!(
            subscribed_topics(&s),
            vec!["a".to_string(), "bb".to_string()]
        );
        assert!(subscribed_topics(b"\x00").is_empty());
        assert!(subscribed_topics(b"\x00\x00\x7f\xff\xff\xff").is_empty());
    }
}
