//! SASL on the wire, request by request (kafka-protocol's client-side encoders): nothing but
//! ApiVersions and the SASL APIs before authentication, bounded frames before it, a failed
//! authentication answered with SASL_AUTHENTICATION_FAILED before the connection closes, and a
//! producer id usable only by the principal that obtained it.

mod common;

use bytes::Bytes;
use common::Conn;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ProducerId,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafkabox::services::users::{Credential, Mechanism};
use kafkabox_protocol::batch::{encode_uncompressed, ProducerFields};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn authenticate(c: &mut Conn, user: &str, password: &str) -> i16 {
    let hs: SaslHandshakeResponse = c
        .call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    assert_eq!(hs.error_code, 0);
    assert!(hs.mechanisms.iter().any(|m| m.as_str() == "SCRAM-SHA-512"));
    let token = format!("\0{user}\0{password}");
    let r: SaslAuthenticateResponse = c
        .call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )
        .await;
    r.error_code
}

fn produce(pid: i64, seq: i32) -> ProduceRequest {
    let batch = encode_uncompressed(
        &[(None, Some(b"v"))],
        1_700_000_000_000,
        ProducerFields {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
        },
    );
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_gates_and_producer_ids_bound_to_principals() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        common::start_with(dir.path(), &[("listeners", "SASL_PLAINTEXT://127.0.0.1:0")]).await;
    let users = &server.services().users;
    let mut changes = Vec::new();
    for (name, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        changes.push((
            name.to_string(),
            Mechanism::ScramSha512,
            Some(Credential::new(Mechanism::ScramSha512.scram(), pw, 4096).unwrap()),
        ));
    }
    users.apply(&changes).unwrap();
    server
        .services()
        .topics
        .create("t", 1, Default::default())
        .unwrap();
    let addr = server.kafka_addr();

    // ApiVersions is answered before authentication and lists the SASL APIs; anything else
    // closes the connection unanswered.
    let mut c = Conn::open(addr).await;
    let v: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert!(v
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16));
    let md: Option<MetadataResponse> = c
        .try_call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(
        md.is_none(),
        "Metadata before authentication must not be answered"
    );

    // A frame over 512 KiB before authentication closes the connection.
    let mut c = Conn::open(addr).await;
    c.s.write_all(&(600 * 1024i32).to_be_bytes()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.s.read(&mut b))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A wrong password: SASL_AUTHENTICATION_FAILED, then the connection is closed.
    let mut c = Conn::open(addr).await;
    assert_eq!(authenticate(&mut c, "alice", "nope").await, 58);
    let after: Option<ApiVersionsResponse> = c
        .try_call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await;
    assert!(after.is_none());

    // alice gets a producer id and writes with it.
    let mut alice = Conn::open(addr).await;
    assert_eq!(authenticate(&mut alice, "alice", "alice-pw").await, 0);
    let ip: InitProducerIdResponse = alice
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(ip.error_code, 0);
    let pid = ip.producer_id.0;
    let r: ProduceResponse = alice.call(ApiKey::Produce, 9, &produce(pid, 0)).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));

    // bob, who saw alice's id, cannot write under it: neither her next sequence number nor a
    // repeat of her batch.
    let mut bob = Conn::open(addr).await;
    assert_eq!(authenticate(&mut bob, "bob", "bob-pw").await, 0);
    for seq in [1, 0] {
        let r: ProduceResponse = bob.call(ApiKey::Produce, 9, &produce(pid, seq)).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            p.error_code, 59,
            "UNKNOWN_PRODUCER_ID for bob at sequence {seq}"
        );
    }
    // Nor a guessed neighbour of it.
    let r: ProduceResponse = bob.call(ApiKey::Produce, 9, &produce(pid + 1, 0)).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 59);
    // alice goes on where she was.
    let r: ProduceResponse = alice.call(ApiKey::Produce, 9, &produce(pid, 1)).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 1));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mechanism_not_enabled_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(
        dir.path(),
        &[
            ("listeners", "SASL_PLAINTEXT://127.0.0.1:0"),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
        ],
    )
    .await;
    let mut c = Conn::open(server.kafka_addr()).await;
    let hs: SaslHandshakeResponse = c
        .call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        )
        .await;
    // UNSUPPORTED_SASL_MECHANISM, with the mechanisms that are enabled.
    assert_eq!(hs.error_code, 33);
    let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(enabled, ["SCRAM-SHA-512"]);
    server.shutdown().await.unwrap();
}
