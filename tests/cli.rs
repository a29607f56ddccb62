//! The `kafkabox serve` command line: settings from a TOML file, `KAFKABOX_*` variables and
//! flags reach the broker; bad settings fail with a clear message; SIGTERM exits 0.

mod common;

use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

#[test]
fn config_file_env_and_flags_reach_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kafkabox.toml");
    std::fs::write(
        &config,
        "num.partitions = 3\n\"message.max.bytes\" = 2000000\n",
    )
    .unwrap();
    // The environment wins over the file, flags win over both.
    let mut broker = common::BrokerProcess::spawn_env(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--advertised-listener",
            "127.0.0.1:1",
        ],
        &[
            ("KAFKABOX_NUM_PARTITIONS", "4"),
            ("KAFKABOX_UNRELATED_THING", "1"),
        ],
    );
    assert!(
        broker.log_text().contains("KAFKABOX_UNRELATED_THING"),
        "an unknown KAFKABOX_ variable is named in a warning: {}",
        broker.log_text()
    );
    let addr = broker.addr;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("allow.auto.create.topics", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some("auto-created"), Duration::from_secs(30))
        .unwrap();
    let t = &md.topics()[0];
    assert_eq!(
        t.partitions().len(),
        4,
        "KAFKABOX_NUM_PARTITIONS over the file's num.partitions"
    );
    let b = &md.brokers()[0];
    assert_eq!(
        (b.host(), b.port()),
        ("127.0.0.1", 1),
        "--advertised-listener"
    );
    assert_eq!(broker.terminate().code(), Some(0), "SIGTERM exits 0");
    assert!(broker.log_text().contains("shut down cleanly"));
}

#[test]
fn bad_settings_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--set", "num.partitons=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown setting 'num.partitons'") && err.contains("num.partitions"),
        "{err}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "auto.create.topics.enable = \"maybe\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auto.create.topics.enable: expected true or false, got 'maybe'"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d2"))
        .args(["--set", "customer.events.handlers=profile,webhook"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webhook but webhook.url is not set"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_chains_per_topic_from_the_config() {
    use rdkafka::producer::FutureRecord;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kafkabox.toml");
    std::fs::write(&config, "[handlers]\norders = [\"log\"]\n").unwrap();
    let mut broker = common::BrokerProcess::spawn(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let p = common::producer(broker.addr, &[("acks", "all")]);
    p.send(
        FutureRecord::to("orders").key("k1").payload("order-17"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !broker.log_text().contains("order-17") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = broker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("order-17"))
        .expect("the log handler printed the event");
    assert!(
        line.contains("topic=orders") && line.contains("offset=0"),
        "{line}"
    );
    assert_eq!(broker.terminate().code(), Some(0));
}

/// `kafkabox bench` runs end to end with every section small (no timing is asserted: the
/// figures are for people, the test shows the command and its flags work).
#[test]
fn bench_runs_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args([
            "bench",
            "--quiet",
            "--dir",
            dir.path().to_str().unwrap(),
            "--sizes",
            "100",
            "--acks",
            "1,all",
            "--bytes-per-run",
            "20000",
            "--latency-messages",
            "50",
            "--handler-events",
            "200",
            "--consume-bytes",
            "20480",
            "--rebalance-members",
            "2,3",
        ])
        .output()
        .expect("run kafkabox bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "produce   100 B acks=1",
        "produce   100 B acks=all",
        "produce-to-fetch p50 / p99",
        "consume, group of 1",
        "consume, group of 3",
        "rebalance,  2 members",
        "rebalance,  3 members",
        "handlers (contract + profile)",
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
    // It cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `serve` starts the HTTP listener of `http.listen` / `--http-listen`: /health and /metrics
/// answer over a real socket.
#[test]
fn serve_starts_the_http_listener() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NO_COLOR", "1")
        .env("KAFKABOX_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn kafkabox serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let http = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .find(|l| l.contains("HTTP listener ready"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        {
            break a;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("serve exited ({st}): {text}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no HTTP listener: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(http).expect("connect to the HTTP listener");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let health = get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("kafkabox_partition_log_end_offset{topic=\"customer-events\""),
        "{metrics}"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
}
