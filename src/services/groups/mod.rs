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

pub mod consumer;
pub mod group;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kafkabox_storage::{CommittedOffset, Store, Topic};

use super::error::{Error, Result};
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
}

impl Coordinator {
    /// Loads the stored groups (blocking).
    pub fn open(store: Store, config: Arc<Config>, now: i64) -> Result<Coordinator> {
        let mut groups = BTreeMap::new();
        let mut consumers = BTreeMap::new();
        for (id, bytes) in store.group_records()? {
            match serde_json::from_slice::<StoredGroup>(&bytes) {
                Ok(s) if s.kind.as_deref() == Some("consumer") => {
                    let mut g = ConsumerGroup::new(&id);
                    g.epoch = s.generation;
                    g.assignment_epoch = s.generation;
                    consumers.insert(id.clone(), g);
                }
                Ok(s) => {
                    groups.insert(id.clone(), Group::restore(&id, s, now));
                }
                Err(e) => {
                    tracing::error!(group = %id, error = %e, "unreadable group record; starting the group empty");
                    groups.insert(id.clone(), Group::new(&id));
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
        })
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
        match classic.get(group_id) {
            Some(g) if !g.is_empty() => {
                return Err(Error::WrongGroupType(group_id.to_string(), "classic"))
            }
            // An empty classic group (offsets only) becomes a consumer group.
            Some(_) => {
                classic.remove(group_id);
            }
            None => {}
        }
        let mut consumers = self.lock_consumers()?;
        drop(classic);
        let g = consumers
            .entry(group_id.to_string())
            .or_insert_with(|| ConsumerGroup::new(group_id));
        let r = g.heartbeat(hb, &limits, &|t| self.partition_count(t), now);
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

    /// Writes a group's record if it changed (a rebalance completed, it emptied).
    fn persist(&self, g: &mut Group) {
        if !g.dirty {
            return;
        }
        g.dirty = false;
        if matches!(
            g.state,
            GroupState::PreparingRebalance | GroupState::CompletingRebalance
        ) {
            // Kafka persists a group when it becomes Stable or Empty.
            g.dirty = true;
            return;
        }
        match serde_json::to_vec(&g.to_stored()) {
            Ok(bytes) => match self.store.put_group_record(&g.id, &bytes) {
                Ok(seq) => self.wrote(seq),
                Err(e) => tracing::error!(group = %g.id, error = %e, "could not store the group"),
            },
            Err(e) => tracing::error!(group = %g.id, error = %e, "could not encode the group"),
        }
    }

    /// JoinGroup.
    pub fn join(&self, group_id: &str, req: JoinRequest, now: i64) -> Result<Answer<JoinResult>> {
        self.check_writable(group_id)?;
        let limits = self.limits();
        let mut groups = self.lock()?;
        {
            let mut consumers = self.lock_consumers()?;
            match consumers.get(group_id) {
                Some(c) if !c.members.is_empty() => {
                    return Err(Error::InconsistentGroupProtocol(format!(
                        "group '{group_id}' is a consumer (KIP-848) group with members"
                    )))
                }
                Some(_) => {
                    consumers.remove(group_id);
                }
                None => {}
            }
        }
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        let r = g.join(req, &limits, now);
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
        let seq = self.store.commit_offsets(&name, &refs)?;
        Ok((results, Some(seq)))
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
