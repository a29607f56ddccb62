//! SASL on the wire, request by request (kafka-protocol's client-side encoders): nothing but
//! ApiVersions and the SASL APIs before authentication, bounded frames before it, a failed
//! authentication answered with SASL_AUTHENTICATION_FAILED before the connection closes, a
//! producer id usable only by the principal that obtained it, unknown users that look like wrong
//! passwords (SCRAM salts, PLAIN timing), and the per-address slow-down of failures.

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
use kafkabox::services::sasl::failure_message;
use kafkabox::services::users::{Credential, Mechanism, Scram, DEFAULT_ITERATIONS};
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
    let _watchdog = common::watchdog("sasl_gates_and_producer_ids_bound_to_principals");
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
    let _watchdog = common::watchdog("a_mechanism_not_enabled_is_refused");
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

/// SaslHandshake for `mechanism` on `c`, which must succeed.
async fn handshake(c: &mut Conn, mechanism: &'static str) {
    let hs: SaslHandshakeResponse = c
        .call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
        )
        .await;
    assert_eq!(hs.error_code, 0, "SaslHandshake {mechanism}");
}

/// One SaslAuthenticate step: (error code, error message, the server's bytes as text).
async fn sasl_step(c: &mut Conn, bytes: String) -> (i16, String, String) {
    let r: SaslAuthenticateResponse = c
        .call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
        )
        .await;
    (
        r.error_code,
        r.error_message.map(|m| m.to_string()).unwrap_or_default(),
        String::from_utf8_lossy(&r.auth_bytes).into_owned(),
    )
}

/// A SCRAM server-first message: (nonce, salt, iterations).
fn server_first(text: &str) -> (String, Vec<u8>, u32) {
    use base64::Engine as _;
    let (mut r, mut s, mut i) = (None, None, None);
    for attr in text.split(',') {
        match attr.split_once('=') {
            Some(("r", v)) => r = Some(v.to_string()),
            Some(("s", v)) => s = base64::engine::general_purpose::STANDARD.decode(v).ok(),
            Some(("i", v)) => i = v.parse().ok(),
            _ => {}
        }
    }
    match (r, s, i) {
        (Some(r), Some(s), Some(i)) => (r, s, i),
        _ => panic!("not a SCRAM server-first message: {text:?}"),
    }
}

/// A SCRAM-SHA-256 exchange as a client does it, with `password`, on a new connection:
/// (server-first message parsed, the final answer's error code and message).
async fn scram_sha256(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> ((String, Vec<u8>, u32), i16, String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = Conn::open(addr).await;
    handshake(&mut c, "SCRAM-SHA-256").await;
    let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let bare = format!("n={user},r={client_nonce}");
    let (code, message, first) = sasl_step(&mut c, format!("n,,{bare}")).await;
    assert_eq!(code, 0, "client-first of {user}: {message}");
    let (nonce, salt, iterations) = server_first(&first);
    assert!(nonce.starts_with(client_nonce), "{first}");
    let scram = Scram::Sha256;
    let salted = scram.salted_password(password.as_bytes(), &salt, iterations);
    let client_key = scram.hmac(&salted, &[b"Client Key"]);
    let stored_key = scram.hash(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{first},{without_proof}");
    let signature = scram.hmac(&stored_key, &[auth_message.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let (code, message, _) =
        sasl_step(&mut c, format!("{without_proof},p={}", b64.encode(proof))).await;
    ((nonce, salt, iterations), code, message)
}

/// Only the SCRAM-SHA-256 client-first message: the server-first answer, parsed.
async fn scram_sha256_first(addr: std::net::SocketAddr, user: &str) -> (String, Vec<u8>, u32) {
    let mut c = Conn::open(addr).await;
    handshake(&mut c, "SCRAM-SHA-256").await;
    let (code, message, first) = sasl_step(&mut c, format!("n,,n={user},r=abcdefgh")).await;
    assert_eq!(code, 0, "client-first of {user}: {message}");
    server_first(&first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_answers_unknown_users_like_known_ones() {
    let _watchdog = common::watchdog("scram_answers_unknown_users_like_known_ones");
    let limit = std::time::Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let settings = [("listeners", "SASL_PLAINTEXT://127.0.0.1:0")];
    let server = common::start_with(dir.path(), &settings).await;
    // alice has a SCRAM-SHA-256 credential; bob only a SCRAM-SHA-512 one.
    server
        .services()
        .users
        .apply(&[
            (
                "alice".to_string(),
                Mechanism::ScramSha256,
                Some(Credential::new(Scram::Sha256, "alice-pw", DEFAULT_ITERATIONS).unwrap()),
            ),
            (
                "bob".to_string(),
                Mechanism::ScramSha512,
                Some(Credential::new(Scram::Sha512, "bob-pw", DEFAULT_ITERATIONS).unwrap()),
            ),
        ])
        .unwrap();
    let addr = server.kafka_addr();

    // A wrong password of a known user: a server-first message, then the failure.
    let ((_, alice_salt, alice_i), code, wrong_password) = common::within(
        "alice, wrong password",
        limit,
        scram_sha256(addr, "alice", "nope"),
    )
    .await;
    assert_eq!(
        (code, alice_salt.len(), alice_i),
        (58, 32, DEFAULT_ITERATIONS)
    );
    assert_eq!(wrong_password, failure_message("SCRAM-SHA-256"));

    // An unknown user: the same kind of server-first message, and the same failure.
    let ((_, mallory_salt, mallory_i), code, unknown) =
        common::within("mallory", limit, scram_sha256(addr, "mallory", "guess")).await;
    assert_eq!(
        (code, mallory_salt.len(), mallory_i),
        (58, 32, DEFAULT_ITERATIONS)
    );
    assert_eq!(unknown, wrong_password);
    // A user without a credential of this mechanism is answered the same way.
    let ((_, bob_salt, bob_i), code, no_credential) =
        common::within("bob, SHA-256", limit, scram_sha256(addr, "bob", "bob-pw")).await;
    assert_eq!((code, bob_salt.len(), bob_i), (58, 32, DEFAULT_ITERATIONS));
    assert_eq!(no_credential, wrong_password);

    // The salt of an unknown name is the same on every attempt, and differs between names.
    let (_, again, _) =
        common::within("mallory again", limit, scram_sha256_first(addr, "mallory")).await;
    assert_eq!(again, mallory_salt);
    let (_, trudy_salt, _) =
        common::within("trudy", limit, scram_sha256_first(addr, "trudy")).await;
    assert_ne!(trudy_salt, mallory_salt);
    assert_ne!(mallory_salt, alice_salt);

    // ... and after a restart of the broker.
    server.shutdown().await.unwrap();
    let server = common::start_with(dir.path(), &settings).await;
    let addr = server.kafka_addr();
    let (_, after_restart, _) = common::within(
        "mallory after restart",
        limit,
        scram_sha256_first(addr, "mallory"),
    )
    .await;
    assert_eq!(after_restart, mallory_salt);
    let (_, bob_after, _) =
        common::within("bob after restart", limit, scram_sha256_first(addr, "bob")).await;
    assert_eq!(bob_after, bob_salt);

    // The client side above is right: alice's own password succeeds.
    let (_, code, message) =
        common::within("alice", limit, scram_sha256(addr, "alice", "alice-pw")).await;
    assert_eq!(code, 0, "{message}");
    server.shutdown().await.unwrap();
}

/// A PLAIN authentication on a new connection from `from`: the error code and how long the
/// SaslAuthenticate round trip took.
async fn plain_from(
    addr: std::net::SocketAddr,
    from: std::net::IpAddr,
    user: &str,
    password: &str,
) -> (i16, std::time::Duration) {
    let mut c = Conn::open_from(addr, from).await;
    handshake(&mut c, "PLAIN").await;
    let started = std::time::Instant::now();
    let (code, _, _) = sasl_step(&mut c, format!("\0{user}\0{password}")).await;
    (code, started.elapsed())
}

fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_takes_as_long_for_an_unknown_user_as_for_a_wrong_password() {
    let _watchdog =
        common::watchdog("plain_takes_as_long_for_an_unknown_user_as_for_a_wrong_password");
    let dir = tempfile::tempdir().unwrap();
    let server =
        common::start_with(dir.path(), &[("listeners", "SASL_PLAINTEXT://127.0.0.1:0")]).await;
    // As `kafkabox users add carol` makes it: SCRAM-SHA-512, the default iterations.
    server
        .services()
        .users
        .apply(&[(
            "carol".to_string(),
            Mechanism::ScramSha512,
            Some(Credential::new(Scram::Sha512, "carol-pw", DEFAULT_ITERATIONS).unwrap()),
        )])
        .unwrap();
    let addr = server.kafka_addr();
    // One loopback address per attempt, so the per-address slow-down delays none of them; the
    // two kinds alternate, so a change of load on the machine affects both alike.
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..15u8 {
        let (code, took) = common::within(
            "unknown user",
            std::time::Duration::from_secs(30),
            plain_from(addr, loopback(2 + 2 * i), "mallory", "guess"),
        )
        .await;
        assert_eq!(code, 58);
        unknown.push(took);
        let (code, took) = common::within(
            "wrong password",
            std::time::Duration::from_secs(30),
            plain_from(addr, loopback(3 + 2 * i), "carol", "guess"),
        )
        .await;
        assert_eq!(code, 58);
        wrong.push(took);
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    let ratio = unknown.as_secs_f64().max(wrong.as_secs_f64())
        / unknown.as_secs_f64().min(wrong.as_secs_f64()).max(1e-6);
    assert!(
        ratio < 3.0,
        "median PLAIN failure: unknown user {unknown:?}, wrong password {wrong:?}: the time tells them apart"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_slow_down_their_address_only() {
    let _watchdog = common::watchdog("repeated_failures_slow_down_their_address_only");
    let limit = std::time::Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let server =
        common::start_with(dir.path(), &[("listeners", "SASL_PLAINTEXT://127.0.0.1:0")]).await;
    server
        .services()
        .users
        .apply(&[(
            "dave".to_string(),
            Mechanism::ScramSha512,
            Some(Credential::new(Scram::Sha512, "dave-pw", 4096).unwrap()),
        )])
        .unwrap();
    let addr = server.kafka_addr();
    let (guesser, other) = (loopback(2), loopback(3));

    // Five failures in a row from one address (each waits longer than the last: 0.1 .. 0.8 s).
    for _ in 0..5 {
        let (code, _) =
            common::within("a guess", limit, plain_from(addr, guesser, "dave", "guess")).await;
        assert_eq!(code, 58);
    }

    // The sixth attempt from there (the right password, even) waits 1.6 s before it is checked.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sixth = tokio::spawn(async move {
        let mut c = Conn::open_from(addr, guesser).await;
        handshake(&mut c, "PLAIN").await;
        let _ = ready_tx.send(());
        let started = std::time::Instant::now();
        let (code, _, _) = sasl_step(&mut c, "\0dave\0dave-pw".to_string()).await;
        (code, started.elapsed())
    });
    common::within("the sixth attempt's handshake", limit, ready_rx)
        .await
        .expect("the sixth attempt reached SaslAuthenticate");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Meanwhile another address is answered at once, and its right password succeeds.
    let (code, took) = common::within(
        "another address",
        limit,
        plain_from(addr, other, "dave", "dave-pw"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        took < std::time::Duration::from_secs(1),
        "another address waited {took:?}"
    );
    assert!(
        !sixth.is_finished(),
        "the sixth attempt of the guessing address was not slowed"
    );

    let (code, took) = common::within("the sixth attempt", limit, sixth)
        .await
        .expect("the sixth attempt's task");
    assert_eq!(code, 0);
    assert!(
        took >= std::time::Duration::from_secs(1),
        "the sixth attempt took only {took:?}"
    );

    // The success forgot the address's failures: its next attempt is answered at once.
    let (code, took) = common::within(
        "after the success",
        limit,
        plain_from(addr, guesser, "dave", "dave-pw"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        took < std::time::Duration::from_secs(1),
        "after a success the address waited {took:?}"
    );
    server.shutdown().await.unwrap();
}
