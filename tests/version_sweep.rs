//! Every version ApiVersions advertises is answered: for each supported API and each version in
//! its advertised range, a real request gets a response that decodes at that version (an
//! encoder that refuses a field the version lacks would instead close the connection).

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafkabox::api::APIS as SUPPORTED_APIS;
use kafkabox_protocol::batch::{encode_uncompressed, ProducerFields};

use common::call;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn join_request(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(Bytes::from_static(b"meta"))])
}

/// A member of a new group at generation 1 (JoinGroup v5: MEMBER_ID_REQUIRED, then join).
async fn join_member(addr: SocketAddr, group: &str) -> (String, i32) {
    let r: JoinGroupResponse = call(addr, ApiKey::JoinGroup, 5, &join_request(group, "")).await;
    let r: JoinGroupResponse = call(
        addr,
        ApiKey::JoinGroup,
        5,
        &join_request(group, r.member_id.as_str()),
    )
    .await;
    assert_eq!(r.error_code, 0);
    (r.member_id.to_string(), r.generation_id)
}

fn sync_request(group: &str, member: &str, generation: i32) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id(generation)
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_assignment(Bytes::from_static(b"A")),
        ])
}

/// A simple (generation -1) commit of `offset` on sweep/0.
async fn commit(addr: SocketAddr, v: i16, group: &str, offset: i64) -> OffsetCommitResponse {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("sweep"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                ]),
        ]);
    call(addr, ApiKey::OffsetCommit, v, &req).await
}

/// A transactional producer's id and epoch for `id` (InitProducerId v3).
async fn init_txn(addr: SocketAddr, id: &str) -> (ProducerId, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))))
        .with_transaction_timeout_ms(60_000);
    let r: InitProducerIdResponse = call(addr, ApiKey::InitProducerId, 3, &req).await;
    assert_eq!(r.error_code, 0, "InitProducerId for {id}");
    (r.producer_id, r.producer_epoch)
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// AddPartitionsToTxn at version `v` of partition 0 of "sweep" for `id`: the client's form
/// up to v3, the brokers' batched form (KIP-890) from v4.
fn add_partitions_request(
    v: i16,
    id: &str,
    pid: ProducerId,
    epoch: i16,
) -> AddPartitionsToTxnRequest {
    let topics = vec![
        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(name("sweep"))
            .with_partitions(vec![0]),
    ];
    if v >= 4 {
        AddPartitionsToTxnRequest::default().with_transactions(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                .with_transactional_id(txn_id(id))
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_topics(topics),
        ])
    } else {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(id))
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(topics)
    }
}

/// AddPartitionsToTxn v0 of partition 0 of "sweep" for `id`.
async fn add_sweep_partition(addr: SocketAddr, id: &str, pid: ProducerId, epoch: i16) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(pid)
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name("sweep"))
                .with_partitions(vec![0]),
        ]);
    let r: AddPartitionsToTxnResponse = call(addr, ApiKey::AddPartitionsToTxn, 0, &req).await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_is_answered() {
    let _watchdog = common::watchdog("every_advertised_version_is_answered");
    let dir = tempfile::tempdir().unwrap();
    // ACLs enforced, but no binding names the resources used: everything is allowed (and the
    // ACL APIs answer).
    let server = common::start_with(
        dir.path(),
        &[
            ("authorizer.class.name", "kafkabox"),
            ("allow.everyone.if.no.acl.found", "true"),
        ],
    )
    .await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("sweep", 1, Default::default())
        .unwrap();
    let mut checked = 0;
    for api in SUPPORTED_APIS {
        let key = ApiKey::try_from(api.key).unwrap();
        for v in api.min..=api.max {
            match key {
                ApiKey::ApiVersions => {
                    let mut req = ApiVersionsRequest::default();
                    if v >= 3 {
                        req.client_software_name = StrBytes::from_static_str("sweep");
                        req.client_software_version = StrBytes::from_static_str("1.0");
                    }
                    let r: ApiVersionsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0);
                    assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
                }
                ApiKey::Metadata => {
                    let mut req = MetadataRequest::default().with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(name("sweep"))),
                    ]));
                    if v >= 8 {
                        req.include_topic_authorized_operations = true;
                    }
                    let r: MetadataResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.topics[0].error_code, 0, "Metadata v{v}");
                    assert_eq!(r.brokers.len(), 1);
                    if v >= 8 {
                        // KIP-430: READ, WRITE, ... ALTER_CONFIGS, as bits.
                        assert_eq!(r.topics[0].topic_authorized_operations, 0b1101_1111_1000);
                    }
                }
                ApiKey::Produce => {
                    let batch = encode_uncompressed(
                        &[(None, Some(b"v"))],
                        1_900_000_000_000,
                        ProducerFields::NONE,
                    );
                    let req = ProduceRequest::default()
                        .with_transactional_id(None)
                        .with_acks(1)
                        .with_timeout_ms(5000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(name("sweep"))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(batch)))])]);
                    let r: ProduceResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.responses[0].partition_responses[0].error_code, 0,
                        "Produce v{v}"
                    );
                }
                ApiKey::Fetch => {
                    let req = FetchRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_max_bytes(1 << 20)
                        .with_session_epoch(-1)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(name("sweep"))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20)])]);
                    let r: FetchResponse = call(addr, key, v, &req).await;
                    let p = &r.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0, "Fetch v{v}");
                    assert!(
                        p.records.as_ref().is_some_and(|b| !b.is_empty()),
                        "Fetch v{v} returns the batch"
                    );
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![ListOffsetsTopic::default()
                            .with_name(name("sweep"))
                            .with_partitions(vec![ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1)])]);
                    let r: ListOffsetsResponse = call(addr, key, v, &req).await;
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, 0, "ListOffsets v{v}");
                    assert!(p.offset > 0);
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(name(&format!("created-v{v}")))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)]);
                    let r: CreateTopicsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}");
                }
                ApiKey::InitProducerId => {
                    let req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000);
                    let r: InitProducerIdResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "InitProducerId v{v}");
                }
                ApiKey::FindCoordinator => {
                    // v0-3 carry one key, v4+ a list of them.
                    let req = if v >= 4 {
                        FindCoordinatorRequest::default()
                            .with_coordinator_keys(vec![StrBytes::from_static_str("group")])
                    } else {
                        FindCoordinatorRequest::default()
                            .with_key(StrBytes::from_static_str("group"))
                    };
                    let r: FindCoordinatorResponse = call(addr, key, v, &req).await;
                    let code = if v >= 4 {
                        r.coordinators[0].error_code
                    } else {
                        r.error_code
                    };
                    assert_eq!(code, 0, "FindCoordinator v{v}");
                }
                ApiKey::JoinGroup => {
                    let group = format!("join-v{v}");
                    let req = join_request(&group, "");
                    let r: JoinGroupResponse = call(addr, key, v, &req).await;
                    let r = if v >= 4 {
                        assert_eq!(r.error_code, 79, "JoinGroup v{v}: MEMBER_ID_REQUIRED");
                        let req = join_request(&group, r.member_id.as_str());
                        call::<_, JoinGroupResponse>(addr, key, v, &req).await
                    } else {
                        r
                    };
                    assert_eq!(r.error_code, 0, "JoinGroup v{v}");
                    assert_eq!(r.generation_id, 1, "JoinGroup v{v}");
                    assert_eq!(r.leader, r.member_id, "JoinGroup v{v}");
                    assert_eq!(r.members.len(), 1, "JoinGroup v{v}");
                }
                ApiKey::SyncGroup => {
                    let (member, generation) = join_member(addr, &format!("sync-v{v}")).await;
                    let req = sync_request(&format!("sync-v{v}"), &member, generation);
                    let r: SyncGroupResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "SyncGroup v{v}");
                    assert_eq!(&r.assignment[..], b"A", "SyncGroup v{v}");
                }
                ApiKey::Heartbeat => {
                    let group = format!("hb-v{v}");
                    let (member, generation) = join_member(addr, &group).await;
                    let _: SyncGroupResponse = call(
                        addr,
                        ApiKey::SyncGroup,
                        3,
                        &sync_request(&group, &member, generation),
                    )
                    .await;
                    let req = HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group)))
                        .with_member_id(StrBytes::from_string(member))
                        .with_generation_id(generation);
                    let r: HeartbeatResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "Heartbeat v{v}");
                }
                ApiKey::LeaveGroup => {
                    let group = format!("leave-v{v}");
                    let (member, _) = join_member(addr, &group).await;
                    let mut req = LeaveGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group)));
                    if v >= 3 {
                        req.members = vec![leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_string(member))];
                    } else {
                        req.member_id = StrBytes::from_string(member);
                    }
                    let r: LeaveGroupResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "LeaveGroup v{v}");
                    if v >= 3 {
                        assert_eq!(r.members[0].error_code, 0, "LeaveGroup v{v}");
                    }
                }
                ApiKey::OffsetCommit => {
                    let r = commit(addr, v, &format!("commit-v{v}"), 5).await;
                    assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{v}");
                }
                ApiKey::OffsetFetch => {
                    let group = format!("fetch-v{v}");
                    commit(addr, 2, &group, 5).await;
                    let topics = vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(name("sweep"))
                        .with_partition_indexes(vec![0])];
                    let req = if v >= 8 {
                        OffsetFetchRequest::default().with_groups(vec![
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(GroupId(StrBytes::from_string(group)))
                                .with_topics(Some(vec![
                                    offset_fetch_request::OffsetFetchRequestTopics::default()
                                        .with_name(name("sweep"))
                                        .with_partition_indexes(vec![0]),
                                ])),
                        ])
                    } else {
                        OffsetFetchRequest::default()
                            .with_group_id(GroupId(StrBytes::from_string(group)))
                            .with_topics(Some(topics))
                    };
                    let r: OffsetFetchResponse = call(addr, key, v, &req).await;
                    let offset = if v >= 8 {
                        r.groups[0].topics[0].partitions[0].committed_offset
                    } else {
                        r.topics[0].partitions[0].committed_offset
                    };
                    assert_eq!(offset, 5, "OffsetFetch v{v}");
                }
                ApiKey::DescribeGroups => {
                    let group = format!("describe-v{v}");
                    commit(addr, 2, &group, 1).await;
                    let req = DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_string(group))]);
                    let r: DescribeGroupsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.groups[0].error_code, 0, "DescribeGroups v{v}");
                    assert_eq!(
                        r.groups[0].group_state.as_str(),
                        "Empty",
                        "DescribeGroups v{v}"
                    );
                }
                ApiKey::ListGroups => {
                    commit(addr, 2, "listed", 1).await;
                    let r: ListGroupsResponse =
                        call(addr, key, v, &ListGroupsRequest::default()).await;
                    assert_eq!(r.error_code, 0, "ListGroups v{v}");
                    assert!(r.groups.iter().any(|g| g.group_id.0.as_str() == "listed"));
                }
                ApiKey::DeleteGroups => {
                    let group = format!("delete-v{v}");
                    commit(addr, 2, &group, 1).await;
                    let req = DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(StrBytes::from_string(group))]);
                    let r: DeleteGroupsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
                }
                ApiKey::OffsetDelete => {
                    commit(addr, 2, "offset-delete", 1).await;
                    let req = OffsetDeleteRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("offset-delete")))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(name("sweep"))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]);
                    let r: OffsetDeleteResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "OffsetDelete v{v}");
                    assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetDelete v{v}");
                }
                ApiKey::DeleteTopics => {
                    let t = format!("del-v{v}");
                    let created = server
                        .store()
                        .create_topic(&t, 1, Default::default())
                        .unwrap();
                    let mut req = DeleteTopicsRequest::default().with_timeout_ms(5000);
                    if v >= 6 {
                        // By topic id, with no name.
                        req.topics = vec![delete_topics_request::DeleteTopicState::default()
                            .with_name(None)
                            .with_topic_id(uuid::Uuid::from_bytes(created.meta.id))];
                    } else {
                        req.topic_names = vec![name(&t)];
                    }
                    let r: DeleteTopicsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
                    assert!(server.store().topic(&t).is_none(), "DeleteTopics v{v}");
                }
                ApiKey::CreatePartitions => {
                    let t = format!("cp-v{v}");
                    server
                        .store()
                        .create_topic(&t, 1, Default::default())
                        .unwrap();
                    let req = CreatePartitionsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(vec![
                            create_partitions_request::CreatePartitionsTopic::default()
                                .with_name(name(&t))
                                .with_count(3),
                        ]);
                    let r: CreatePartitionsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{v}");
                    assert_eq!(server.store().topic(&t).unwrap().partitions.len(), 3);
                }
                ApiKey::DescribeConfigs => {
                    let req = DescribeConfigsRequest::default()
                        .with_include_synonyms(true)
                        .with_resources(vec![
                            describe_configs_request::DescribeConfigsResource::default()
                                .with_resource_type(2)
                                .with_resource_name(StrBytes::from_static_str("sweep"))
                                .with_configuration_keys(None),
                            describe_configs_request::DescribeConfigsResource::default()
                                .with_resource_type(4)
                                .with_resource_name(StrBytes::from_static_str("0"))
                                .with_configuration_keys(None),
                        ]);
                    let r: DescribeConfigsResponse = call(addr, key, v, &req).await;
                    for res in &r.results {
                        assert_eq!(
                            res.error_code, 0,
                            "DescribeConfigs v{v}: {:?}",
                            res.error_message
                        );
                        assert!(!res.configs.is_empty(), "DescribeConfigs v{v}");
                    }
                }
                ApiKey::AlterConfigs => {
                    let req = AlterConfigsRequest::default().with_resources(vec![
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("sweep"))
                            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("-1")))]),
                    ]);
                    let r: AlterConfigsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.responses[0].error_code, 0, "AlterConfigs v{v}");
                }
                ApiKey::IncrementalAlterConfigs => {
                    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("sweep"))
                            .with_configs(vec![
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                                    .with_config_operation(0)
                                    .with_value(Some(StrBytes::from_static_str("delete"))),
                            ]),
                    ]);
                    let r: IncrementalAlterConfigsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.responses[0].error_code, 0, "IncrementalAlterConfigs v{v}");
                }
                ApiKey::DeleteRecords => {
                    let req = DeleteRecordsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                            .with_name(name("sweep"))
                            .with_partitions(vec![
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(0)
                                    .with_offset(0),
                            ])]);
                    let r: DeleteRecordsResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.topics[0].partitions[0].error_code, 0,
                        "DeleteRecords v{v}"
                    );
                }
                ApiKey::DescribeCluster => {
                    let req = DescribeClusterRequest::default()
                        .with_include_cluster_authorized_operations(true);
                    let r: DescribeClusterResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "DescribeCluster v{v}");
                    assert_eq!(r.brokers.len(), 1, "DescribeCluster v{v}");
                    assert!(!r.cluster_id.is_empty());
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let req = OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                                .with_topic(name("sweep"))
                                .with_partitions(vec![
                                offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                    .with_partition(0)
                                    .with_current_leader_epoch(0)
                                    .with_leader_epoch(0),
                            ]),
                        ]);
                    let r: OffsetForLeaderEpochResponse = call(addr, key, v, &req).await;
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, 0, "OffsetForLeaderEpoch v{v}");
                    assert_eq!(p.leader_epoch, 0, "OffsetForLeaderEpoch v{v}");
                }
                ApiKey::DescribeLogDirs => {
                    let r: DescribeLogDirsResponse = call(
                        addr,
                        key,
                        v,
                        &DescribeLogDirsRequest::default().with_topics(None),
                    )
                    .await;
                    assert_eq!(r.error_code, 0, "DescribeLogDirs v{v}");
                    assert!(!r.results[0].topics.is_empty(), "DescribeLogDirs v{v}");
                }
                ApiKey::DescribeProducers => {
                    let req = DescribeProducersRequest::default().with_topics(vec![
                        describe_producers_request::TopicRequest::default()
                            .with_name(name("sweep"))
                            .with_partition_indexes(vec![0]),
                    ]);
                    let r: DescribeProducersResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.topics[0].partitions[0].error_code, 0,
                        "DescribeProducers v{v}"
                    );
                }
                ApiKey::ConsumerGroupHeartbeat => {
                    let req = ConsumerGroupHeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(format!("kip848-v{v}"))))
                        .with_member_id(StrBytes::from_string(format!("member-v{v}")))
                        .with_member_epoch(0)
                        .with_rebalance_timeout_ms(30_000)
                        .with_subscribed_topic_names(Some(vec![name("sweep")]))
                        .with_topic_partitions(Some(vec![]));
                    let r: ConsumerGroupHeartbeatResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.error_code, 0,
                        "ConsumerGroupHeartbeat v{v}: {:?}",
                        r.error_message
                    );
                    assert_eq!(r.member_epoch, 1, "ConsumerGroupHeartbeat v{v}");
                    let a = r.assignment.expect("an assignment on join");
                    assert_eq!(a.topic_partitions[0].partitions, vec![0]);
                }
                ApiKey::ConsumerGroupDescribe => {
                    let req = ConsumerGroupDescribeRequest::default()
                        .with_group_ids(vec![GroupId(StrBytes::from_static_str("kip848-v0"))]);
                    let r: ConsumerGroupDescribeResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.groups[0].error_code, 0, "ConsumerGroupDescribe v{v}");
                    assert_eq!(r.groups[0].members.len(), 1, "ConsumerGroupDescribe v{v}");
                }
                ApiKey::SaslHandshake => {
                    // On a PLAINTEXT listener there is no SASL to start: ILLEGAL_SASL_STATE.
                    let req = SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512"));
                    let r: SaslHandshakeResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 34, "SaslHandshake v{v}");
                    assert_eq!(r.mechanisms.len(), 3, "SaslHandshake v{v}");
                }
                ApiKey::SaslAuthenticate => {
                    let req = SaslAuthenticateRequest::default()
                        .with_auth_bytes(Bytes::from_static(b"\0u\0p"));
                    let r: SaslAuthenticateResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 34, "SaslAuthenticate v{v}");
                }
                ApiKey::CreateAcls => {
                    let req = CreateAclsRequest::default().with_creations(vec![
                        create_acls_request::AclCreation::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(format!("acl-v{v}")))
                            .with_resource_pattern_type(3)
                            .with_principal(StrBytes::from_static_str("User:sweep"))
                            .with_host(StrBytes::from_static_str("*"))
                            .with_operation(3)
                            .with_permission_type(3),
                    ]);
                    let r: CreateAclsResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.results[0].error_code, 0,
                        "CreateAcls v{v}: {:?}",
                        r.results[0].error_message
                    );
                }
                ApiKey::DescribeAcls => {
                    let req = DescribeAclsRequest::default()
                        .with_resource_type_filter(1)
                        .with_pattern_type_filter(1)
                        .with_operation(1)
                        .with_permission_type(1);
                    let r: DescribeAclsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "DescribeAcls v{v}");
                }
                ApiKey::DeleteAcls => {
                    let req = DeleteAclsRequest::default().with_filters(vec![
                        delete_acls_request::DeleteAclsFilter::default()
                            .with_resource_type_filter(1)
                            .with_pattern_type_filter(1)
                            .with_principal_filter(Some(StrBytes::from_static_str("User:sweep")))
                            .with_operation(1)
                            .with_permission_type(1),
                    ]);
                    let r: DeleteAclsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.filter_results[0].error_code, 0, "DeleteAcls v{v}");
                }
                ApiKey::AlterUserScramCredentials => {
                    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                            .with_name(StrBytes::from_static_str("sweep"))
                            .with_mechanism(2)
                            .with_iterations(4096)
                            .with_salt(Bytes::from_static(b"0123456789abcdef"))
                            .with_salted_password(Bytes::from(vec![7u8; 64])),
                    ]);
                    let r: AlterUserScramCredentialsResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.results[0].error_code, 0,
                        "AlterUserScramCredentials v{v}: {:?}",
                        r.results[0].error_message
                    );
                }
                ApiKey::DescribeUserScramCredentials => {
                    let r: DescribeUserScramCredentialsResponse = call(
                        addr,
                        key,
                        v,
                        &DescribeUserScramCredentialsRequest::default().with_users(None),
                    )
                    .await;
                    assert_eq!(r.error_code, 0, "DescribeUserScramCredentials v{v}");
                }
                ApiKey::AddPartitionsToTxn => {
                    let id = format!("sweep-add-v{v}");
                    let (pid, epoch) = init_txn(addr, &id).await;
                    let req = add_partitions_request(v, &id, pid, epoch);
                    let r: AddPartitionsToTxnResponse = call(addr, key, v, &req).await;
                    let results = if v >= 4 {
                        &r.results_by_transaction[0].topic_results
                    } else {
                        &r.results_by_topic_v3_and_below
                    };
                    assert_eq!(
                        results[0].results_by_partition[0].partition_error_code, 0,
                        "AddPartitionsToTxn v{v}"
                    );
                }
                ApiKey::AddOffsetsToTxn => {
                    let id = format!("sweep-offsets-v{v}");
                    let (pid, epoch) = init_txn(addr, &id).await;
                    let req = AddOffsetsToTxnRequest::default()
                        .with_transactional_id(txn_id(&id))
                        .with_producer_id(pid)
                        .with_producer_epoch(epoch)
                        .with_group_id(GroupId(StrBytes::from_string(format!("txn-g-{v}"))));
                    let r: AddOffsetsToTxnResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "AddOffsetsToTxn v{v}");
                }
                ApiKey::TxnOffsetCommit => {
                    let id = format!("sweep-txncommit-v{v}");
                    let group = GroupId(StrBytes::from_string(format!("txn-commit-g-{v}")));
                    let (pid, epoch) = init_txn(addr, &id).await;
                    let add = AddOffsetsToTxnRequest::default()
                        .with_transactional_id(txn_id(&id))
                        .with_producer_id(pid)
                        .with_producer_epoch(epoch)
                        .with_group_id(group.clone());
                    let r: AddOffsetsToTxnResponse =
                        call(addr, ApiKey::AddOffsetsToTxn, 0, &add).await;
                    assert_eq!(r.error_code, 0);
                    let req = TxnOffsetCommitRequest::default()
                        .with_transactional_id(txn_id(&id))
                        .with_group_id(group)
                        .with_producer_id(pid)
                        .with_producer_epoch(epoch)
                        .with_generation_id(-1)
                        .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                            .with_name(name("sweep"))
                            .with_partitions(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(0),
                            ])]);
                    let r: TxnOffsetCommitResponse = call(addr, key, v, &req).await;
                    assert_eq!(
                        r.topics[0].partitions[0].error_code, 0,
                        "TxnOffsetCommit v{v}"
                    );
                }
                ApiKey::EndTxn => {
                    let id = format!("sweep-end-v{v}");
                    let (pid, epoch) = init_txn(addr, &id).await;
                    assert_eq!(add_sweep_partition(addr, &id, pid, epoch).await, 0);
                    let req = EndTxnRequest::default()
                        .with_transactional_id(txn_id(&id))
                        .with_producer_id(pid)
                        .with_producer_epoch(epoch)
                        .with_committed(v % 2 == 0);
                    let r: EndTxnResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "EndTxn v{v}");
                }
                ApiKey::DescribeTransactions => {
                    let id = format!("sweep-describe-v{v}");
                    let (pid, _) = init_txn(addr, &id).await;
                    let req = DescribeTransactionsRequest::default()
                        .with_transactional_ids(vec![txn_id(&id), txn_id("never-seen")]);
                    let r: DescribeTransactionsResponse = call(addr, key, v, &req).await;
                    let s = &r.transaction_states[0];
                    assert_eq!(s.error_code, 0, "DescribeTransactions v{v}");
                    assert_eq!(s.transaction_state.as_str(), "Empty");
                    assert_eq!(s.producer_id, pid);
                    assert_eq!(
                        r.transaction_states[1].error_code, 105,
                        "TRANSACTIONAL_ID_NOT_FOUND"
                    );
                }
                ApiKey::ListTransactions => {
                    let id = format!("sweep-list-v{v}");
                    let (pid, _) = init_txn(addr, &id).await;
                    let req = ListTransactionsRequest::default()
                        .with_state_filters(vec![
                            StrBytes::from_static_str("Empty"),
                            StrBytes::from_static_str("Nope"),
                        ])
                        .with_producer_id_filters(vec![pid])
                        .with_duration_filter(-1);
                    let r: ListTransactionsResponse = call(addr, key, v, &req).await;
                    assert_eq!(r.error_code, 0, "ListTransactions v{v}");
                    assert_eq!(r.transaction_states.len(), 1, "ListTransactions v{v}");
                    assert_eq!(r.transaction_states[0].transactional_id.0.as_str(), id);
                    assert_eq!(
                        r.unknown_state_filters,
                        vec![StrBytes::from_static_str("Nope")]
                    );
                }
                other => panic!("no sweep case for {other:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        SUPPORTED_APIS
            .iter()
            .map(|a| (a.max - a.min + 1) as usize)
            .sum::<usize>()
    );
    server.shutdown().await.unwrap();
}

/// Every API that takes injected errors answers one at every advertised version, in the place
/// its clients look (an encoder refusing a field the version lacks would close the connection
/// instead), and the request is not carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_answer_every_version() {
    let _watchdog = common::watchdog("injected_errors_answer_every_version");
    use kafkabox::appliance::FaultRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("faults.allow", "true")]).await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("sweep", 1, Default::default())
        .unwrap();
    let faults = &server.services().faults;
    let group = || GroupId(StrBytes::from_static_str("g"));
    let mut checked = 0;
    for api in SUPPORTED_APIS.iter().filter(|a| a.takes_errors) {
        let key = ApiKey::try_from(api.key).unwrap();
        for v in api.min..=api.max {
            let code = 15i16; // COORDINATOR_NOT_AVAILABLE: any code will do
            let request = FaultRequest::error(api.name, &code.to_string()).count(1);
            let spec = kafkabox::api::faults::resolve(&request).unwrap();
            faults.add(spec, request).unwrap();
            let got: Vec<i16> = match key {
                ApiKey::Produce => {
                    let batch = encode_uncompressed(&[(None, Some(b"v"))], 1, ProducerFields::NONE);
                    let req = ProduceRequest::default()
                        .with_acks(-1)
                        .with_timeout_ms(5000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(name("sweep"))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(batch)))])]);
                    let r: ProduceResponse = call(addr, key, v, &req).await;
                    vec![r.responses[0].partition_responses[0].error_code]
                }
                ApiKey::Fetch => {
                    let req = FetchRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_max_bytes(1 << 20)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(name("sweep"))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(0)
                                .with_partition_max_bytes(1 << 20)])]);
                    let r: FetchResponse = call(addr, key, v, &req).await;
                    vec![r.responses[0].partitions[0].error_code]
                }
                ApiKey::ListOffsets => {
                    let req = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![ListOffsetsTopic::default()
                            .with_name(name("sweep"))
                            .with_partitions(vec![ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1)])]);
                    let r: ListOffsetsResponse = call(addr, key, v, &req).await;
                    vec![r.topics[0].partitions[0].error_code]
                }
                ApiKey::OffsetCommit => {
                    let r = commit(addr, v, "g", 0).await;
                    vec![r.topics[0].partitions[0].error_code]
                }
                ApiKey::OffsetFetch => {
                    let req = if v >= 8 {
                        OffsetFetchRequest::default().with_groups(vec![
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(group())
                                .with_topics(None),
                        ])
                    } else {
                        OffsetFetchRequest::default()
                            .with_group_id(group())
                            .with_topics(None)
                    };
                    let r: OffsetFetchResponse = call(addr, key, v, &req).await;
                    if v >= 8 {
                        vec![r.groups[0].error_code]
                    } else if v >= 2 {
                        vec![r.error_code]
                    } else {
                        // v0-1 have no top-level error code: an empty answer, nothing done.
                        vec![code]
                    }
                }
                ApiKey::FindCoordinator => {
                    let req = if v >= 4 {
                        FindCoordinatorRequest::default()
                            .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
                    };
                    let r: FindCoordinatorResponse = call(addr, key, v, &req).await;
                    if v >= 4 {
                        vec![r.coordinators[0].error_code]
                    } else {
                        vec![r.error_code]
                    }
                }
                ApiKey::JoinGroup => {
                    let r: JoinGroupResponse = call(addr, key, v, &join_request("g", "")).await;
                    vec![r.error_code]
                }
                ApiKey::Heartbeat => {
                    let req = HeartbeatRequest::default()
                        .with_group_id(group())
                        .with_member_id(StrBytes::from_static_str("m"));
                    let r: HeartbeatResponse = call(addr, key, v, &req).await;
                    vec![r.error_code]
                }
                ApiKey::LeaveGroup => {
                    let req = if v >= 3 {
                        LeaveGroupRequest::default()
                            .with_group_id(group())
                            .with_members(vec![leave_group_request::MemberIdentity::default()
                                .with_member_id(StrBytes::from_static_str("m"))])
                    } else {
                        LeaveGroupRequest::default()
                            .with_group_id(group())
                            .with_member_id(StrBytes::from_static_str("m"))
                    };
                    let r: LeaveGroupResponse = call(addr, key, v, &req).await;
                    vec![r.error_code]
                }
                ApiKey::SyncGroup => {
                    let r: SyncGroupResponse = call(addr, key, v, &sync_request("g", "m", 1)).await;
                    vec![r.error_code]
                }
                ApiKey::InitProducerId => {
                    let req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000);
                    let r: InitProducerIdResponse = call(addr, key, v, &req).await;
                    vec![r.error_code]
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(name("never-created"))
                            .with_num_partitions(1)
                            .with_replication_factor(1)]);
                    let r: CreateTopicsResponse = call(addr, key, v, &req).await;
                    vec![r.topics[0].error_code]
                }
                ApiKey::DeleteTopics => {
                    let req = if v >= 6 {
                        DeleteTopicsRequest::default()
                            .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(name("sweep")))])
                    } else {
                        DeleteTopicsRequest::default().with_topic_names(vec![name("sweep")])
                    };
                    let r: DeleteTopicsResponse = call(addr, key, v, &req).await;
                    vec![r.responses[0].error_code]
                }
                ApiKey::AddPartitionsToTxn => {
                    let req = add_partitions_request(v, "inj", ProducerId(0), 0);
                    let r: AddPartitionsToTxnResponse = call(addr, key, v, &req).await;
                    if v >= 4 {
                        // The batched form's error is the request's.
                        vec![r.error_code]
                    } else {
                        vec![
                            r.results_by_topic_v3_and_below[0].results_by_partition[0]
                                .partition_error_code,
                        ]
                    }
                }
                ApiKey::AddOffsetsToTxn => {
                    let req = AddOffsetsToTxnRequest::default()
                        .with_transactional_id(txn_id("inj"))
                        .with_group_id(group());
                    let r: AddOffsetsToTxnResponse = call(addr, key, v, &req).await;
                    vec![r.error_code]
                }
                ApiKey::TxnOffsetCommit => {
                    let req = TxnOffsetCommitRequest::default()
                        .with_transactional_id(txn_id("inj"))
                        .with_group_id(group())
                        .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                            .with_name(name("sweep"))
                            .with_partitions(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                            ])]);
                    let r: TxnOffsetCommitResponse = call(addr, key, v, &req).await;
                    vec![r.topics[0].partitions[0].error_code]
                }
                ApiKey::EndTxn => {
                    let req = EndTxnRequest::default().with_transactional_id(txn_id("inj"));
                    let r: EndTxnResponse = call(addr, key, v, &req).await;
                    vec![r.error_code]
                }
                ApiKey::DescribeTransactions => {
                    let req = DescribeTransactionsRequest::default()
                        .with_transactional_ids(vec![txn_id("inj")]);
                    let r: DescribeTransactionsResponse = call(addr, key, v, &req).await;
                    vec![r.transaction_states[0].error_code]
                }
                ApiKey::ListTransactions => {
                    let r: ListTransactionsResponse =
                        call(addr, key, v, &ListTransactionsRequest::default()).await;
                    vec![r.error_code]
                }
                other => panic!("no case for {other:?}, which takes injected errors"),
            };
            assert_eq!(got, vec![code], "{} v{v}", api.name);
            checked += 1;
        }
    }
    assert!(faults.list().is_empty());
    // Nothing was carried out: no record, no topic created or deleted.
    assert_eq!(
        server.store().topic("sweep").map(|t| t.partitions.len()),
        Some(1)
    );
    assert!(server.store().topic("never-created").is_none());
    let t = server.store().topic("sweep").unwrap();
    let end = server.store().offsets(t.partition(0).unwrap()).log_end;
    assert_eq!(end, 0, "no produce went through");
    assert_eq!(
        checked,
        SUPPORTED_APIS
            .iter()
            .filter(|a| a.takes_errors)
            .map(|a| (a.max - a.min + 1) as usize)
            .sum::<usize>()
    );
    server.shutdown().await.unwrap();
}
