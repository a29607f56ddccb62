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
//!
//! Its files:
//!
//! - `mod.rs`: the [`Coordinator`]: both kinds of group, their limits and persistence;
//!   JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ConsumerGroupHeartbeat, DescribeGroups,
//!   ListGroups, DeleteGroups.
//! - [`group`]: one classic group as a state machine; `group/stored.rs` its stored record
//!   ([`restore_record`]).
//! - [`consumer`]: one KIP-848 group, with the server-side assignors.
//! - `offsets.rs`: OffsetCommit, OffsetFetch, OffsetDelete and offset expiry.
//! - `pipeline_groups.rs`: pipeline stages shown as the groups `kafkabox.<stage>`.
//! - `consumer_protocol.rs`: the consumer protocol's subscription and assignment bytes.
//! - [`isolation`]: which groups read committed records (from their clients' fetches).

pub mod consumer;
mod consumer_protocol;
pub mod group;
pub mod isolation;
mod offsets;
mod pipeline_groups;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use kafkabox_storage::Store;

use super::error::{Error, Result};
use super::log_limit::RateLimitedLog;
use crate::config::Config;
use consumer::{ConsumerGroup, ConsumerLimits, Heartbeat, HeartbeatAnswer, Tp};
use consumer_protocol::{consumer_assignment, consumer_subscription};
pub use group::stored::{restore_record, Restored};
pub use group::{Answer, GroupLimits, GroupState, JoinCode, JoinRequest, JoinResult, SyncResult};
use group::{Group, StoredGroup};
pub use offsets::{Committer, OffsetToCommit, PartitionResult};
use pipeline_groups::PipelineGroup;
pub use pipeline_groups::PIPELINE_GROUP_PREFIX;

/// The consumer name a Kafka group's offsets are stored under.
fn storage_name(group_id: &str) -> String {
    format!("group:{group_id}")
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

/// The per-member result of a LeaveGroup: member id, instance id, outcome.
pub type MemberResult = (String, Option<String>, Result<()>);

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct Coordinator {
    store: Store,
    config: Arc<Config>,
    groups: Mutex<BTreeMap<String, Group>>,
    /// KIP-848 groups. Lock order: `groups` first, then `consumers`; an id lives in one map.
    consumers: Mutex<BTreeMap<String, ConsumerGroup>>,
    /// Pipeline stages shown as groups, by group id (`kafkabox.<stage>`).
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
    /// The isolation level of each client's latest Fetch.
    fetchers: isolation::Fetchers,
}

impl Coordinator {
    /// Loads the stored groups (blocking).
    pub fn open(store: Store, config: Arc<Config>, now: i64) -> Result<Coordinator> {
        let mut groups = BTreeMap::new();
        let mut consumers = BTreeMap::new();
        for (id, bytes) in store.group_records()? {
            match restore_record(&id, &bytes, now) {
                Restored::Classic(g) => {
                    groups.insert(id, *g);
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
            fetchers: isolation::Fetchers::default(),
        })
    }

    /// Remembers the isolation level of a client's Fetch.
    pub fn note_fetch(&self, client_id: &str, host: std::net::IpAddr, read_committed: bool) {
        self.fetchers.note(client_id, host, read_committed);
    }

    /// Remembers the client that committed offsets for `group_id`.
    pub fn note_committer(&self, group_id: &str, client_id: &str, host: std::net::IpAddr) {
        self.fetchers.note_commit(group_id, client_id, host);
    }

    /// The isolation level `group_id` reads with: read_committed for a pipeline stage; for a
    /// Kafka group, what its members' latest fetches say, or with no members, the latest
    /// fetches of the client that committed for it last (None: unknown).
    pub fn isolation(&self, group_id: &str) -> Option<isolation::Isolation> {
        if self.pipeline_group(group_id).is_some() {
            return Some(isolation::Isolation::ReadCommitted);
        }
        let from_members = self.describe(group_id).and_then(|d| {
            self.fetchers.of(d
                .members
                .iter()
                .map(|m| (m.client_id.as_str(), m.client_host.as_str())))
        });
        from_members.or_else(|| self.fetchers.of_committer(group_id))
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
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms,
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

    /// Waits until the latest group record is durable: an answer that changed a group waits
    /// for it, as Kafka's waits for the group metadata write.
    pub async fn records_durable(&self) -> std::result::Result<(), kafkabox_storage::StoreError> {
        self.store.wait_durable(self.persisted_seq()).await
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
        // An unknown group is a top-level UNKNOWN_MEMBER_ID, as Kafka answers.
        let Some(g) = groups.get_mut(group_id) else {
            return Err(Error::UnknownMemberId(String::new()));
        };
        // Each result names the member as the request did ("" for a removal by instance id,
        // which the admin client matches its request against).
        let out = members
            .iter()
            .map(|(m, i)| {
                (
                    m.clone(),
                    i.clone(),
                    g.leave(m, i.as_deref(), now).map(|_| ()),
                )
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
}
