//! One classic consumer group as a state machine: members, generations, the join and sync
//! barriers, heartbeats and session expiry. Time is passed in (milliseconds on a monotonic
//! clock), so every timeout is tested without sleeping. Responses that must wait (JoinGroup
//! until every member has rejoined, SyncGroup until the leader has assigned) are oneshot
//! channels held by the member; the state machine answers them when the barrier falls.
//!
//! Kafka's classic protocol (apache/kafka group-coordinator `ClassicGroup`,
//! `GroupMetadataManager`): Empty -> PreparingRebalance -> CompletingRebalance -> Stable, with a
//! new generation at every completed join.

pub mod stored;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::services::error::{Error, Result};
pub use stored::{StoredBytes, StoredGroup, StoredMember};

/// Kafka's group states, as DescribeGroups and ListGroups name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Limits a group enforces (Kafka's broker settings).
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (extended while they come, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i32,
}

/// The first rebalance of an empty group, held back for more members (Kafka's
/// InitialDelayedJoin).
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    until: i64,
    /// What is left of the rebalance timeout for further extensions.
    remaining: i64,
    step: i64,
    /// A member joined since the delay began or was last extended.
    new_member: bool,
}

/// What a JoinGroup asks, in the coordinator's terms.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader may keep the current assignment.
    pub supports_skip_assignment: bool,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<String>,
    pub code: JoinCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members.
    pub members: Vec<JoinedMember>,
    pub skip_assignment: bool,
}

/// The error of a JoinGroup answer (None = success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinCode {
    None,
    MemberIdRequired,
    UnknownMemberId,
    RebalanceInProgress,
    FencedInstanceId,
}

impl JoinResult {
    fn failed(code: JoinCode, member_id: &str) -> JoinResult {
        JoinResult {
            error: None,
            code,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup: protocol type, protocol name and the member's assignment.
pub type SyncResult = Result<(Option<String>, Option<String>, Bytes)>;

/// A JoinGroup or SyncGroup answer: now, or when the barrier falls.
#[derive(Debug)]
pub enum Answer<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: i64,
    /// Order of joining: the earliest member left becomes leader.
    order: u64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    /// The metadata this member gave for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    statics: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending: HashMap<String, i64>,
    rebalance_deadline: Option<i64>,
    /// When members that have not sent SyncGroup for the current generation are removed
    /// (in CompletingRebalance, and in Stable for followers that never did).
    sync_deadline: Option<i64>,
    /// Members that have not sent SyncGroup since the join phase ended.
    pending_sync: std::collections::HashSet<String>,
    initial_delay: Option<InitialDelay>,
    /// `group.initial.rebalance.delay.ms`, from the latest JoinGroup's limits.
    initial_delay_ms: i64,
    next_order: u64,
    /// Set when the state changed in a way worth persisting.
    pub dirty: bool,
    /// Set when a member left, expired or was dropped: its metadata and assignment leave the
    /// stored record at once, even in the middle of a rebalance (which is otherwise not
    /// persisted), so the record never keeps what a gone member sent.
    pub members_removed: bool,
    /// When the group last became empty (ms since the epoch, set by the coordinator): offsets
    /// of an empty group expire `offsets.retention.minutes` after this or their commit.
    pub empty_since_ms: Option<i64>,
    /// The coordinator's sequence number of the latest offset commit to this group (not
    /// stored): offset expiry leaves a group alone if it changed while its offsets were read.
    pub last_commit: u64,
}

/// A new member id: the client id (as Kafka does) and a random suffix.
fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            sync_deadline: None,
            pending_sync: std::collections::HashSet::new(),
            initial_delay: None,
            initial_delay_ms: 0,
            next_order: 0,
            dirty: false,
            members_removed: false,
            empty_since_ms: None,
            last_commit: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Checks that `member_id` (and its instance id) belongs to this group.
    pub(super) fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        // Kafka's validateMember: an instance id the group does not know is an unknown
        // member; one that belongs to another member id is fenced.
        if let Some(i) = instance_id {
            match self.statics.get(i) {
                Some(current) if current != member_id => {
                    return Err(Error::FencedInstanceId(i.to_string()))
                }
                None => return Err(Error::UnknownMemberId(member_id.to_string())),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(Error::UnknownMemberId(member_id.to_string()));
        }
        Ok(())
    }

    /// A member was heard from (an offset commit in Stable or PreparingRebalance).
    pub(super) fn touch(&mut self, member_id: &str, now: i64) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::PreparingRebalance
        ) {
            if let Some(m) = self.members.get_mut(member_id) {
                m.last_heartbeat = now;
            }
        }
    }

    /// Protocols every member supports, in the group's order of votes.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Vec<&str> = Vec::new();
        if let Some(first) = self.members.values().next() {
            for (name, _) in &first.protocols {
                if self
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                {
                    candidates.push(name);
                }
            }
        }
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((pref, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| c == pref) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; ties go to the first member's preference.
        let mut best: Option<(usize, &str)> = None;
        for v in votes {
            if best.is_none_or(|b| v.0 > b.0) {
                best = Some(v);
            }
        }
        best.map(|(_, c)| c.to_string())
    }

    /// Whether a joining member's protocols fit the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol every current member and the newcomer support.
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// JoinGroup.
    pub fn join(
        &mut self,
        req: JoinRequest,
        limits: &GroupLimits,
        now: i64,
    ) -> Result<Answer<JoinResult>> {
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return Err(Error::InvalidSessionTimeout(format!(
                "session timeout {} ms is outside group.min.session.timeout.ms ({}) .. group.max.session.timeout.ms ({})",
                req.session_timeout_ms, limits.min_session_timeout_ms, limits.max_session_timeout_ms
            )));
        }
        self.initial_delay_ms = i64::from(limits.initial_rebalance_delay_ms.max(0));
        if !self.supports(&req.protocol_type, &req.protocols) {
            return Err(Error::InconsistentGroupProtocol(format!(
                "the member's protocol type '{}' or protocols do not match group '{}'",
                req.protocol_type, self.id
            )));
        }
        if req.member_id.is_empty() {
            self.join_unknown(req, limits, now)
        } else {
            self.join_known(req, now)
        }
    }

    fn join_unknown(
        &mut self,
        req: JoinRequest,
        limits: &GroupLimits,
        now: i64,
    ) -> Result<Answer<JoinResult>> {
        if let Some(instance) = req.instance_id.clone() {
            if let Some(old_id) = self.statics.get(&instance).cloned() {
                return Ok(self.replace_static(old_id, instance, req, now));
            }
        }
        if self.members.len() + self.pending.len() >= limits.max_size {
            return Err(Error::GroupMaxSizeReached(self.id.clone()));
        }
        let member_id = new_member_id(&req.client_id);
        if req.require_known_member_id && req.instance_id.is_none() {
            self.pending
                .insert(member_id.clone(), now + i64::from(req.session_timeout_ms));
            return Ok(Answer::Now(JoinResult::failed(
                JoinCode::MemberIdRequired,
                &member_id,
            )));
        }
        Ok(self.add_and_wait(member_id, req, now))
    }

    /// A static member came back with a new process: it takes over the old member's place.
    fn replace_static(
        &mut self,
        old_id: String,
        instance: String,
        req: JoinRequest,
        now: i64,
    ) -> Answer<JoinResult> {
        let new_id = new_member_id(&req.client_id);
        let Some(mut m) = self.members.remove(&old_id) else {
            self.statics.remove(&instance);
            return self.add_and_wait(new_id, req, now);
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::failed(JoinCode::FencedInstanceId, &old_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(Error::FencedInstanceId(instance.clone())));
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.protocols = req.protocols.clone();
        m.last_heartbeat = now;
        self.members.insert(new_id.clone(), m);
        self.statics.insert(instance, new_id.clone());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.dirty = true;
        // Stable, and the group's protocol stays the one selected: no rebalance (KIP-345);
        // the member keeps its assignment (SyncGroup hands it out). A restarted leader below
        // JoinGroup v9 is told the old leader id, so it acts as a follower and assigns
        // nothing; from v9 it learns it leads and is told to skip the assignment.
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            let mut r = self.result_for(&new_id);
            if was_leader {
                if req.supports_skip_assignment {
                    r.members = self.joined_members();
                    r.skip_assignment = true;
                } else {
                    r.leader = old_id;
                }
            }
            return Answer::Now(r);
        }
        // CompletingRebalance: the leader may have been given the old id, so a rebalance;
        // PreparingRebalance: the new id joins the round under way.
        self.wait_join(new_id, now)
    }

    fn join_known(&mut self, req: JoinRequest, now: i64) -> Result<Answer<JoinResult>> {
        let member_id = req.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            return Ok(self.add_and_wait(member_id, req, now));
        }
        self.check_member(&member_id, req.instance_id.as_deref())?;
        let leader = self.leader.as_deref() == Some(member_id.as_str());
        let Some(m) = self.members.get_mut(&member_id) else {
            return Err(Error::UnknownMemberId(member_id));
        };
        let same = m.protocols == req.protocols;
        m.protocols = req.protocols;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.last_heartbeat = now;
        match self.state {
            // A follower whose subscription did not change gets the current generation back.
            GroupState::Stable | GroupState::CompletingRebalance if same && !leader => {
                Ok(Answer::Now(self.result_for(&member_id)))
            }
            GroupState::CompletingRebalance if same => {
                let mut r = self.result_for(&member_id);
                r.members = self.joined_members();
                Ok(Answer::Now(r))
            }
            _ => Ok(self.wait_join(member_id, now)),
        }
    }

    fn add_and_wait(
        &mut self,
        member_id: String,
        req: JoinRequest,
        now: i64,
    ) -> Answer<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.instance_id {
            self.statics.insert(i.clone(), member_id.clone());
        }
        if let Some(d) = self.initial_delay.as_mut() {
            d.new_member = true;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat: now,
                order,
                join_waiter: None,
                sync_waiter: None,
            },
        );
        self.wait_join(member_id, now)
    }

    /// Parks the member's JoinGroup and starts (or continues) a rebalance.
    fn wait_join(&mut self, member_id: String, now: i64) -> Answer<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&member_id) {
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::failed(JoinCode::UnknownMemberId, &member_id));
            }
        }
        if self.state != GroupState::PreparingRebalance {
            let from_empty = self.state == GroupState::Empty;
            self.prepare_rebalance(now);
            if from_empty && self.initial_delay_ms > 0 {
                let timeout = self.rebalance_timeout();
                let step = self.initial_delay_ms.min(timeout);
                self.initial_delay = Some(InitialDelay {
                    until: now + step,
                    remaining: timeout - step,
                    step: self.initial_delay_ms,
                    new_member: false,
                });
            }
        }
        self.maybe_complete_join(now);
        Answer::Wait(rx)
    }

    /// The group's rebalance timeout: the longest its members asked for (JoinGroup's
    /// rebalance timeout, `max.poll.interval.ms` for the Java client and librdkafka).
    fn rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Starts a rebalance: members learn of it from their heartbeats and rejoin.
    fn prepare_rebalance(&mut self, now: i64) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(Error::RebalanceInProgress));
                }
            }
        }
        let timeout = self.rebalance_timeout();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        self.sync_deadline = None;
        self.pending_sync.clear();
    }

    fn maybe_complete_join(&mut self, now: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now);
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol.as_deref();
        let mut ms: Vec<&Member> = self.members.values().collect();
        ms.sort_by_key(|m| m.order);
        ms.into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    fn result_for(&self, member_id: &str) -> JoinResult {
        JoinResult {
            error: None,
            code: JoinCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }

    /// The join barrier falls: dynamic members that did not rejoin are dropped (static ones
    /// stay, until their session or the SyncGroup deadline runs out), a new generation starts,
    /// the leader (a member that rejoined) gets every member's metadata.
    fn complete_join(&mut self, now: i64) {
        self.initial_delay = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        if !self.members.is_empty() && self.members.values().all(|m| m.join_waiter.is_none()) {
            // Only static members that did not rejoin are left: wait another rebalance
            // timeout for them (or for their sessions to end), as Kafka does.
            self.rebalance_deadline = Some(now + self.rebalance_timeout().max(1));
            return;
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        // The leader must be a member that rejoined (it has to answer with the assignment).
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_rejoined {
            self.leader = self
                .members
                .values()
                .filter(|m| m.join_waiter.is_some())
                .min_by_key(|m| m.order)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now + self.rebalance_timeout());
        let members = self.joined_members();
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let mut r = self.result_for(&id);
            if id == leader {
                r.members = members.clone();
            }
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                m.assignment = Bytes::new();
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(r);
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        self.pending_sync.remove(id);
        if let Some(mut m) = self.members.remove(id) {
            self.members_removed = true;
            if let Some(i) = &m.instance_id {
                if self.statics.get(i).map(String::as_str) == Some(id) {
                    self.statics.remove(i);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::failed(JoinCode::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(Error::UnknownMemberId(id.to_string())));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// SyncGroup: the leader hands out the assignment; followers wait for it.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> Result<Answer<SyncResult>> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(Error::IllegalGeneration {
                current: self.generation,
                got: generation,
            });
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return Err(Error::InconsistentGroupProtocol(
                "SyncGroup names another protocol than the group's".into(),
            ));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Err(Error::UnknownMemberId(member_id.to_string()))
            }
            GroupState::PreparingRebalance => Err(Error::RebalanceInProgress),
            GroupState::Stable => {
                let m = self
                    .members
                    .get_mut(member_id)
                    .ok_or_else(|| Error::UnknownMemberId(member_id.to_string()))?;
                m.last_heartbeat = now;
                self.pending_sync.remove(member_id);
                if self.pending_sync.is_empty() {
                    self.sync_deadline = None;
                }
                Ok(Answer::Now(Ok((
                    self.protocol_type.clone(),
                    self.protocol.clone(),
                    m.assignment.clone(),
                ))))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat = now;
                    m.sync_waiter = Some(tx);
                }
                self.pending_sync.remove(member_id);
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        // Copied out of the request frame, which a slice would keep in memory
                        // whole for as long as the member holds its assignment.
                        m.assignment = given
                            .remove(&m.id)
                            .map(|a| Bytes::copy_from_slice(&a))
                            .unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    // Followers that have not sent SyncGroup yet keep their deadline.
                    if self.pending_sync.is_empty() {
                        self.sync_deadline = None;
                    }
                    self.dirty = true;
                    let (pt, p) = (self.protocol_type.clone(), self.protocol.clone());
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Ok((pt.clone(), p.clone(), m.assignment.clone())));
                        }
                    }
                }
                Ok(Answer::Wait(rx))
            }
        }
    }

    /// Heartbeat: keeps the session alive; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<()> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(Error::IllegalGeneration {
                current: self.generation,
                got: generation,
            });
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(Error::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => {
                Err(Error::UnknownMemberId(member_id.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member (by id, or by instance id when the id is empty).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> Result<String> {
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.statics.get(i)) {
                Some(id) => id.clone(),
                None => return Err(Error::UnknownMemberId(member_id.to_string())),
            }
        } else if self.pending.remove(member_id).is_some() {
            // A member id handed out with MEMBER_ID_REQUIRED that never joined.
            return Ok(member_id.to_string());
        } else {
            self.check_member(member_id, instance_id)?;
            member_id.to_string()
        };
        self.remove_member(&id);
        self.dirty = true;
        self.member_gone(now);
        Ok(id)
    }

    /// After a member left or expired: rebalance the rest.
    fn member_gone(&mut self, now: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Advances time: expires sessions, MEMBER_ID_REQUIRED ids that never came back, and join
    /// and sync barriers past their deadline.
    pub fn tick(&mut self, now: i64) {
        self.pending.retain(|_, deadline| *deadline > now);
        if let Some(d) = self.initial_delay {
            if now >= d.until {
                if d.new_member && d.remaining > 0 {
                    let step = d.step.min(d.remaining);
                    self.initial_delay = Some(InitialDelay {
                        until: now + step,
                        remaining: d.remaining - step,
                        step: d.step,
                        new_member: false,
                    });
                } else {
                    self.initial_delay = None;
                    if self.state == GroupState::PreparingRebalance {
                        self.complete_join(now);
                    }
                }
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now - m.last_heartbeat > i64::from(m.session_timeout_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "session expired; removing the member");
            self.remove_member(id);
            self.dirty = true;
        }
        if !expired.is_empty() {
            self.member_gone(now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| now >= d)
        {
            let missing: Vec<&str> = self
                .members
                .values()
                .filter(|m| m.join_waiter.is_none())
                .map(|m| m.id.as_str())
                .collect();
            tracing::info!(group = %self.id, ?missing, "rebalance timeout: completing the rebalance without the members that did not rejoin");
            self.complete_join(now);
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.sync_deadline.is_some_and(|d| now >= d)
        {
            // Members that did not send SyncGroup within the rebalance timeout are removed
            // and the others rebalance (Kafka's pending-sync expiry).
            self.sync_deadline = None;
            let lagging: Vec<String> = self.pending_sync.iter().cloned().collect();
            if !lagging.is_empty() {
                tracing::info!(group = %self.id, ?lagging, "no SyncGroup within the rebalance timeout; removing the members");
                for id in &lagging {
                    self.remove_member(id);
                }
                self.dirty = true;
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
            }
        }
        self.maybe_complete_join(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GroupLimits = GroupLimits {
        min_session_timeout_ms: 6000,
        max_session_timeout_ms: 1_800_000,
        max_size: 3,
        initial_rebalance_delay_ms: 0,
    };

    fn req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn now_value<T: std::fmt::Debug>(a: Answer<T>) -> T {
        match a {
            Answer::Now(v) => v,
            Answer::Wait(_) => panic!("expected an immediate answer"),
        }
    }

    fn waited<T>(a: Answer<T>) -> oneshot::Receiver<T> {
        match a {
            Answer::Wait(rx) => rx,
            Answer::Now(_) => panic!("expected to wait"),
        }
    }

    /// A member joins through MEMBER_ID_REQUIRED and is alone: generation 1, it leads.
    fn join_alone(g: &mut Group, now: i64) -> String {
        let r = now_value(g.join(req("", &["range"]), &LIMITS, now).unwrap());
        assert_eq!(r.code, JoinCode::MemberIdRequired);
        let mut rx = waited(g.join(req(&r.member_id, &["range"]), &LIMITS, now).unwrap());
        let j = rx.try_recv().unwrap();
        assert_eq!(j.leader, r.member_id);
        r.member_id
    }

    #[test]
    fn two_members_rebalance_and_session_expiry() {
        let mut g = Group::new("g");
        let a = join_alone(&mut g, 0);
        assert_eq!(g.generation, 1);
        let mut s = waited(
            g.sync(
                &a,
                None,
                1,
                None,
                None,
                vec![(a.clone(), Bytes::from_static(b"A"))],
                0,
            )
            .unwrap(),
        );
        assert_eq!(s.try_recv().unwrap().unwrap().2, Bytes::from_static(b"A"));
        assert_eq!(g.state, GroupState::Stable);

        // b joins: a learns of the rebalance from its heartbeat.
        let r = now_value(
            g.join(req("", &["range", "roundrobin"]), &LIMITS, 100)
                .unwrap(),
        );
        let b = r.member_id;
        let mut jb = waited(
            g.join(req(&b, &["roundrobin", "range"]), &LIMITS, 100)
                .unwrap(),
        );
        assert!(matches!(
            g.heartbeat(&a, None, 1, 200),
            Err(Error::RebalanceInProgress)
        ));
        let mut ja = waited(g.join(req(&a, &["range"]), &LIMITS, 300).unwrap());
        let ra = ja.try_recv().unwrap();
        let rb = jb.try_recv().unwrap();
        assert_eq!(ra.generation, 2);
        assert_eq!(ra.protocol.as_deref(), Some("range"));
        assert_eq!(ra.members.len(), 2, "the leader gets every member");
        assert!(rb.members.is_empty());
        let mut sb = waited(g.sync(&b, None, 2, None, None, vec![], 400).unwrap());
        let mut sa = waited(
            g.sync(
                &a,
                None,
                2,
                Some("consumer"),
                Some("range"),
                vec![(b.clone(), Bytes::from_static(b"B"))],
                400,
            )
            .unwrap(),
        );
        assert_eq!(sb.try_recv().unwrap().unwrap().2, Bytes::from_static(b"B"));
        assert_eq!(sa.try_recv().unwrap().unwrap().2, Bytes::new());
        assert!(matches!(
            g.heartbeat(&b, None, 1, 500),
            Err(Error::IllegalGeneration { .. })
        ));

        // a stops heartbeating: after its session timeout b is told to rejoin, alone.
        g.heartbeat(&b, None, 2, 9_000).unwrap();
        g.tick(10_401);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(!g.members.contains_key(&a));
        let mut jb = waited(g.join(req(&b, &["range"]), &LIMITS, 10_500).unwrap());
        let rb = jb.try_recv().unwrap();
        assert_eq!(rb.generation, 3);
        assert_eq!(rb.leader, b);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let mut g = Group::new("g");
        let a = join_alone(&mut g, 0);
        let _ = g.sync(&a, None, 1, None, None, vec![], 0).unwrap();
        let r = now_value(g.join(req("", &["range"]), &LIMITS, 0).unwrap());
        let mut jb = waited(g.join(req(&r.member_id, &["range"]), &LIMITS, 0).unwrap());
        // a keeps heartbeating but never rejoins: the barrier falls at the rebalance timeout.
        for t in (1000..30_000).step_by(1000) {
            let _ = g.heartbeat(&a, None, 1, t);
            g.tick(t);
        }
        assert!(jb.try_recv().is_err());
        g.tick(30_000);
        let rb = jb.try_recv().unwrap();
        assert_eq!(rb.generation, 2);
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn errors_are_kafkas() {
        let mut g = Group::new("g");
        let a = join_alone(&mut g, 0);
        assert!(matches!(
            g.heartbeat("nobody", None, 1, 0),
            Err(Error::UnknownMemberId(_))
        ));
        assert!(matches!(
            g.sync(&a, None, 7, None, None, vec![], 0),
            Err(Error::IllegalGeneration { current: 1, got: 7 })
        ));
        let mut bad = req("", &["range"]);
        bad.session_timeout_ms = 10;
        assert!(matches!(
            g.join(bad, &LIMITS, 0),
            Err(Error::InvalidSessionTimeout(_))
        ));
        let mut other = req("", &["range"]);
        other.protocol_type = "connect".into();
        assert!(matches!(
            g.join(other, &LIMITS, 0),
            Err(Error::InconsistentGroupProtocol(_))
        ));
        assert!(matches!(
            g.join(req("", &["sticky-only"]), &LIMITS, 0),
            Err(Error::InconsistentGroupProtocol(_))
        ));
        // Pending ids count toward group.max.size (3).
        now_value(g.join(req("", &["range"]), &LIMITS, 0).unwrap());
        now_value(g.join(req("", &["range"]), &LIMITS, 0).unwrap());
        assert!(matches!(
            g.join(req("", &["range"]), &LIMITS, 0),
            Err(Error::GroupMaxSizeReached(_))
        ));
        // ... until they expire unclaimed.
        g.tick(20_000);
        assert!(g.pending.is_empty());
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_without_rebalance() {
        let mut g = Group::new("g");
        let mut r1 = req("", &["range"]);
        r1.instance_id = Some("i1".into());
        let mut ja = waited(g.join(r1.clone(), &LIMITS, 0).unwrap());
        let a = ja.try_recv().unwrap().member_id;
        let mut r2 = req("", &["range"]);
        r2.instance_id = Some("i2".into());
        let mut jb = waited(g.join(r2.clone(), &LIMITS, 0).unwrap());
        let mut ja = waited(
            g.join(
                JoinRequest {
                    member_id: a.clone(),
                    ..r1.clone()
                },
                &LIMITS,
                0,
            )
            .unwrap(),
        );
        let ra = ja.try_recv().unwrap();
        let b = jb.try_recv().unwrap().member_id;
        assert_eq!(ra.leader, a);
        let _ = g
            .sync(
                &a,
                Some("i1"),
                2,
                None,
                None,
                vec![(b.clone(), Bytes::from_static(b"B"))],
                0,
            )
            .unwrap();
        let _ = g.sync(&b, Some("i2"), 2, None, None, vec![], 0).unwrap();
        assert_eq!(g.state, GroupState::Stable);
        // i2 restarts: new member id, same generation, same assignment, no rebalance.
        let r = now_value(g.join(r2, &LIMITS, 100).unwrap());
        assert_eq!(r.code, JoinCode::None);
        assert_ne!(r.member_id, b);
        assert_eq!(r.generation, 2);
        assert_eq!(g.state, GroupState::Stable);
        let s = now_value(
            g.sync(&r.member_id, Some("i2"), 2, None, None, vec![], 100)
                .unwrap(),
        );
        assert_eq!(s.unwrap().2, Bytes::from_static(b"B"));
        // The old id is fenced.
        assert!(matches!(
            g.heartbeat(&b, Some("i2"), 2, 100),
            Err(Error::FencedInstanceId(_))
        ));
    }

    /// Two static members i1 (leader) and i2 in Stable, generation 2, i2 assigned "B".
    fn two_static(g: &mut Group) -> (JoinRequest, String, JoinRequest, String) {
        let mut r1 = req("", &["range"]);
        r1.instance_id = Some("i1".into());
        let mut ja = waited(g.join(r1.clone(), &LIMITS, 0).unwrap());
        let a = ja.try_recv().unwrap().member_id;
        let mut r2 = req("", &["range"]);
        r2.instance_id = Some("i2".into());
        let mut jb = waited(g.join(r2.clone(), &LIMITS, 0).unwrap());
        let rejoin = JoinRequest {
            member_id: a.clone(),
            ..r1.clone()
        };
        let _leader_joined = waited(g.join(rejoin, &LIMITS, 0).unwrap());
        let b = jb.try_recv().unwrap().member_id;
        let _ = g
            .sync(
                &a,
                Some("i1"),
                2,
                None,
                None,
                vec![(b.clone(), Bytes::from_static(b"B"))],
                0,
            )
            .unwrap();
        let _ = g.sync(&b, Some("i2"), 2, None, None, vec![], 0).unwrap();
        assert_eq!(g.state, GroupState::Stable);
        (r1, a, r2, b)
    }

    #[test]
    fn a_restarted_static_leader_is_told_the_old_leader_below_v9_and_to_skip_from_v9() {
        let mut g = Group::new("g");
        let (r1, a, _, _) = two_static(&mut g);
        // Metadata bytes that differ (owned partitions, generation) do not matter: only the
        // selected protocol does.
        let mut again = r1.clone();
        again.protocols = vec![("range".into(), Bytes::from_static(b"other bytes"))];
        let r = now_value(g.join(again.clone(), &LIMITS, 100).unwrap());
        assert_eq!(r.code, JoinCode::None);
        assert_eq!(r.generation, 2);
        assert_eq!(
            r.leader, a,
            "below v9 the old leader id: the client acts as a follower"
        );
        assert!(r.members.is_empty() && !r.skip_assignment);
        assert_eq!(g.state, GroupState::Stable);
        again.supports_skip_assignment = true;
        let r2 = now_value(g.join(again, &LIMITS, 200).unwrap());
        assert_eq!(r2.leader, r2.member_id, "from v9 it learns it leads");
        assert!(r2.skip_assignment);
        assert_eq!(r2.members.len(), 2);
        assert_eq!(g.generation, 2);
    }

    #[test]
    fn a_static_member_that_does_not_rejoin_stays_until_its_session_ends() {
        let mut g = Group::new("g");
        let (r1, a, _, b) = two_static(&mut g);
        // i1 changes its subscription: a rebalance; i2 keeps heartbeating but does not rejoin
        // (a static member whose process is slow): at the rebalance timeout it stays, with
        // its old metadata, and only its session ends it.
        let mut changed = r1;
        changed.member_id = a.clone();
        changed.protocols = vec![("range".into(), Bytes::from_static(b"new topics"))];
        let mut ja = waited(g.join(changed, &LIMITS, 1000).unwrap());
        for t in (2000..=31_000).step_by(1000) {
            let _ = g.heartbeat(&b, Some("i2"), 2, t);
            g.tick(t);
        }
        let ra = ja.try_recv().unwrap();
        assert_eq!(ra.generation, 3);
        assert!(
            g.members.contains_key(&b),
            "a static member is not dropped at the rebalance timeout"
        );
        assert_eq!(ra.members.len(), 2);
        // It never sends SyncGroup (and its session is long): removed at the SyncGroup
        // deadline, and the group rebalances.
        if let Some(m) = g.members.get_mut(&b) {
            m.session_timeout_ms = 120_000;
        }
        let _ = g
            .sync(&a, Some("i1"), 3, None, None, vec![], 31_000)
            .unwrap();
        assert_eq!(g.state, GroupState::Stable);
        for t in (35_000..=60_000).step_by(5000) {
            g.heartbeat(&a, Some("i1"), 3, t).unwrap();
            g.tick(t);
        }
        assert!(g.members.contains_key(&b), "not before the deadline");
        g.tick(61_001);
        assert!(!g.members.contains_key(&b));
        assert!(g.members.contains_key(&a));
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn the_first_rebalance_waits_for_more_members() {
        let limits = GroupLimits {
            initial_rebalance_delay_ms: 3000,
            ..LIMITS
        };
        let mut g = Group::new("g");
        let mut r1 = req("", &["range"]);
        r1.require_known_member_id = false;
        let mut ja = waited(g.join(r1.clone(), &limits, 0).unwrap());
        g.tick(2000);
        let mut jb = waited(g.join(r1.clone(), &limits, 2000).unwrap());
        g.tick(3000);
        // b came during the delay: it is extended by another 3 s.
        assert!(ja.try_recv().is_err());
        g.tick(5999);
        assert!(ja.try_recv().is_err());
        g.tick(6000);
        let (ra, rb) = (ja.try_recv().unwrap(), jb.try_recv().unwrap());
        assert_eq!(
            (ra.generation, rb.generation),
            (1, 1),
            "one generation for both"
        );
        assert_eq!(g.members.len(), 2);
    }

    #[test]
    fn a_member_id_that_never_joined_can_leave() {
        let mut g = Group::new("g");
        let r = now_value(g.join(req("", &["range"]), &LIMITS, 0).unwrap());
        assert_eq!(r.code, JoinCode::MemberIdRequired);
        assert_eq!(g.leave(&r.member_id, None, 0).unwrap(), r.member_id);
        assert!(g.is_empty());
    }

    #[test]
    fn a_member_gone_mid_rebalance_leaves_the_record_at_once() {
        let mut g = Group::new("g");
        let a = join_alone(&mut g, 0);
        let _ = g
            .sync(
                &a,
                None,
                1,
                None,
                None,
                vec![(a.clone(), Bytes::from_static(b"A"))],
                0,
            )
            .unwrap();
        assert!(!g.members_removed);
        // b joins, starting a rebalance, and leaves before it completes.
        let r = now_value(g.join(req("", &["range"]), &LIMITS, 100).unwrap());
        let _jb = waited(g.join(req(&r.member_id, &["range"]), &LIMITS, 100).unwrap());
        assert_eq!(g.state, GroupState::PreparingRebalance);
        g.leave(&r.member_id, None, 200).unwrap();
        assert!(
            g.members_removed,
            "the coordinator must write the record now"
        );
        let stored = g.to_stored();
        assert!(stored.rebalancing);
        assert_eq!(stored.members.len(), 1);
        assert!(stored.members.iter().all(|m| m.assignment.0.is_empty()));
        // Restored, the group goes on rebalancing: a is told to rejoin, and does.
        let mut back = Group::restore("g", stored, 1_000);
        assert_eq!(back.state, GroupState::PreparingRebalance);
        assert!(matches!(
            back.heartbeat(&a, None, g.generation, 1_100),
            Err(Error::RebalanceInProgress)
        ));
        let mut ja = waited(back.join(req(&a, &["range"]), &LIMITS, 1_200).unwrap());
        assert_eq!(ja.try_recv().unwrap().generation, g.generation + 1);
    }

    #[test]
    fn last_member_leaving_empties_the_group() {
        let mut g = Group::new("g");
        let a = join_alone(&mut g, 0);
        let _ = g.sync(&a, None, 1, None, None, vec![], 0).unwrap();
        g.leave(&a, None, 10).unwrap();
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(matches!(
            g.leave(&a, None, 10),
            Err(Error::UnknownMemberId(_))
        ));
    }
}
