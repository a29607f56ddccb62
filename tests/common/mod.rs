//! Shared helpers for the end-to-end tests: a broker on 127.0.0.1:0 over a temporary data dir,
//! and librdkafka (rdkafka crate) producers and consumers pointed at it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafkabox::{Config, Server};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a broker on an OS-chosen port over `dir`.
pub async fn start(dir: &Path) -> Server {
    start_with(dir, &[]).await
}

pub async fn start_with(dir: &Path, settings: &[(&str, &str)]) -> Server {
    let mut c = Config::default();
    c.set("listen", "127.0.0.1:0").unwrap();
    c.data_dir = dir.to_path_buf();
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    Server::start(c).await.expect("broker starts")
}

pub fn producer(addr: std::net::SocketAddr, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string())
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// An admin client of the broker at `addr`.
pub fn admin(
    addr: std::net::SocketAddr,
) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .create()
        .expect("admin client")
}

/// Creates `name` with `partitions` partitions through the admin API; panics unless it
/// succeeds.
pub async fn create_topic(addr: std::net::SocketAddr, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let r = admin(addr)
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

/// Reads `count` messages of `topic`/`partition` from `from` with an assigned consumer (no
/// consumer group). Bounded by `timeout`; returns what it got.
pub fn consume(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("enable.auto.commit", "false")
        // librdkafka's assign needs a group id (nothing is committed).
        .set("group.id", "kafkabox-test-unused")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

/// Same as [`consume`], off the async runtime.
pub async fn consume_async(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> Vec<OwnedMessage> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        consume(
            addr,
            &topic,
            partition,
            from,
            count,
            Duration::from_secs(60),
        )
    })
    .await
    .expect("consumer task")
}

pub fn payload(m: &OwnedMessage) -> Option<&[u8]> {
    m.payload()
}

/// A `kafkabox serve` process (the real binary) on 127.0.0.1:0, its log in the data dir's
/// parent. Killed with SIGKILL on drop if still running.
pub struct BrokerProcess {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub log: std::path::PathBuf,
}

impl BrokerProcess {
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> BrokerProcess {
        BrokerProcess::spawn_env(data_dir, extra, &[])
    }

    /// Like [`BrokerProcess::spawn`], with extra environment variables for the child only.
    pub fn spawn_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        let log = data_dir.with_extension(format!("log.{}", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(["--set", "http.listen=127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env(
                "KAFKABOX_LOG",
                std::env::var("KB_TEST_BROKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn kafkabox");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("Kafka listener ready"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
                .and_then(|a| a.parse().ok())
            {
                return BrokerProcess { child, addr, log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kafkabox exited at start-up ({status}): {text}");
            }
            assert!(
                Instant::now() < deadline,
                "kafkabox did not start within 60 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }

    /// The HTTP listener's address, from the log (waits up to 30 s for it).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            if let Some(a) = text
                .lines()
                .find(|l| l.contains("HTTP listener ready"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.parse().ok())
            {
                return a;
            }
            assert!(Instant::now() < deadline, "no HTTP listener: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// The Python interpreter of the test virtualenv (created by scripts/test.sh). Missing is a
/// failure, not a skip.
pub fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("KB_TEST_PYTHON") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "no Python test environment at {}: run scripts/test.sh, which creates it with kafka-python and confluent-kafka",
        p.display()
    );
    p
}

/// The Python interpreter of the second test virtualenv, which holds quixstreams (its pins of
/// confluent-kafka differ from the main one's; scripts/test.sh creates it). Missing is a
/// failure, not a skip.
pub fn quix_python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("KB_TEST_QUIX_PYTHON") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-quix/bin/python");
    assert!(
        p.exists(),
        "no quixstreams test environment at {}: run scripts/test.sh, which creates it",
        p.display()
    );
    p
}

/// Runs a client script or command to its end and returns its stdout; a failure shows both
/// outputs. (Each script bounds its own waits; the test's watchdog bounds the rest.)
pub fn run(cmd: &mut std::process::Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON summary a client script prints as its last line.
pub fn last_json(out: &str) -> serde_json::Value {
    let line = out.lines().last().expect("a JSON summary line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Polls `done` every 20 ms until it holds; fails the test after 60 s.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of header `key` of a consumed message, as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    (0..h.count())
        .map(|j| h.get(j))
        .find(|x| x.key == key)
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// One connection speaking raw Kafka requests (kafka-protocol's client-side encoders), the
/// correlation id checked on every answer.
pub struct Conn {
    pub s: tokio::net::TcpStream,
    correlation: i32,
}

impl Conn {
    pub async fn open(addr: std::net::SocketAddr) -> Conn {
        Conn {
            s: tokio::net::TcpStream::connect(addr).await.unwrap(),
            correlation: 0,
        }
    }

    /// A connection from the local address `from` (e.g. 127.0.0.7: on Linux all of 127/8 is
    /// loopback), for tests where the broker tells clients apart by address.
    pub async fn open_from(addr: std::net::SocketAddr, from: std::net::IpAddr) -> Conn {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("binding {from} (all of 127/8 is loopback on Linux): {e}"));
        Conn {
            s: socket.connect(addr).await.unwrap(),
            correlation: 0,
        }
    }

    pub async fn call<Q: Encodable, R: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> R {
        self.try_call(key, version, req)
            .await
            .unwrap_or_else(|| panic!("{key:?} v{version}: no response"))
    }

    /// Sends a request and reads what comes back: `None` when the broker closed the connection
    /// instead of answering.
    pub async fn try_call<Q: Encodable, R: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> Option<R> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("producer-1")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        let s = &mut self.s;
        let body = within(
            &format!("{key:?} v{version}: an answer"),
            Duration::from_secs(120),
            async move {
                s.write_all(&frame).await.ok()?;
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.ok()?;
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).await.ok()?;
                Some(body)
            },
        )
        .await?;
        let mut body = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, R::header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        Some(R::decode(&mut body, version).unwrap())
    }
}

/// Sends one request on a new connection and decodes the answer at the same version (the
/// correlation id is checked).
pub async fn call<Q: Encodable, R: Decodable + HeaderVersion>(
    addr: std::net::SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Q,
) -> R {
    // Longer than any wait a request is meant to have (a rebalance, a long poll), so a broker
    // that never answers fails the test here, naming the request.
    within(
        &format!("{key:?} v{version} to {addr}"),
        Duration::from_secs(120),
        call_unbounded(addr, key, version, req),
    )
    .await
}

async fn call_unbounded<Q: Encodable, R: Decodable + HeaderVersion>(
    addr: std::net::SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Q,
) -> R {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
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

/// An HTTP answer: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a real socket (`Connection: close`), with an optional bearer
/// token and JSON body.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpAnswer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http_with(addr, method, path, &headers, body)
}

/// One HTTP/1.1 request over a real socket (`Connection: close`) with exactly `headers`, plus
/// `Host: <addr>` unless `headers` has a Host, and `Content-Length` when there is a body.
pub fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        s.write_all(b.as_bytes()).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An exec handler whose downstream is "down" while its flag file exists: it refuses every batch
/// (exit 65, "downstream is down") until the test removes the flag, then appends the events to
/// `out` as JSON lines. The command line goes to `--set exec.command=...`.
pub struct FlakyDownstream {
    pub flag: std::path::PathBuf,
    pub out: std::path::PathBuf,
    pub command: String,
}

impl FlakyDownstream {
    pub fn new(dir: &Path) -> FlakyDownstream {
        let flag = dir.join("downstream-down");
        let out = dir.join("handled.jsonl");
        std::fs::write(&flag, "").expect("flag file");
        let command = format!(
            "if [ -e '{}' ]; then echo downstream is down >&2; exit 65; fi; cat >> '{}'",
            flag.display(),
            out.display()
        );
        FlakyDownstream { flag, out, command }
    }
}

/// `kafkabox serve --ephemeral ...` with its ready line read from stdout.
pub struct Ephemeral {
    pub child: std::process::Child,
    pub ready: serde_json::Value,
    /// Its stderr (the log).
    pub log: tempfile::NamedTempFile,
}

impl Ephemeral {
    pub fn start(extra: &[&str]) -> Ephemeral {
        use std::io::BufRead;
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
            .args(["serve", "--ephemeral", "--listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn kafkabox serve --ephemeral");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a ready line within 60 s");
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        Ephemeral { child, ready, log }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn bootstrap(&self) -> String {
        self.ready["bootstrap"].as_str().unwrap().to_string()
    }

    pub fn http(&self) -> String {
        self.ready["http"].as_str().unwrap().to_string()
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to `child` and wait for it (at most 30 s, else the test fails).
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "kafkabox did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long one test may run before its watchdog fails it.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

/// A per-test watchdog: a test that has not finished within [`TEST_LIMIT`] (a wait that never
/// ends: a client's close, a process that does not exit) is reported by name, with the last
/// step it announced, and its test binary exits with a failure. A hang then costs minutes, not
/// CI's whole budget. Dropped (the test finished or panicked) it stands down.
pub struct Watchdog {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    step: std::sync::Arc<std::sync::Mutex<String>>,
}

pub fn watchdog(test: &'static str) -> Watchdog {
    watchdog_for(test, TEST_LIMIT)
}

pub fn watchdog_for(test: &'static str, limit: Duration) -> Watchdog {
    use std::sync::atomic::Ordering;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let step = std::sync::Arc::new(std::sync::Mutex::new(String::from("starting")));
    let (d, s) = (done.clone(), step.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while !d.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                let at = s.lock().map(|s| s.clone()).unwrap_or_default();
                eprintln!(
                    "WATCHDOG: test {test} still running after {} s (last step: {at}); \
                     failing the test binary",
                    limit.as_secs()
                );
                std::process::exit(101);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    Watchdog { done, step }
}

impl Watchdog {
    /// Names what the test does now, for the report if it hangs there.
    pub fn step(&self, what: &str) {
        if let Ok(mut s) = self.step.lock() {
            *s = what.to_string();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Awaits `fut` at most `limit`; fails the test naming `what` if it does not finish.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {} s: {what}", limit.as_secs()),
    }
}

/// OffsetCommit v8 of `offset` on partition 0 of topic `t`, from `member` (with its static
/// `instance`) at `generation`: the partition's error code. Raw, so tests can send what a
/// stale or removed member would.
pub async fn commit_t0(
    addr: std::net::SocketAddr,
    group: &str,
    member: &str,
    instance: Option<&str>,
    generation: i32,
    offset: i64,
) -> i16 {
    use kafka_protocol::messages::{
        offset_commit_request, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName,
    };
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let r: OffsetCommitResponse = call(addr, ApiKey::OffsetCommit, 8, &req).await;
    r.topics[0].partitions[0].error_code
}

/// The group's committed offset on partition 0 of topic `t` (-1: none), by OffsetFetch v7.
pub async fn committed_t0(addr: std::net::SocketAddr, group: &str) -> i64 {
    use kafka_protocol::messages::{
        offset_fetch_request, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName,
    };
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let r: OffsetFetchResponse = call(addr, ApiKey::OffsetFetch, 7, &req).await;
    assert_eq!(r.error_code, 0);
    r.topics[0].partitions[0].committed_offset
}

/// What the browser tests drive: `tests/js` (with playwright-core from `npm ci`) and the
/// chromium binary (`KB_CHROMIUM`, default Debian's). A missing one fails the test with the
/// step of scripts/test.sh that installs it.
pub fn browser() -> (std::path::PathBuf, String) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in tests/js: run scripts/test.sh (npm ci)"
    );
    let chromium = std::env::var("KB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/test.sh installs Debian's chromium"
    );
    (js, chromium)
}
