//! Bounds on what clients leave with the group coordinator, against the real `kafkabox serve`
//! binary over raw requests: member metadata and assignments over
//! `group.max.member.metadata.bytes` are refused and not kept, accepted ones are stored
//! compactly (base64, not arrays of numbers) and leave the stored record with their member;
//! `group.max.count` refuses new groups; `offsets.retention.*` expires the offsets of groups
//! without members (and the groups) while a group with a live member keeps its own.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{call, BrokerProcess};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const MIB: usize = 1024 * 1024;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Bytes of the data dir, every file under it.
fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `len` bytes, each 100..=255: a JSON array of numbers spends 4 bytes on every one of them.
fn blob(len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (100 + (i * 7) % 156) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn join_req(group: &str, member: &str, session_ms: i32, metadata: Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(session_ms)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(metadata)])
}

async fn describe(addr: SocketAddr, group: &str) -> describe_groups_response::DescribedGroup {
    let d = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let r: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 5, &d).await;
    r.groups.into_iter().next().expect("one group described")
}

async fn listed(addr: SocketAddr) -> BTreeSet<String> {
    let r: ListGroupsResponse =
        call(addr, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    r.groups.iter().map(|g| g.group_id.0.to_string()).collect()
}

/// Commits offset 7 on t-0; the partition's error code.
async fn commit(addr: SocketAddr, group: &str, member: &str, generation: i32) -> i16 {
    common::commit_t0(addr, group, member, None, generation, 7).await
}

/// The group's committed offset on t-0 (-1: none).
async fn committed(addr: SocketAddr, group: &str) -> i64 {
    common::committed_t0(addr, group).await
}

async fn heartbeat(addr: SocketAddr, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation);
    call::<_, HeartbeatResponse>(addr, ApiKey::Heartbeat, 3, &req)
        .await
        .error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_metadata_is_bounded_stored_compactly_and_goes_with_the_member() {
    let _watchdog =
        common::watchdog("member_metadata_is_bounded_stored_compactly_and_goes_with_the_member");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = ["--set", "group.max.member.metadata.bytes=4194304"];
    let mut broker = BrokerProcess::spawn(&data, &settings);
    let addr = broker.addr;
    // Start-up writes settle (a flush interval or two).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = dir_size(&data);

    // JoinGroup v0 (no authentication, no member id round trip) with 6 MiB of metadata:
    // INVALID_REQUEST, no group, nothing on disk.
    let r: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        0,
        &join_req("big", "", 6_000, blob(6 * MIB)),
    )
    .await;
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    assert!(!listed(addr).await.contains("big"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after_refusal = dir_size(&data);
    assert!(
        after_refusal < base + 2 * MIB as u64,
        "the data dir grew from {base} to {after_refusal} bytes for a refused join"
    );

    // Within the bound: 3 MiB of metadata and a 3 MiB assignment are kept...
    let metadata = blob(3 * MIB);
    let r: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        0,
        &join_req("kept", "", 6_000, metadata.clone()),
    )
    .await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.leader, r.member_id, "alone, the member leads");
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, metadata);
    let member = r.member_id.clone();
    let sync = |assignment: Bytes| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("kept")))
            .with_generation_id(r.generation_id)
            .with_member_id(member.clone())
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(assignment),
            ])
    };
    // ... but not a 5 MiB assignment: refused, the group waits for a valid one.
    let sr: SyncGroupResponse = call(addr, ApiKey::SyncGroup, 0, &sync(blob(5 * MIB))).await;
    assert_eq!(sr.error_code, 42, "INVALID_REQUEST");
    let assignment = blob(3 * MIB);
    let sr: SyncGroupResponse = call(addr, ApiKey::SyncGroup, 0, &sync(assignment.clone())).await;
    assert_eq!(sr.error_code, 0);
    assert_eq!(sr.assignment, assignment);
    // The answer came once the group record was durable: stored as base64 (4/3), not as
    // arrays of numbers (about 4 times the bytes).
    let payload = (metadata.len() + assignment.len()) as u64;
    let grown = dir_size(&data).saturating_sub(after_refusal);
    assert!(
        grown < 2 * payload,
        "the data dir grew {grown} bytes for {payload} bytes of metadata and assignment"
    );
    let g = describe(addr, "kept").await;
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members[0].member_metadata, metadata);
    assert_eq!(g.members[0].member_assignment, assignment);

    // KIP-848: a subscription over the bound is refused too, with a message.
    let names: Vec<TopicName> = (0..25_000)
        .map(|i| TopicName(s(&format!("{i:0>200}"))))
        .collect();
    let hb = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("kip848")))
        .with_member_id(s("m"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(names))
        .with_topic_partitions(Some(vec![]));
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 1, &hb).await;
    assert_eq!(r.error_code, 42, "INVALID_REQUEST");
    let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(
        message.contains("group.max.member.metadata.bytes"),
        "{message}"
    );
    assert!(!listed(addr).await.contains("kip848"));

    // The member stops heartbeating: after its session timeout (6 s) it is gone, the group
    // empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = describe(addr, "kept").await;
        if g.group_state.as_str() == "Empty" {
            assert!(g.members.is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member did not expire: {}",
            g.group_state.as_str()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The stored record no longer holds it: after a restart the group is empty.
    assert_eq!(broker.terminate().code(), Some(0));
    let broker = BrokerProcess::spawn(&data, &settings);
    let g = describe(broker.addr, "kept").await;
    assert_eq!(g.group_state.as_str(), "Empty");
    assert!(
        g.members.is_empty(),
        "the stored record still holds the expired member"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_count_is_bounded_and_offsets_of_empty_groups_expire() {
    let _watchdog = common::watchdog("group_count_is_bounded_and_offsets_of_empty_groups_expire");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "group.max.count=5",
            "--set",
            "offsets.retention.ms=3000",
            "--set",
            "offsets.retention.check.interval.ms=500",
        ],
    );
    let addr = broker.addr;
    common::create_topic(addr, "t", 1).await;

    // A group with a live member, and its commit.
    let r: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_req("live", "", 10_000, Bytes::from_static(b"m")),
    )
    .await;
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let r: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_req(
            "live",
            r.member_id.as_str(),
            10_000,
            Bytes::from_static(b"m"),
        ),
    )
    .await;
    assert_eq!(r.error_code, 0);
    let (member, generation) = (r.member_id.to_string(), r.generation_id);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("live")))
        .with_member_id(r.member_id.clone())
        .with_generation_id(generation);
    let sr: SyncGroupResponse = call(addr, ApiKey::SyncGroup, 3, &sync).await;
    assert_eq!(sr.error_code, 0);
    assert_eq!(commit(addr, "live", &member, generation).await, 0);

    // Commits outside any group protocol (generation -1) create four more: five in all.
    for g in ["e0", "e1", "e2", "e3"] {
        assert_eq!(commit(addr, g, "", -1).await, 0, "{g}");
    }
    // A sixth is refused with INVALID_GROUP_ID, whichever request would create it.
    assert_eq!(commit(addr, "e4", "", -1).await, 24);
    let j: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_req("j", "", 10_000, Bytes::from_static(b"m")),
    )
    .await;
    assert_eq!(j.error_code, 24);
    let hb = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_member_id(s("k-member"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(vec![]));
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 1, &hb).await;
    assert_eq!(r.error_code, 24);
    let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(message.contains("group.max.count"), "{message}");
    let names = listed(addr).await;
    for g in ["e4", "j", "k"] {
        assert!(!names.contains(g), "{g} in {names:?}");
    }
    // Groups that exist still commit.
    assert_eq!(commit(addr, "e0", "", -1).await, 0);
    assert_eq!(committed(addr, "e1").await, 7);

    // offsets.retention.ms (3 s) later, checked every 500 ms, the groups without members
    // have lost their offsets and are gone; the live member's group keeps its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(heartbeat(addr, "live", &member, generation).await, 0);
        let names = listed(addr).await;
        if !names.iter().any(|g| g.starts_with('e')) {
            assert!(names.contains("live"), "{names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "empty groups did not expire: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for g in ["e0", "e1", "e2", "e3"] {
        assert_eq!(committed(addr, g).await, -1, "{g}");
    }
    assert_eq!(committed(addr, "live").await, 7);
    // There is room again.
    assert_eq!(commit(addr, "e4", "", -1).await, 0);
    assert_eq!(committed(addr, "e4").await, 7);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_retention_minutes_is_read_by_serve_and_reported() {
    let _watchdog = common::watchdog("offsets_retention_minutes_is_read_by_serve_and_reported");
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &["--set", "offsets.retention.minutes=90"],
    );
    let d = common::within(
        "DescribeConfigs of the broker",
        Duration::from_secs(30),
        common::admin(broker.addr)
            .describe_configs(&[ResourceSpecifier::Broker(0)], &AdminOptions::new()),
    )
    .await
    .unwrap();
    let config = d[0].as_ref().unwrap();
    let e = config.get("offsets.retention.minutes").expect("reported");
    assert_eq!(e.value.as_deref(), Some("90"));
}
