//! Every version ApiVersions advertises is answered: for each supported API and each version in
//! its advertised range, a real request gets a response that decodes at that version (an
//! encoder that refuses a field the version lacks would instead close the connection).

mod common;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafkabox_protocol::batch::{encode_uncompressed, ProducerFields};
use kafkabox_protocol::SUPPORTED_APIS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn call<Q: Encodable, R: Decodable + HeaderVersion>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Q,
) -> R {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(version as i32 + 100)
        .with_client_id(Some(StrBytes::from_static_str("sweep")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{key:?} v{version}: encoding the request: {e}"));
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    s.write_all(&frame).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .await
        .unwrap_or_else(|e| panic!("{key:?} v{version}: no response ({e})"));
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    let rh = ResponseHeader::decode(&mut body, R::header_version(version)).unwrap();
    assert_eq!(
        rh.correlation_id,
        version as i32 + 100,
        "{key:?} v{version}"
    );
    R::decode(&mut body, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("sweep", 1, Default::default())
        .unwrap();
    let mut checked = 0;
    for api in SUPPORTED_APIS {
        for v in api.min..=api.max {
            match api.key {
                ApiKey::ApiVersions => {
                    let mut req = ApiVersionsRequest::default();
                    if v >= 3 {
                        req.client_software_name = StrBytes::from_static_str("sweep");
                        req.client_software_version = StrBytes::from_static_str("1.0");
                    }
                    let r: ApiVersionsResponse = call(addr, api.key, v, &req).await;
                    assert_eq!(r.error_code, 0);
                    assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::default().with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(name("sweep"))),
                    ]));
                    let r: MetadataResponse = call(addr, api.key, v, &req).await;
                    assert_eq!(r.topics[0].error_code, 0, "Metadata v{v}");
                    assert_eq!(r.brokers.len(), 1);
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
                    let r: ProduceResponse = call(addr, api.key, v, &req).await;
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
                    let r: FetchResponse = call(addr, api.key, v, &req).await;
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
                    let r: ListOffsetsResponse = call(addr, api.key, v, &req).await;
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
                    let r: CreateTopicsResponse = call(addr, api.key, v, &req).await;
                    assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}");
                }
                ApiKey::InitProducerId => {
                    let req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000);
                    let r: InitProducerIdResponse = call(addr, api.key, v, &req).await;
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
                    let r: FindCoordinatorResponse = call(addr, api.key, v, &req).await;
                    let code = if v >= 4 {
                        r.coordinators[0].error_code
                    } else {
                        r.error_code
                    };
                    assert_eq!(code, 15, "FindCoordinator v{v}: COORDINATOR_NOT_AVAILABLE");
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
