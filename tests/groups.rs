//! Consumer groups against the real `kafkabox serve` binary: librdkafka (rdkafka crate)
//! members sharing a topic and rebalancing when one leaves or dies, committed offsets that
//! survive kill -9, cooperative-sticky assignment, and the group APIs' error codes and bounds
//! over raw requests (unknown members, stale generations, a join storm, the group.* settings).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{call, BrokerProcess};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

async fn produce(addr: SocketAddr, topic: &str, n: usize) {
    let p = common::producer(addr, &[]);
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        p.send(
            FutureRecord::to(topic).key(&key).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
}

fn member(addr: SocketAddr, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

fn partitions_of(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer (rdkafka rebalances inside poll), collecting (partition, offset), until
/// `done` holds; fails after `secs` seconds.
fn poll_until(
    consumers: &[&BaseConsumer],
    seen: &mut BTreeSet<(i32, i64)>,
    secs: u64,
    what: &str,
    mut done: impl FnMut(&BTreeSet<(i32, i64)>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(seen) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for c in consumers {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.insert((m.partition(), m.offset()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_a_topic_and_rebalance_when_one_leaves_or_dies() {
    let _watchdog = common::watchdog("members_share_a_topic_and_rebalance_when_one_leaves_or_dies");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr;
    common::create_topic(addr, "shared", 3).await;
    produce(addr, "shared", 300).await;

    tokio::task::spawn_blocking(move || {
        let a = member(addr, "sharing", &[]);
        let b = member(addr, "sharing", &[]);
        a.subscribe(&["shared"]).unwrap();
        b.subscribe(&["shared"]).unwrap();
        let mut seen = BTreeSet::new();
        poll_until(
            &[&a, &b],
            &mut seen,
            60,
            "both members to own partitions",
            |_| {
                let (pa, pb) = (partitions_of(&a), partitions_of(&b));
                !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3 && pa.is_disjoint(&pb)
            },
        );
        poll_until(&[&a, &b], &mut seen, 60, "all 300 records", |s| {
            s.len() == 300
        });

        // b leaves (close sends LeaveGroup): a takes every partition.
        drop(b);
        poll_until(
            &[&a],
            &mut seen,
            30,
            "a to own all three after b left",
            |_| partitions_of(&a).len() == 3,
        );

        // A confluent-kafka member joins from another process, then dies (SIGKILL): after its
        // session timeout a owns everything again.
        let mut py = Command::new(common::python())
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/python/group_member.py"),
            )
            .args([&addr.to_string(), "sharing", "shared"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python member");
        let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The python member prints "assigned N" once it owns partitions.
            let _ = a.poll(Duration::from_millis(50));
            if partitions_of(&a).len() < 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the python member never got partitions"
            );
        }
        let first = lines.next().expect("python output").expect("line");
        assert!(first.starts_with("assigned"), "{first}");
        py.kill().unwrap();
        py.wait().unwrap();
        let died = Instant::now();
        poll_until(
            &[&a],
            &mut seen,
            60,
            "a to own all three after the member died",
            |_| partitions_of(&a).len() == 3,
        );
        assert!(
            died.elapsed() >= Duration::from_secs(3),
            "a dead member is noticed by its session timeout, not earlier"
        );
    })
    .await
    .unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_kill_9() {
    let _watchdog = common::watchdog("committed_offsets_survive_kill_9");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &[]);
    common::create_topic(broker.addr, "durable", 3).await;
    produce(broker.addr, "durable", 300).await;
    let addr = broker.addr;
    let committed = tokio::task::spawn_blocking(move || {
        let c = member(addr, "resume", &[("enable.auto.commit", "false")]);
        c.subscribe(&["durable"]).unwrap();
        let mut seen = BTreeSet::new();
        poll_until(&[&c], &mut seen, 60, "150 records", |s| s.len() >= 150);
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        let positions = c.position().unwrap();
        let committed = c.committed(Duration::from_secs(10)).unwrap();
        assert_eq!(
            positions.to_topic_map(),
            committed.to_topic_map(),
            "the commit is read back"
        );
        let offsets: Vec<(i32, i64)> = committed
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(0)))
            .collect();
        // Partition lists hold references into the client: release them before closing it,
        // or librdkafka's close waits for them.
        drop(positions);
        drop(committed);
        drop(c);
        offsets
    })
    .await
    .unwrap();
    // A partition not read yet has no commit (-1001) and starts from the beginning.
    let total: i64 = committed.iter().map(|(_, o)| (*o).max(0)).sum();
    assert!(total >= 150, "{committed:?}");

    broker.kill9();
    let broker = BrokerProcess::spawn(&data, &[]);
    let addr = broker.addr;
    tokio::task::spawn_blocking(move || {
        let c = member(addr, "resume", &[("enable.auto.commit", "false")]);
        c.subscribe(&["durable"]).unwrap();
        let mut seen = BTreeSet::new();
        let want = (300 - total) as usize;
        poll_until(&[&c], &mut seen, 60, "the rest", |s| s.len() >= want);
        // A moment more: nothing before the committed offsets comes again.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.insert((m.partition(), m.offset()));
            }
        }
        assert_eq!(seen.len(), want);
        for (p, from) in &committed {
            let first = seen.iter().filter(|(sp, _)| sp == p).map(|(_, o)| *o).min();
            if let Some(first) = first {
                assert_eq!(
                    first,
                    (*from).max(0),
                    "partition {p} resumes at its committed offset"
                );
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, _) in &committed {
            tpl.add_partition("durable", *p);
        }
        let again = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        for e in again.elements() {
            let before = committed
                .iter()
                .find(|(p, _)| *p == e.partition())
                .unwrap()
                .1;
            if before >= 0 {
                assert_eq!(e.offset(), Offset::Offset(before));
            } else {
                assert_eq!(e.offset(), Offset::Invalid);
            }
        }
    })
    .await
    .unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_members_share_and_take_over() {
    let _watchdog = common::watchdog("cooperative_sticky_members_share_and_take_over");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr;
    common::create_topic(addr, "sticky", 3).await;
    produce(addr, "sticky", 90).await;
    tokio::task::spawn_blocking(move || {
        let coop = [("partition.assignment.strategy", "cooperative-sticky")];
        let a = member(addr, "coop", &coop);
        a.subscribe(&["sticky"]).unwrap();
        let mut seen = BTreeSet::new();
        poll_until(&[&a], &mut seen, 60, "a alone to own all three", |_| {
            partitions_of(&a).len() == 3
        });
        let b = member(addr, "coop", &coop);
        b.subscribe(&["sticky"]).unwrap();
        poll_until(&[&a, &b], &mut seen, 60, "an incremental rebalance", |_| {
            let (pa, pb) = (partitions_of(&a), partitions_of(&b));
            !pb.is_empty() && pa.len() + pb.len() == 3 && pa.is_disjoint(&pb)
        });
        poll_until(&[&a, &b], &mut seen, 60, "all 90 records", |s| {
            s.len() == 90
        });
        drop(a);
        poll_until(&[&b], &mut seen, 30, "b to take over", |_| {
            partitions_of(&b).len() == 3
        });
    })
    .await
    .unwrap();
    drop(broker);
}

// --- Raw requests: error codes and bounds ---

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join_req(group: &str, member: &str, session_ms: i32, protocol_type: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(session_ms)
        .with_protocol_type(s(protocol_type))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))
        .with_metadata(Bytes::from_static(b"m"))])
}

async fn join(addr: SocketAddr, group: &str, member: &str, session_ms: i32) -> JoinGroupResponse {
    call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_req(group, member, session_ms, "consumer"),
    )
    .await
}

/// A single member at generation 1, synced.
async fn lone_member(addr: SocketAddr, group: &str) -> (String, i32) {
    let r = join(addr, group, "", 10_000).await;
    assert_eq!(r.error_code, 79);
    let r = join(addr, group, r.member_id.as_str(), 10_000).await;
    assert_eq!(r.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(r.member_id.clone())
        .with_generation_id(r.generation_id);
    let sr: SyncGroupResponse = call(addr, ApiKey::SyncGroup, 3, &sync).await;
    assert_eq!(sr.error_code, 0);
    (r.member_id.to_string(), r.generation_id)
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

async fn commit(
    addr: SocketAddr,
    group: &str,
    member: &str,
    generation: i32,
    metadata: &str,
) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("errors")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(s(metadata))),
                ]),
        ]);
    let r: OffsetCommitResponse = call(addr, ApiKey::OffsetCommit, 8, &req).await;
    r.topics[0].partitions[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_errors_are_kafkas_and_a_join_storm_is_bounded() {
    let _watchdog = common::watchdog("group_errors_are_kafkas_and_a_join_storm_is_bounded");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr;
    common::create_topic(addr, "errors", 1).await;

    // Heartbeats, syncs and joins from members nobody knows.
    assert_eq!(heartbeat(addr, "no-such-group", "m", 1).await, 25);
    let (m, generation) = lone_member(addr, "g").await;
    assert_eq!(
        join(addr, "g", "made-up-member", 10_000).await.error_code,
        25
    );
    assert_eq!(heartbeat(addr, "g", "made-up-member", generation).await, 25);
    // Stale generations.
    assert_eq!(heartbeat(addr, "g", &m, generation - 1).await, 22);
    assert_eq!(commit(addr, "g", &m, generation + 5, "").await, 22);
    assert_eq!(heartbeat(addr, "g", &m, generation).await, 0);
    assert_eq!(commit(addr, "g", &m, generation, "meta").await, 0);
    // A member of another protocol type; a session timeout below the minimum.
    let other: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_req("g", "", 10_000, "connect"),
    )
    .await;
    assert_eq!(other.error_code, 23);
    assert_eq!(join(addr, "fresh", "", 10).await.error_code, 26);
    // A group with members cannot be deleted; an unknown one is not found.
    let del = DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(s("g")), GroupId(s("never"))]);
    let r: DeleteGroupsResponse = call(addr, ApiKey::DeleteGroups, 2, &del).await;
    assert_eq!(r.results[0].error_code, 68);
    assert_eq!(r.results[1].error_code, 69);
    // Unknown groups: Dead before v6, GROUP_ID_NOT_FOUND from v6.
    let d = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("never"))]);
    let r5: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 5, &d).await;
    assert_eq!(r5.groups[0].group_state.as_str(), "Dead");
    let r6: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 6, &d).await;
    assert_eq!(r6.groups[0].error_code, 69);
    // The pipeline's groups are read-only.
    assert_eq!(commit(addr, "kafkabox.profile", "", -1, "").await, 30);
    assert_eq!(
        join(addr, "kafkabox.profile", "", 10_000).await.error_code,
        30
    );

    // A join storm: 1,100 new members. group.max.size (1000) of them get a member id, the rest
    // GROUP_MAX_SIZE_REACHED; the group holds no more than that.
    let mut handed_out = 0;
    let mut refused = 0;
    for _ in 0..1_100 {
        match join(addr, "storm", "", 10_000).await.error_code {
            79 => handed_out += 1,
            81 => refused += 1,
            other => panic!("unexpected JoinGroup error {other}"),
        }
    }
    assert_eq!((handed_out, refused), (1_000, 100));
    // The broker still serves the group that was there.
    assert_eq!(heartbeat(addr, "g", &m, generation).await, 0);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_settings_take_effect_in_serve() {
    let _watchdog = common::watchdog("group_settings_take_effect_in_serve");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "group.min.session.timeout.ms=2000",
            "--set",
            "group.max.session.timeout.ms=20000",
            "--set",
            "group.max.size=2",
            "--set",
            "offset.metadata.max.bytes=8",
            "--set",
            "group.consumer.session.timeout.ms=1000",
        ],
    );
    let addr = broker.addr;
    common::create_topic(addr, "errors", 1).await;
    assert_eq!(join(addr, "t", "", 1_500).await.error_code, 26);
    assert_eq!(join(addr, "t", "", 30_000).await.error_code, 26);
    assert_eq!(join(addr, "t", "", 3_000).await.error_code, 79);
    assert_eq!(join(addr, "t", "", 3_000).await.error_code, 79);
    assert_eq!(join(addr, "t", "", 3_000).await.error_code, 81);
    assert_eq!(commit(addr, "simple", "", -1, "12345678").await, 0);
    assert_eq!(commit(addr, "simple", "", -1, "123456789").await, 12);
    // A KIP-848 member silent for group.consumer.session.timeout.ms (1 s) is removed.
    let hb = |epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("kip848-expiry")))
            .with_member_id(s("silent-member"))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names((epoch == 0).then(|| vec![TopicName(s("errors"))]))
            .with_topic_partitions(Some(vec![]))
    };
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 1, &hb(0)).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r: ConsumerGroupHeartbeatResponse =
        call(addr, ApiKey::ConsumerGroupHeartbeat, 1, &hb(1)).await;
    assert_eq!(
        r.error_code, 25,
        "UNKNOWN_MEMBER_ID after the session timeout"
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_stages_show_as_read_only_groups() {
    let _watchdog = common::watchdog("pipeline_stages_show_as_read_only_groups");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr;
    let p = common::producer(addr, &[]);
    let event = r#"{"customer_id":"c1","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","source":"web","value":10.0}"#;
    for _ in 0..5 {
        p.send(
            FutureRecord::<(), _>::to("customer-events").payload(event),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
    p.send(
        FutureRecord::<(), _>::to("customer-events").payload("not json"),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
    let listed: ListGroupsResponse =
        call(addr, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    let names: BTreeSet<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert!(
        names.contains("kafkabox.contract") && names.contains("kafkabox.profile"),
        "{names:?}"
    );
    // OffsetFetch shows each stage's position: both reach the log end (6).
    let deadline = Instant::now() + Duration::from_secs(30);
    for group in ["kafkabox.contract", "kafkabox.profile"] {
        loop {
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None);
            let r: OffsetFetchResponse = call(addr, ApiKey::OffsetFetch, 7, &req).await;
            let offset = r
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == "customer-events")
                .map(|t| t.partitions[0].committed_offset);
            if offset == Some(6) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{group} never reached 6: {offset:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let d = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("kafkabox.profile"))]);
    let r: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 5, &d).await;
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].members.len(), 1);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_consumer_protocol_assigns_reconciles_and_resumes() {
    let _watchdog = common::watchdog("kip_848_consumer_protocol_assigns_reconciles_and_resumes");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = ["--set", "group.consumer.heartbeat.interval.ms=500"];
    let mut broker = BrokerProcess::spawn(&data, &settings);
    common::create_topic(broker.addr, "kip848", 4).await;
    produce(broker.addr, "kip848", 200).await;
    let addr = broker.addr;
    let consumer_protocol = [
        ("group.protocol", "consumer"),
        ("enable.auto.commit", "false"),
    ];
    let committed = tokio::task::spawn_blocking(move || {
        // librdkafka refuses session/heartbeat settings with the consumer protocol.
        let mk = || -> BaseConsumer {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", addr.to_string())
                .set("group.id", "kip848-group")
                .set("auto.offset.reset", "earliest");
            for (k, v) in consumer_protocol {
                c.set(k, v);
            }
            c.create().expect("consumer")
        };
        let a = mk();
        a.subscribe(&["kip848"]).unwrap();
        let mut seen = BTreeSet::new();
        poll_until(&[&a], &mut seen, 60, "a alone to own all four", |_| {
            partitions_of(&a).len() == 4
        });
        // b joins: the broker moves two partitions, after a has revoked them.
        let b = mk();
        b.subscribe(&["kip848"]).unwrap();
        poll_until(
            &[&a, &b],
            &mut seen,
            60,
            "the broker to split the partitions",
            |_| {
                let (pa, pb) = (partitions_of(&a), partitions_of(&b));
                pa.len() == 2 && pb.len() == 2 && pa.is_disjoint(&pb)
            },
        );
        poll_until(&[&a, &b], &mut seen, 60, "all 200 records", |s| {
            s.len() == 200
        });
        a.commit_consumer_state(CommitMode::Sync).expect("commit a");
        b.commit_consumer_state(CommitMode::Sync).expect("commit b");
        drop(b);
        poll_until(&[&a], &mut seen, 60, "a to own all four again", |_| {
            partitions_of(&a).len() == 4
        });
        drop(a);
        seen.len()
    })
    .await
    .unwrap();
    assert_eq!(committed, 200);
    // ConsumerGroupDescribe and ListGroups see a consumer-type group.
    let listed: ListGroupsResponse = call(
        broker.addr,
        ApiKey::ListGroups,
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("consumer")]),
    )
    .await;
    assert!(listed
        .groups
        .iter()
        .any(|g| g.group_id.0.as_str() == "kip848-group"));
    let d: ConsumerGroupDescribeResponse = call(
        broker.addr,
        ApiKey::ConsumerGroupDescribe,
        0,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("kip848-group"))]),
    )
    .await;
    assert_eq!(d.groups[0].error_code, 0);
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");

    // Offsets committed by the consumer protocol survive kill -9.
    broker.kill9();
    let broker = BrokerProcess::spawn(&data, &settings);
    let addr = broker.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", addr.to_string())
            .set("group.id", "kip848-group")
            .set("auto.offset.reset", "earliest");
        for (k, v) in consumer_protocol {
            c.set(k, v);
        }
        let c: BaseConsumer = c.create().expect("consumer");
        c.subscribe(&["kip848"]).unwrap();
        let mut seen = BTreeSet::new();
        poll_until(
            &[&c],
            &mut seen,
            60,
            "the restarted member to own all four",
            |_| partitions_of(&c).len() == 4,
        );
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.insert((m.partition(), m.offset()));
            }
        }
        assert!(
            seen.is_empty(),
            "everything was committed, yet {seen:?} came again"
        );
    })
    .await
    .unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_survives_kill_9() {
    let _watchdog = common::watchdog("group_membership_survives_kill_9");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &[]);
    let (m, generation) = lone_member(broker.addr, "kept").await;
    broker.kill9();
    let broker = BrokerProcess::spawn(&data, &[]);
    let addr = broker.addr;
    // The member, its generation and the group's state come back; its session restarts, so
    // a heartbeat within the session timeout keeps it.
    let d = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("kept"))]);
    let r: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 5, &d).await;
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].members.len(), 1);
    assert_eq!(r.groups[0].members[0].member_id.as_str(), m);
    assert_eq!(heartbeat(addr, "kept", &m, generation).await, 0);
    drop(broker);
}
