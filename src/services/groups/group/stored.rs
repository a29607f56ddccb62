//! A group's record as stored (one JSON record per group, kept by the store's group records):
//! [`StoredGroup`], its members ([`StoredMember`]) and the client bytes they hold
//! ([`StoredBytes`], base64; the older arrays of numbers still load), a classic group turned
//! into its record and back ([`Group::to_stored`], [`Group::restore`]), and any stored bytes
//! turned into the group they describe ([`restore_record`], which the fuzz target
//! `group_record` feeds). The JSON field names are the on-disk format: they do not change.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Group, GroupState, Member};
use crate::services::groups::consumer::ConsumerGroup;

/// A group as stored: enough to resume after a restart (members must heartbeat again within
/// their session timeout, as after a Kafka coordinator failover).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredGroup {
    /// "consumer" for a KIP-848 group (only its existence is kept: members rejoin after a
    /// restart); absent for a classic group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    /// Written in the middle of a rebalance because a member went: after a restart the group
    /// resumes rebalancing (its members rejoin) rather than trusting assignments.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalancing: bool,
    /// When the group became empty (ms since the epoch), for offset expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, StoredBytes)>,
    pub assignment: StoredBytes,
}

/// Client bytes (protocol metadata, assignments) in a stored record, written as base64 text:
/// 4/3 of their size, where the JSON array of numbers records were first written with takes
/// up to 4 bytes a byte (and as much again to parse at start-up). Both forms load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredBytes(pub Vec<u8>);

impl Serialize for StoredBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for StoredBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StoredBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 text or an array of bytes")
            }

            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<StoredBytes, E> {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(StoredBytes)
                    .map_err(E::custom)
            }

            fn visit_bytes<E: serde::de::Error>(
                self,
                v: &[u8],
            ) -> std::result::Result<StoredBytes, E> {
                Ok(StoredBytes(v.to_vec()))
            }

            // Records written before base64: an array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<StoredBytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(StoredBytes(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Group {
    /// Restores a stored group; its members' sessions start now.
    pub fn restore(id: &str, s: StoredGroup, now: i64) -> Group {
        let mut g = Group::new(id);
        g.protocol_type = s.protocol_type;
        g.protocol = s.protocol;
        g.generation = s.generation;
        g.leader = s.leader;
        g.empty_since_ms = s.empty_since_ms;
        for m in s.members {
            if let Some(i) = &m.instance_id {
                g.statics.insert(i.clone(), m.id.clone());
            }
            let order = g.next_order;
            g.next_order += 1;
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: m.protocol_type,
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|(n, b)| (n, Bytes::from(b.0)))
                        .collect(),
                    assignment: Bytes::from(m.assignment.0),
                    last_heartbeat: now,
                    order,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        if s.rebalancing && !g.members.is_empty() {
            // Stored mid-rebalance: the members rejoin (their heartbeats say so) within the
            // rebalance timeout, and those that do not are dropped.
            g.prepare_rebalance(now);
        }
        g
    }

    /// The record of this group, which [`Group::restore`] reads back.
    pub fn to_stored(&self) -> StoredGroup {
        let stable = self.state == GroupState::Stable;
        StoredGroup {
            rebalancing: matches!(
                self.state,
                GroupState::PreparingRebalance | GroupState::CompletingRebalance
            ),
            empty_since_ms: self.empty_since_ms,
            kind: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: m.protocol_type.clone(),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), StoredBytes(b.to_vec())))
                        .collect(),
                    // Only a stable group's assignment is current; a rebalancing one's members
                    // get a new one.
                    assignment: StoredBytes(if stable {
                        m.assignment.to_vec()
                    } else {
                        Vec::new()
                    }),
                })
                .collect(),
        }
    }
}

/// A stored group record brought back to life.
#[derive(Debug)]
pub enum Restored {
    Classic(Box<Group>),
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
        Ok(s) => Restored::Classic(Box::new(Group::restore(id, s, now))),
        Err(e) => {
            tracing::error!(group = %crate::services::truncate(id, 200), error = %e, "unreadable group record; starting the group empty");
            Restored::Classic(Box::new(Group::new(id)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_bytes_as_base64_and_old_records_still_load() {
        // A record as written before base64: bytes as JSON arrays of numbers.
        let old = r#"{"protocol_type":"consumer","protocol":"range","generation":3,"leader":"m1",
            "members":[{"id":"m1","instance_id":null,"client_id":"c","client_host":"/127.0.0.1",
            "session_timeout_ms":10000,"rebalance_timeout_ms":30000,"protocol_type":"consumer",
            "protocols":[["range",[0,1,255]]],"assignment":[7,8]}]}"#;
        let s: StoredGroup = serde_json::from_str(old).unwrap();
        assert!(!s.rebalancing);
        let mut g = Group::restore("g", s, 0);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.generation, 3);
        let m = g.members.get_mut("m1").unwrap();
        assert_eq!(m.metadata(Some("range")), Bytes::from_static(&[0, 1, 255]));
        assert_eq!(m.assignment, Bytes::from_static(&[7, 8]));

        // Written now: base64, about 4/3 of the bytes where the arrays took about 4 times.
        let blob: Vec<u8> = (0..300_000u32).map(|i| (100 + i % 156) as u8).collect();
        m.protocols = vec![("range".into(), Bytes::from(blob.clone()))];
        m.assignment = Bytes::from(blob.clone());
        let raw = 2 * blob.len();
        let new = serde_json::to_vec(&g.to_stored()).unwrap();
        assert!(
            new.len() < raw * 4 / 3 + 1_000,
            "{} bytes stored for {raw}",
            new.len()
        );
        let former = serde_json::to_vec(&serde_json::json!({
            "protocols": [["range", &blob]],
            "assignment": &blob,
        }))
        .unwrap();
        assert!(former.len() > raw * 3, "{} bytes", former.len());
        let back: StoredGroup = serde_json::from_slice(&new).unwrap();
        assert_eq!(back, g.to_stored());
        assert_eq!(back.members[0].assignment.0, blob);
    }
}
