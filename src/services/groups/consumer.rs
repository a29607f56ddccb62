//! One KIP-848 consumer group (`group.protocol=consumer`): the broker assigns. Members
//! heartbeat with their epoch and the partitions they own; the group keeps a target assignment
//! (computed by the server-side assignor whenever the group epoch moves) and reconciles each
//! member towards it: partitions another member must first give up are withheld until that
//! member's heartbeat shows it has revoked them. Time is passed in.
//!
//! Facts from KIP-848 and apache/kafka's group coordinator (`ConsumerGroup`,
//! `CurrentAssignmentBuilder`, `UniformAssignor`, `RangeAssignor`): a member joins with epoch 0,
//! leaves with -1 (-2 for a static member's temporary leave); a request carrying an epoch other
//! than the member's current one (or its previous one, when it owns nothing new) is fenced with
//! FENCED_MEMBER_EPOCH; the member epoch becomes the target epoch once nothing the member must
//! revoke is still owned by it.

use std::collections::{BTreeMap, BTreeSet};

use crate::services::error::{Error, Result};

/// A partition: topic name and index.
pub type Tp = (String, i32);

/// The server-side assignors, by the names clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced over every subscribed partition, keeping partitions where they are.
    Uniform,
    /// Per topic, contiguous ranges in member order.
    Range,
}

impl Assignor {
    pub fn by_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// What a ConsumerGroupHeartbeat says, in the coordinator's terms.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// None: unchanged since the last heartbeat.
    pub subscribed_topics: Option<Vec<String>>,
    pub server_assignor: Option<String>,
    /// None: unchanged since the last heartbeat.
    pub owned: Option<Vec<Tp>>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when it changed, or when the member's view differs from it.
    pub assignment: Option<Vec<Tp>>,
}

/// A member of a consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: BTreeSet<String>,
    pub rebalance_timeout_ms: i32,
    /// What the member was told it owns.
    pub assigned: BTreeSet<Tp>,
    /// Partitions the member must give up before it may move on.
    pub revoking: BTreeSet<Tp>,
    /// What the member said it owns in its last full heartbeat.
    pub owned: BTreeSet<Tp>,
    last_heartbeat: i64,
    /// When the member was asked to revoke (rebalance timeout starts).
    revoke_since: Option<i64>,
    /// The assignment last sent, to send only changes.
    sent: Option<BTreeSet<Tp>>,
}

/// Settings of consumer groups (Kafka's `group.consumer.*`).
#[derive(Debug, Clone, Copy)]
pub struct ConsumerLimits {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

/// One consumer group.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: Assignor,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Member id -> its target partitions at `assignment_epoch`.
    pub target: BTreeMap<String, BTreeSet<Tp>>,
    /// Partition counts of the subscribed topics the target was computed from.
    topics_seen: BTreeMap<String, i32>,
    pub dirty: bool,
    /// When the group last became empty (ms since the epoch, set by the coordinator), for
    /// offset expiry.
    pub empty_since_ms: Option<i64>,
    /// The coordinator's sequence number of the latest offset commit to this group (not
    /// stored).
    pub last_commit: u64,
}

/// Kafka's consumer group states.
pub fn state_name(g: &ConsumerGroup) -> &'static str {
    if g.members.is_empty() {
        "Empty"
    } else if g.assignment_epoch < g.epoch {
        "Assigning"
    } else if g.members.values().any(|m| m.epoch != g.assignment_epoch) {
        "Reconciling"
    } else {
        "Stable"
    }
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            assignor: Assignor::Uniform,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics_seen: BTreeMap::new(),
            dirty: false,
            empty_since_ms: None,
            last_commit: 0,
        }
    }

    /// A heartbeat. `partitions` gives a topic's partition count (None: no such topic).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        limits: &ConsumerLimits,
        partitions: &dyn Fn(&str) -> Option<i32>,
        now: i64,
    ) -> Result<HeartbeatAnswer> {
        if hb.member_epoch == -1 || hb.member_epoch == -2 {
            self.remove(&hb.member_id);
            self.bump(partitions);
            return Ok(HeartbeatAnswer {
                member_id: hb.member_id,
                member_epoch: hb.member_epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            });
        }
        if let Some(name) = &hb.server_assignor {
            let a = Assignor::by_name(name).ok_or_else(|| {
                Error::UnsupportedAssignor(format!(
                    "server assignor '{name}' is not supported; kafkabox has uniform and range"
                ))
            })?;
            if a != self.assignor {
                self.assignor = a;
                self.epoch += 1;
            }
        }
        if hb.member_epoch == 0 {
            self.join(&hb, limits, now)?;
        }
        let member_id = hb.member_id.clone();
        let Some(m) = self.members.get_mut(&member_id) else {
            return Err(Error::UnknownMemberId(member_id));
        };
        // An epoch the member cannot have: fenced, it must rejoin.
        if hb.member_epoch != 0 && hb.member_epoch != m.epoch {
            let lost_response = hb.member_epoch == m.previous_epoch
                && hb
                    .owned
                    .as_ref()
                    .is_some_and(|o| o.iter().all(|tp| m.assigned.contains(tp)));
            if !lost_response {
                return Err(Error::FencedMemberEpoch {
                    current: m.epoch,
                    got: hb.member_epoch,
                });
            }
        }
        m.last_heartbeat = now;
        m.client_id = hb.client_id;
        m.client_host = hb.client_host;
        if hb.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if let Some(owned) = &hb.owned {
            m.owned = owned.iter().cloned().collect();
        }
        let mut changed = false;
        if let Some(topics) = hb.subscribed_topics {
            let topics: BTreeSet<String> = topics.into_iter().collect();
            if topics != m.subscribed {
                m.subscribed = topics;
                changed = true;
            }
        }
        if changed || self.metadata_changed(partitions) {
            self.bump(partitions);
        }
        self.reconcile(&member_id, now);
        let m = self
            .members
            .get_mut(&member_id)
            .ok_or_else(|| Error::UnknownMemberId(member_id.clone()))?;
        let send = m.sent.as_ref() != Some(&m.assigned)
            || hb.member_epoch == 0
            || hb
                .owned
                .as_ref()
                .is_some_and(|o| o.iter().cloned().collect::<BTreeSet<Tp>>() != m.assigned);
        let assignment = send.then(|| m.assigned.iter().cloned().collect::<Vec<Tp>>());
        if send {
            m.sent = Some(m.assigned.clone());
        }
        Ok(HeartbeatAnswer {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: limits.heartbeat_interval_ms,
            assignment,
        })
    }

    fn join(&mut self, hb: &Heartbeat, limits: &ConsumerLimits, now: i64) -> Result<()> {
        if self.members.contains_key(&hb.member_id) {
            // A rejoin with epoch 0: start over, as Kafka does.
            self.remove(&hb.member_id);
        }
        if let Some(instance) = &hb.instance_id {
            let old = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .map(|m| m.id.clone());
            if let Some(old) = old {
                // A static member's new incarnation takes over its partitions.
                if let Some(mut m) = self.members.remove(&old) {
                    let target = self.target.remove(&old);
                    m.id = hb.member_id.clone();
                    m.last_heartbeat = now;
                    m.sent = None;
                    self.members.insert(hb.member_id.clone(), m);
                    if let Some(t) = target {
                        self.target.insert(hb.member_id.clone(), t);
                    }
                    self.dirty = true;
                    return Ok(());
                }
            }
        }
        if self.members.len() >= limits.max_size {
            return Err(Error::GroupMaxSizeReached(self.id.clone()));
        }
        self.members.insert(
            hb.member_id.clone(),
            ConsumerMember {
                id: hb.member_id.clone(),
                instance_id: hb.instance_id.clone(),
                rack_id: hb.rack_id.clone(),
                client_id: hb.client_id.clone(),
                client_host: hb.client_host.clone(),
                epoch: 0,
                previous_epoch: -1,
                subscribed: BTreeSet::new(),
                rebalance_timeout_ms: hb.rebalance_timeout_ms.max(0),
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                owned: BTreeSet::new(),
                last_heartbeat: now,
                revoke_since: None,
                sent: None,
            },
        );
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.dirty = true;
        }
    }

    fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    fn metadata_changed(&self, partitions: &dyn Fn(&str) -> Option<i32>) -> bool {
        self.subscribed_topics()
            .iter()
            .any(|t| self.topics_seen.get(t).copied() != partitions(t))
    }

    /// A new group epoch: the target assignment is recomputed.
    fn bump(&mut self, partitions: &dyn Fn(&str) -> Option<i32>) {
        self.epoch += 1;
        self.topics_seen = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| partitions(&t).map(|n| (t, n)))
            .collect();
        self.target = self.compute_target();
        self.assignment_epoch = self.epoch;
        self.dirty = true;
    }

    fn compute_target(&self) -> BTreeMap<String, BTreeSet<Tp>> {
        let mut target: BTreeMap<String, BTreeSet<Tp>> = self
            .members
            .keys()
            .map(|id| (id.clone(), BTreeSet::new()))
            .collect();
        match self.assignor {
            Assignor::Range => {
                for (topic, &n) in &self.topics_seen {
                    let subs: Vec<&String> = self
                        .members
                        .values()
                        .filter(|m| m.subscribed.contains(topic))
                        .map(|m| &m.id)
                        .collect();
                    if subs.is_empty() {
                        continue;
                    }
                    let per = n as usize / subs.len();
                    let extra = n as usize % subs.len();
                    let mut p = 0i32;
                    for (i, id) in subs.iter().enumerate() {
                        let count = per + usize::from(i < extra);
                        for _ in 0..count {
                            if let Some(t) = target.get_mut(*id) {
                                t.insert((topic.clone(), p));
                            }
                            p += 1;
                        }
                    }
                }
            }
            Assignor::Uniform => {
                // Keep each partition with its current owner while that owner is subscribed
                // and under its fair share; hand the rest to the least loaded subscriber.
                let all: Vec<Tp> = self
                    .topics_seen
                    .iter()
                    .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
                    .collect();
                let subscribers = |t: &str| -> Vec<&String> {
                    self.members
                        .values()
                        .filter(|m| m.subscribed.contains(t))
                        .map(|m| &m.id)
                        .collect()
                };
                let active = self
                    .members
                    .values()
                    .filter(|m| {
                        m.subscribed
                            .iter()
                            .any(|t| self.topics_seen.contains_key(t))
                    })
                    .count()
                    .max(1);
                let quota = all.len().div_ceil(active);
                let mut free = Vec::new();
                for tp in &all {
                    let keep =
                        self.target
                            .iter()
                            .find(|(_, ps)| ps.contains(tp))
                            .and_then(|(id, _)| {
                                let ok = self
                                    .members
                                    .get(id)
                                    .is_some_and(|m| m.subscribed.contains(&tp.0))
                                    && target.get(id).is_some_and(|t| t.len() < quota);
                                ok.then(|| id.clone())
                            });
                    match keep {
                        Some(id) => {
                            if let Some(t) = target.get_mut(&id) {
                                t.insert(tp.clone());
                            }
                        }
                        None => free.push(tp.clone()),
                    }
                }
                for tp in free {
                    let best = subscribers(&tp.0)
                        .into_iter()
                        .min_by_key(|id| {
                            (target.get(*id).map(|t| t.len()).unwrap_or(0), (*id).clone())
                        })
                        .cloned();
                    if let Some(id) = best {
                        if let Some(t) = target.get_mut(&id) {
                            t.insert(tp);
                        }
                    }
                }
                // Even out: move from members over the floor share to those under it.
                let floor = all.len() / active;
                loop {
                    let over = target
                        .iter()
                        .filter(|(_, t)| t.len() > floor + 1)
                        .map(|(id, _)| id.clone())
                        .next();
                    let Some(over) = over else { break };
                    let moved = target.get(&over).and_then(|t| {
                        t.iter().find_map(|tp| {
                            subscribers(&tp.0)
                                .into_iter()
                                .find(|id| {
                                    target.get(*id).is_some_and(|x| x.len() < floor + 1)
                                        && **id != over
                                })
                                .map(|id| (tp.clone(), id.clone()))
                        })
                    });
                    match moved {
                        Some((tp, to)) => {
                            if let Some(t) = target.get_mut(&over) {
                                t.remove(&tp);
                            }
                            if let Some(t) = target.get_mut(&to) {
                                t.insert(tp);
                            }
                        }
                        None => break,
                    }
                }
            }
        }
        target
    }

    /// Moves one member towards its target: first it gives up what others need, then it gets
    /// what nobody else still holds.
    fn reconcile(&mut self, member_id: &str, now: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        // Partitions other members were told they own, or have not revoked yet.
        let held_by_others: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|o| o.id != member_id)
            .flat_map(|o| o.assigned.iter().chain(o.revoking.iter()).cloned())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        if !m.revoking.is_empty() {
            // Revoked once the member's own report no longer lists them.
            if m.owned.is_disjoint(&m.revoking) {
                m.revoking.clear();
                m.revoke_since = None;
            } else {
                return;
            }
        }
        let to_revoke: BTreeSet<Tp> = m.assigned.difference(&target).cloned().collect();
        if !to_revoke.is_empty() {
            m.assigned = m.assigned.intersection(&target).cloned().collect();
            m.revoking = to_revoke;
            m.revoke_since = Some(now);
            return;
        }
        let gets: BTreeSet<Tp> = target
            .difference(&m.assigned)
            .filter(|tp| !held_by_others.contains(*tp))
            .cloned()
            .collect();
        m.assigned.extend(gets);
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
            self.dirty = true;
        }
    }

    /// Advances time: members silent for the session timeout, and members that do not revoke
    /// within their rebalance timeout, are removed.
    pub fn tick(
        &mut self,
        limits: &ConsumerLimits,
        partitions: &dyn Fn(&str) -> Option<i32>,
        now: i64,
    ) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now - m.last_heartbeat > i64::from(limits.session_timeout_ms)
                    || m.revoke_since
                        .is_some_and(|t| now - t > i64::from(m.rebalance_timeout_ms.max(1)))
            })
            .map(|m| m.id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            tracing::info!(group = %self.id, member = %id, "consumer group member expired");
            self.remove(id);
        }
        self.bump(partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConsumerLimits = ConsumerLimits {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        max_size: 10,
    };

    fn parts(t: &str) -> Option<i32> {
        (t == "t").then_some(4)
    }

    fn hb(id: &str, epoch: i32, owned: Option<Vec<Tp>>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed_topics: (epoch == 0).then(|| vec!["t".to_string()]),
            server_assignor: None,
            owned,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn tps(ps: &[i32]) -> Vec<Tp> {
        ps.iter().map(|p| ("t".to_string(), *p)).collect()
    }

    #[test]
    fn a_second_member_gets_partitions_only_after_the_first_revokes() {
        let mut g = ConsumerGroup::new("g");
        let a = g
            .heartbeat(hb("a", 0, Some(vec![])), &LIMITS, &parts, 0)
            .unwrap();
        assert_eq!(a.member_epoch, 1);
        assert_eq!(a.assignment, Some(tps(&[0, 1, 2, 3])));
        let a = g
            .heartbeat(hb("a", 1, Some(tps(&[0, 1, 2, 3]))), &LIMITS, &parts, 1)
            .unwrap();
        assert_eq!(a.assignment, None, "unchanged: not sent again");
        // b joins: epoch 2; b's target is two partitions a still holds, so b waits.
        let b = g
            .heartbeat(hb("b", 0, Some(vec![])), &LIMITS, &parts, 2)
            .unwrap();
        assert_eq!(b.member_epoch, 2);
        assert_eq!(b.assignment, Some(vec![]));
        assert_eq!(state_name(&g), "Reconciling");
        // a is asked to give two up, keeping its epoch until it has.
        let a = g
            .heartbeat(hb("a", 1, Some(tps(&[0, 1, 2, 3]))), &LIMITS, &parts, 3)
            .unwrap();
        assert_eq!(a.member_epoch, 1);
        let kept = a.assignment.unwrap();
        assert_eq!(kept.len(), 2);
        // a reports it revoked: it moves to epoch 2.
        let a = g
            .heartbeat(hb("a", 1, Some(kept.clone())), &LIMITS, &parts, 4)
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        // Now b gets the other two.
        let b = g
            .heartbeat(hb("b", 2, Some(vec![])), &LIMITS, &parts, 5)
            .unwrap();
        let got = b.assignment.unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|tp| !kept.contains(tp)));
        assert_eq!(state_name(&g), "Stable");
        // A stale epoch is fenced.
        assert!(matches!(
            g.heartbeat(hb("b", 7, Some(got.clone())), &LIMITS, &parts, 6),
            Err(Error::FencedMemberEpoch { .. })
        ));
        // b leaves: a gets everything at the next epoch.
        g.heartbeat(hb("b", -1, None), &LIMITS, &parts, 7).unwrap();
        let a = g
            .heartbeat(hb("a", 2, Some(kept)), &LIMITS, &parts, 8)
            .unwrap();
        assert_eq!(a.member_epoch, 3);
        assert_eq!(a.assignment.unwrap().len(), 4);
    }

    #[test]
    fn silent_members_expire_and_range_assigns_ranges() {
        let mut g = ConsumerGroup::new("g");
        let mut first = hb("a", 0, Some(vec![]));
        first.server_assignor = Some("range".into());
        g.heartbeat(first, &LIMITS, &parts, 0).unwrap();
        g.heartbeat(hb("b", 0, Some(vec![])), &LIMITS, &parts, 0)
            .unwrap();
        assert_eq!(
            g.target
                .get("a")
                .unwrap()
                .iter()
                .map(|t| t.1)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            g.target
                .get("b")
                .unwrap()
                .iter()
                .map(|t| t.1)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        g.heartbeat(hb("a", 2, Some(vec![])), &LIMITS, &parts, 40_000)
            .unwrap();
        g.tick(&LIMITS, &parts, 46_000);
        assert!(!g.members.contains_key("b"));
        assert_eq!(g.target.get("a").unwrap().len(), 4);
        let mut bad = hb("c", 0, Some(vec![]));
        bad.server_assignor = Some("sticky".into());
        assert!(matches!(
            g.heartbeat(bad, &LIMITS, &parts, 46_000),
            Err(Error::UnsupportedAssignor(_))
        ));
    }
}
