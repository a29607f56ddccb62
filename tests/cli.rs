//! The `kafkabox serve` command line: settings from a TOML file, `KAFKABOX_*` variables and
//! flags reach the broker; bad settings fail with a clear message; SIGTERM exits 0.

mod common;

use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

#[test]
fn config_file_env_and_flags_reach_the_broker() {
    let _watchdog = common::watchdog("config_file_env_and_flags_reach_the_broker");
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
    let _watchdog = common::watchdog("bad_settings_fail_with_a_clear_message");
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
    let _watchdog = common::watchdog("handler_chains_per_topic_from_the_config");
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
    let _watchdog = common::watchdog("bench_runs_every_section");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("bench.json");
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
            "--startups",
            "3",
            "--forward-records",
            "3000",
            "--handle-events",
            "2000",
            "--txn-records",
            "1000",
            "--json",
            json_path.to_str().unwrap(),
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
        "produce-to-handled p50 / p99 / p99.9",
        "space on disk",
        "start after kill -9",
        "start-up, kafkabox serve --ephemeral",
        "start-up in-process, Appliance::builder().ephemeral()",
        "edge forwarding (serve --upstream)",
        "kafkabox handle, at_least_once",
        "kafkabox handle, exactly_once_v2",
        "produce 1 KiB idempotent",
        "produce 1 KiB 100 per transaction",
        "produce 1 KiB 1 per transaction",
        "transactions of 100:",
        "read of transactional data: read_committed",
        "broker RSS",
        "peak RSS",
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
    // The same results as JSON.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("bench.json")).unwrap();
    assert_eq!(report["produce"].as_array().unwrap().len(), 2, "{report}");
    assert!(
        report["produce"][1]["fraction_of_durable_bound"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["handlers"]["events_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["handlers"]["latency_ms"]["p999"].as_f64().is_some());
    assert!(report["space"]["ratio"].as_f64().unwrap() > 0.0);
    assert!(report["rss_peak_bytes"].as_u64().unwrap() > 0);
    assert!(report["broker_rss_bytes"]["peak"].as_u64().unwrap() > 0);
    assert_eq!(report["consume"].as_array().unwrap().len(), 2);
    assert!(report["rebalance_ms_by_members"]["3"].as_f64().is_some());
    assert!(report["transactions"]["txn100_mib_s"].as_f64().unwrap() > 0.0);
    assert!(
        report["handle_exactly_once"]["events_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        report["transactions"]["read_committed_mib_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    for k in [
        "process_ready_p50",
        "process_first_answer_max",
        "in_process_p50",
    ] {
        assert!(
            report["startup_ms"][k].as_f64().unwrap() > 0.0,
            "{k}: {report}"
        );
    }
    // It cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Ends a child process if a failing test leaves it running.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The address a `serve` log line announces (`<what> ... addr=HOST:PORT`).
fn announced(log: &std::path::Path, what: &str) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .map(|a| a.trim_matches(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')))
        .and_then(|a| a.parse().ok())
}

/// A GET over a real socket: (status line, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.lines().next().unwrap_or_default().to_string();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `serve` starts the HTTP listener of `http.listen` / `--http-listen`: /health, /ready,
/// /metrics and the JSON endpoints answer over a real socket about events a real producer sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_the_http_listener() {
    let _watchdog = common::watchdog("serve_starts_the_http_listener");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_kafkabox"))
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
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kafkabox serve"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (kafka, http) = loop {
        if let (Some(k), Some(h)) = (
            announced(&log, "Kafka listener ready"),
            announced(&log, "HTTP listener ready"),
        ) {
            break (k, h);
        }
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!(
                "serve exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(std::time::Instant::now() < deadline, "no HTTP listener");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) = http_get(http, "/health");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // A loopback listener gets no warning about being open to the network.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("accepts anyone"), "{text}");
    let (status, body) = http_get(http, "/ready");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");

    // Three valid events from a real producer and one that breaks the contract.
    let p = common::producer(kafka, &[]);
    for (i, v) in [10.0, 20.0, 12.5].iter().enumerate() {
        let event = format!(
            r#"{{"customer_id":"c-http","event_type":"recharge","timestamp":"2024-01-15T10:3{i}:00Z","source":"web","value":{v}}}"#
        );
        p.send(
            rdkafka::producer::FutureRecord::<(), _>::to("customer-events").payload(&event),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
    p.send(
        rdkafka::producer::FutureRecord::<(), _>::to("customer-events").payload("not json"),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
    // The stages catch up: the profile stage's group has no lag left.
    common::wait_until("the profile stage to catch up", || {
        let (_, body) = http_get(http, "/api/groups");
        let groups: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        groups.as_array().is_some_and(|gs| {
            gs.iter().any(|g| {
                g["group_id"] == "kafkabox.profile"
                    && g["offsets"].as_array().is_some_and(|o| {
                        o.iter()
                            .any(|p| p["topic"] == "customer-events" && p["lag"] == 0)
                    })
            })
        })
    })
    .await;
    let (_, body) = http_get(http, "/api/sources");
    let sources: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sources["web"]["valid"], 3, "{sources}");
    let (status, body) = http_get(http, "/api/customers/c-http");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("recharge"), "{body}");
    let (_, body) = http_get(http, "/api/topics");
    let topics: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ce = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "customer-events")
        .expect("customer-events listed");
    assert_eq!(ce["partitions"][0]["log_end_offset"], 4);
    let (_, body) = http_get(http, "/api/topics/customer-events.dlq");
    let dlq: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dlq["partitions"][0]["log_end_offset"], 1, "{dlq}");
    assert_eq!(dlq["configs"]["retention.ms"], "604800000");
    let (status, body) = http_get(http, "/api/topics/no-such-topic");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert!(body.contains("no topic"), "{body}");
    let (status, _) = http_get(http, "/api/customers/nobody");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, body) = http_get(http, "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        body.contains("kafkabox_log_end_offset{topic=\"customer-events\""),
        "{body}"
    );
    drop(p);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    assert!(child.0.wait().unwrap().success());
}

/// Logs: plain text without colour codes when stderr is not a terminal (even without
/// NO_COLOR), and one JSON object a line with `--log-format json`.
#[test]
fn logs_are_plain_in_files_and_json_on_request() {
    let _watchdog = common::watchdog("logs_are_plain_in_files_and_json_on_request");
    for json in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let mut child = Reap(
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--http-listen", ""])
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .env_remove("NO_COLOR")
                .env("KAFKABOX_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn kafkabox serve"),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Kafka listener ready") {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            !text.contains('\u{1b}'),
            "colour codes in a log file: {text}"
        );
        if json {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v["fields"]["message"].is_string(), "{line}");
            }
            assert!(text.lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["fields"]["message"] == "Kafka listener ready" && v["fields"]["addr"].is_string()
            }));
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.0.id().to_string())
            .status();
        assert!(child.0.wait().unwrap().success());
    }
}
