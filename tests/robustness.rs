//! Bad input over real sockets: malformed, oversized and hostile frames get Kafka's error code
//! where a response is possible, or a closed connection where not; the broker keeps serving
//! every other connection. Includes the kafka-protocol 0.18 allocation-abort frames
//! (KAFKA-PROTOCOL-NOTES.md §9).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafkabox_protocol::batch::{encode_uncompressed, ProducerFields, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn raw_frame(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&[0, 4]);
    f.extend_from_slice(b"test");
    f.extend_from_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

fn encoded_frame<R: Encodable>(key: ApiKey, version: i16, correlation: i32, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Reads one response frame; `None` when the broker closed the connection.
async fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(T, s.read_exact(&mut len))
        .await
        .expect("response or close in time")
    {
        Ok(_) => {}
        Err(_) => return None,
    }
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .unwrap()
        .ok()?;
    Some(Bytes::from(buf))
}

async fn expect_closed(s: &mut TcpStream) {
    assert!(
        read_response(s).await.is_none(),
        "the broker must close this connection"
    );
}

/// A full ApiVersions v0 round trip: proves the broker is alive and serving.
async fn assert_serving(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&raw_frame(18, 0, 42, &[])).await.unwrap();
    let mut r = read_response(&mut s).await.expect("ApiVersions answered");
    assert_eq!(&r[..4], &42i32.to_be_bytes());
    let mut body = r.split_off(4);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

async fn send_and_expect_closed(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The broker may close before reading everything; a failed write is fine.
    let _ = s.write_all(bytes).await;
    expect_closed(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_abort_frames_close_only_their_connection() {
    let _watchdog = common::watchdog("allocation_abort_frames_close_only_their_connection");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    // An idle, healthy connection that must survive everything below.
    let mut healthy = TcpStream::connect(addr).await.unwrap();
    healthy.write_all(&raw_frame(18, 0, 1, &[])).await.unwrap();
    read_response(&mut healthy).await.unwrap();

    // The 7-byte Metadata v1 body that makes kafka-protocol 0.18 allocate 154 GB.
    send_and_expect_closed(
        addr,
        &raw_frame(3, 1, 2, &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61]),
    )
    .await;
    // Compact array (Metadata v9, flexible header: client id then empty tagged fields).
    let mut flex = Vec::new();
    flex.extend_from_slice(&3i16.to_be_bytes());
    flex.extend_from_slice(&9i16.to_be_bytes());
    flex.extend_from_slice(&3i32.to_be_bytes());
    flex.extend_from_slice(&[0, 1, b'x', 0]);
    flex.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07, 0x00]);
    let mut framed = (flex.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&flex);
    send_and_expect_closed(addr, &framed).await;
    // Produce v3 whose topic array claims 2^31-1 topics.
    let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30];
    body.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    send_and_expect_closed(addr, &raw_frame(0, 3, 4, &body)).await;
    // Fetch v4 whose partition array claims 2^31-1 entries for one topic.
    let mut body = vec![
        0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x10, 0, 0, 0,
    ];
    body.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff]);
    send_and_expect_closed(addr, &raw_frame(1, 4, 5, &body)).await;
    // CreateTopics v2 whose config array claims 2^31-1 entries.
    let mut body = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    body.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    send_and_expect_closed(addr, &raw_frame(19, 2, 6, &body)).await;

    healthy.write_all(&raw_frame(18, 0, 7, &[])).await.unwrap();
    let r = read_response(&mut healthy)
        .await
        .expect("healthy connection still served");
    assert_eq!(&r[..4], &7i32.to_be_bytes());
    assert_serving(addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_negative_truncated_and_garbage_frames() {
    let _watchdog = common::watchdog("oversized_negative_truncated_and_garbage_frames");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("socket.request.max.bytes", "1048576")]).await;
    let addr = server.kafka_addr();
    // Over socket.request.max.bytes: closed before anything is buffered.
    send_and_expect_closed(addr, &(200 * 1024 * 1024i32).to_be_bytes()).await;
    send_and_expect_closed(addr, &(-5i32).to_be_bytes()).await;
    // Shorter than a request header.
    send_and_expect_closed(addr, &[0, 0, 0, 3, 0, 18, 0]).await;
    // Random garbage.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect();
    let mut framed = (garbage.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&garbage);
    send_and_expect_closed(addr, &framed).await;
    // A body cut short: Metadata v1 claims one topic, then ends.
    send_and_expect_closed(addr, &raw_frame(3, 1, 9, &[0, 0, 0, 1, 0, 5, b'a'])).await;
    // A client that disconnects mid-frame.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0, 0, 0, 100, 0, 18, 0, 0]).await.unwrap();
    }
    assert_serving(addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unsupported_apis() {
    let _watchdog = common::watchdog("unknown_and_unsupported_apis");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    // Unknown API key: logged, connection closed, as Kafka does.
    send_and_expect_closed(addr, &raw_frame(999, 0, 1, &[])).await;
    // A known key kafkabox does not implement (JoinGroup).
    send_and_expect_closed(addr, &raw_frame(11, 5, 2, &[])).await;
    // Produce v2: below the supported range.
    send_and_expect_closed(addr, &raw_frame(0, 2, 3, &[])).await;
    // ApiVersions at a version the broker lacks: Kafka's v0 UNSUPPORTED_VERSION answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&raw_frame(18, 99, 7, &[])).await.unwrap();
    let r = read_response(&mut s).await.expect("fallback answer");
    assert_eq!(
        &r[..],
        &[0, 0, 0, 7, 0, 0x23, 0, 0, 0, 1, 0, 0x12, 0, 0, 0, 4]
    );
    // And the same connection carries on at a supported version.
    s.write_all(&raw_frame(18, 0, 8, &[])).await.unwrap();
    assert!(read_response(&mut s).await.is_some());
    assert_serving(addr).await;
    server.shutdown().await.unwrap();
}

fn produce(topic: &str, acks: i16, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])])
}

/// Sends a Produce v8 and returns (error code, base offset) of its single partition.
async fn produce_code(
    s: &mut TcpStream,
    correlation: i32,
    req: &ProduceRequest,
) -> (i16, i64, Option<String>) {
    s.write_all(&encoded_frame(ApiKey::Produce, 8, correlation, req))
        .await
        .unwrap();
    let mut r = read_response(s).await.expect("produce answered");
    assert_eq!(&r[..4], &correlation.to_be_bytes());
    let mut body = r.split_off(4);
    let resp = ProduceResponse::decode(&mut body, 8).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (
        p.error_code,
        p.base_offset,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_error_codes_and_nothing_is_stored() {
    let _watchdog = common::watchdog("bad_batches_get_kafka_error_codes_and_nothing_is_stored");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("message.max.bytes", "10000")]).await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("t", 1, Default::default())
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let good = encode_uncompressed(&[(Some(b"k"), Some(b"v"))], 1_000, ProducerFields::NONE);

    // CRC mismatch: CORRUPT_MESSAGE (2).
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 1;
    let (code, _, msg) = produce_code(&mut s, 1, &produce("t", -1, b)).await;
    assert_eq!(code, 2, "{msg:?}");
    assert!(msg.unwrap().contains("CRC"));

    // A record count of 2^31-1 with a valid CRC: INVALID_RECORD (87), no allocation.
    let mut b = good.clone();
    b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    fix_crc(&mut b);
    assert_eq!(produce_code(&mut s, 2, &produce("t", -1, b)).await.0, 87);

    // A record whose header count claims 2^30 headers.
    let mut rec = vec![0u8, 0, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x08];
    let mut b = good[..HEADER_LEN].to_vec();
    b.push((rec.len() as u8) << 1);
    b.append(&mut rec);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut b);
    assert_eq!(produce_code(&mut s, 3, &produce("t", -1, b)).await.0, 87);

    // A snappy batch whose raw snappy length claims 4 GiB: refused without allocating it.
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    b[21..23].copy_from_slice(&2i16.to_be_bytes());
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut b);
    let (code, _, msg) = produce_code(&mut s, 4, &produce("t", -1, b)).await;
    assert_eq!(code, 87, "{msg:?}");

    // Over message.max.bytes: MESSAGE_TOO_LARGE (10).
    let big = vec![b'x'; 20_000];
    let b = encode_uncompressed(&[(None, Some(&big))], 1_000, ProducerFields::NONE);
    assert_eq!(produce_code(&mut s, 5, &produce("t", -1, b)).await.0, 10);

    // Truncated batch, and two batches where one belongs: INVALID_RECORD.
    let b = good[..good.len() - 3].to_vec();
    assert_eq!(produce_code(&mut s, 6, &produce("t", -1, b)).await.0, 87);
    let mut b = good.clone();
    b.extend_from_slice(&good);
    assert_eq!(produce_code(&mut s, 7, &produce("t", -1, b)).await.0, 87);
    // Garbage instead of a batch.
    assert_eq!(
        produce_code(&mut s, 8, &produce("t", -1, vec![1, 2, 3]))
            .await
            .0,
        87
    );

    // Invalid acks: INVALID_REQUIRED_ACKS (21).
    assert_eq!(
        produce_code(&mut s, 9, &produce("t", 5, good.clone()))
            .await
            .0,
        21
    );
    // Unknown topic: UNKNOWN_TOPIC_OR_PARTITION (3); produce does not auto-create.
    assert_eq!(
        produce_code(&mut s, 10, &produce("nope", -1, good.clone()))
            .await
            .0,
        3
    );

    // Nothing above was stored: the first good batch gets offset 0.
    let (code, offset, _) = produce_code(&mut s, 11, &produce("t", -1, good.clone())).await;
    assert_eq!((code, offset), (0, 0));

    // acks=0 with a bad batch: no response, the connection is closed (Kafka's behaviour).
    let mut b = good.clone();
    b[last] ^= 1;
    s.write_all(&encoded_frame(ApiKey::Produce, 8, 12, &produce("t", 0, b)))
        .await
        .unwrap();
    expect_closed(&mut s).await;
    assert_serving(addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let _watchdog = common::watchdog("pipelined_requests_are_answered_in_order");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path()).await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("t", 1, Default::default())
        .unwrap();
    let good = encode_uncompressed(&[(None, Some(b"v"))], 1_000, ProducerFields::NONE);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut all = Vec::new();
    for c in 0..20 {
        if c % 2 == 0 {
            all.extend(encoded_frame(
                ApiKey::Produce,
                8,
                c,
                &produce("t", -1, good.clone()),
            ));
        } else {
            all.extend(raw_frame(18, 0, c, &[]));
        }
    }
    s.write_all(&all).await.unwrap();
    for c in 0..20i32 {
        let r = read_response(&mut s).await.unwrap();
        assert_eq!(&r[..4], &c.to_be_bytes(), "response {c} in request order");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_a_bound_not_an_error() {
    let _watchdog = common::watchdog("max_connections_is_a_bound_not_an_error");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("max.connections", "2")]).await;
    let addr = server.kafka_addr();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    for (s, c) in [(&mut a, 1), (&mut b, 2)] {
        s.write_all(&raw_frame(18, 0, c, &[])).await.unwrap();
        assert!(read_response(s).await.is_some());
    }
    // A third client is closed at once while two are connected (not left hanging), and
    // counted ...
    for _ in 0..3 {
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(&raw_frame(18, 0, 3, &[])).await;
        expect_closed(&mut third).await;
    }
    let refused = server.services().metrics.connections_refused.get();
    assert_eq!(refused, 3);
    // ... and a new one is served once a slot frees up.
    drop(a);
    let deadline = std::time::Instant::now() + T;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&raw_frame(18, 0, 4, &[])).await;
        if read_response(&mut s).await.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never served after a slot freed up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_big_frames_do_not_block_others() {
    let _watchdog = common::watchdog("clients_trickling_big_frames_do_not_block_others");
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB pool for request bytes: one announced 100 MB frame used to take all of it.
    let server = common::start_with(dir.path(), &[("queued.max.request.bytes", "1048576")]).await;
    let addr = server.kafka_addr();
    server
        .store()
        .create_topic("trickle-others", 1, Default::default())
        .unwrap();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&100_000_000i32.to_be_bytes()).await.unwrap();
        s.write_all(&[0u8; 16]).await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other clients are served meanwhile: ApiVersions, and a produce of 300 KB.
    assert_serving(addr).await;
    let value = vec![7u8; 300_000];
    let batch = encode_uncompressed(&[(None, Some(&value[..]))], 1, ProducerFields::NONE);
    let mut other = TcpStream::connect(addr).await.unwrap();
    let (code, offset, _) = produce_code(&mut other, 9, &produce("trickle-others", 1, batch)).await;
    assert_eq!((code, offset), (0, 0));
    // The trickling connections are still open (they have sent little, and not for long).
    for s in &mut slow {
        s.write_all(&[0u8; 16]).await.unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed() {
    let _watchdog = common::watchdog("idle_and_half_sent_connections_are_closed");
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_with(dir.path(), &[("connections.max.idle.ms", "200")]).await;
    let addr = server.kafka_addr();
    // Announces a 1 MiB frame, sends 10 bytes, then nothing: closed, its buffer released.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&(1i32 << 20).to_be_bytes()).await.unwrap();
    slow.write_all(&[0u8; 10]).await.unwrap();
    expect_closed(&mut slow).await;
    // Never sends anything: closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut idle).await;
    assert_serving(addr).await;
    server.shutdown().await.unwrap();
}
