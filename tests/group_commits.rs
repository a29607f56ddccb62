//! Offset commits from members the group has moved past are refused, as Kafka's group
//! coordinator refuses them (apache/kafka group-coordinator: ClassicGroup's and ConsumerGroup's
//! offset-commit validation), so a removed or fenced member can never move another member's
//! offsets back. Raw requests against the real `kafkabox serve` binary.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{call, commit_t0 as commit, committed_t0 as committed, BrokerProcess};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const REBALANCE_IN_PROGRESS: i16 = 27;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// JoinGroup v5 (static membership from v5); one member, so it answers at once.
async fn join(
    addr: SocketAddr,
    group: &str,
    member: &str,
    instance: Option<&str>,
) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"m"))]);
    let r: JoinGroupResponse = call(addr, ApiKey::JoinGroup, 5, &req).await;
    if r.error_code == 79 {
        // MEMBER_ID_REQUIRED: join again with the id it gave (KIP-394).
        let again = req.with_member_id(r.member_id.clone());
        return call(addr, ApiKey::JoinGroup, 5, &again).await;
    }
    r
}

async fn sync(
    addr: SocketAddr,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_generation_id(generation)
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(Bytes::from_static(b"a")),
        ]);
    let r: SyncGroupResponse = call(addr, ApiKey::SyncGroup, 3, &req).await;
    assert_eq!(r.error_code, 0, "SyncGroup of {member} in {group}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_members_the_group_moved_past_are_refused() {
    let _watchdog = common::watchdog("commits_of_members_the_group_moved_past_are_refused");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr;
    common::create_topic(addr, "t", 1).await;

    // A classic member of generation 1 commits.
    let j = join(addr, "g", "", None).await;
    assert_eq!(j.error_code, 0);
    let (m1, gen1) = (j.member_id.to_string(), j.generation_id);
    sync(addr, "g", &m1, gen1, None).await;
    assert_eq!(commit(addr, "g", &m1, None, gen1, 10).await, 0);

    // It rejoins: between its JoinGroup and SyncGroup the group is completing the rebalance.
    let j = join(addr, "g", &m1, None).await;
    assert_eq!(j.error_code, 0);
    let gen2 = j.generation_id;
    assert!(gen2 > gen1);
    assert_eq!(
        commit(addr, "g", &m1, None, gen2, 11).await,
        REBALANCE_IN_PROGRESS
    );
    // A commit of the generation it left behind is stale, whatever the group's state.
    assert_eq!(
        commit(addr, "g", &m1, None, gen1, 12).await,
        ILLEGAL_GENERATION
    );
    sync(addr, "g", &m1, gen2, None).await;
    assert_eq!(
        commit(addr, "g", &m1, None, gen1, 13).await,
        ILLEGAL_GENERATION
    );
    assert_eq!(commit(addr, "g", &m1, None, gen2, 20).await, 0);

    // The member leaves while it still commits: its late commit (from the rebalance callback
    // of a consumer that left) must not move the offset back.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(s(&m1))
        ]);
    let r: LeaveGroupResponse = call(addr, ApiKey::LeaveGroup, 3, &leave).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(
        commit(addr, "g", &m1, None, gen2, 5).await,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(committed(addr, "g").await, 20);

    // Static membership: a restarted instance replaces its old member id; the old one (a
    // zombie) is fenced.
    let a = join(addr, "s", "", Some("i-1")).await;
    assert_eq!(a.error_code, 0);
    let (old, gen) = (a.member_id.to_string(), a.generation_id);
    sync(addr, "s", &old, gen, Some("i-1")).await;
    assert_eq!(commit(addr, "s", &old, Some("i-1"), gen, 30).await, 0);
    let b = join(addr, "s", "", Some("i-1")).await;
    assert_eq!(b.error_code, 0);
    let new = b.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(
        commit(addr, "s", &old, Some("i-1"), b.generation_id, 3).await,
        FENCED_INSTANCE_ID
    );
    assert_eq!(committed(addr, "s").await, 30);

    // KIP-848: a member that left an empty group behind cannot commit with its old epoch; a
    // commit from outside the group protocol (epoch -1) still can.
    let hb = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_member_id(s("k-member-0000000000001"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(vec![]));
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 0, &hb).await;
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let (member, epoch) = (r.member_id.map(|m| m.to_string()).unwrap(), r.member_epoch);
    assert_eq!(commit(addr, "k", &member, None, epoch, 40).await, 0);
    let leave = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("k")))
        .with_member_id(s(&member))
        .with_member_epoch(-1);
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 0, &leave).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(
        commit(addr, "k", &member, None, epoch, 4).await,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(committed(addr, "k").await, 40);
    assert_eq!(commit(addr, "k", "", None, -1, 41).await, 0);
    assert_eq!(committed(addr, "k").await, 41);
    drop(broker);
}
