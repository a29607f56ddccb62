//! A stage that cannot go on never looks healthy: the topics a stage writes cannot be deleted
//! while it runs (Kafka clients, the CLI and the HTTP API are refused, naming the stage); one
//! removed behind its back is created again and the stage goes on; a stage that retries
//! without progress turns `/ready` to 503 after `stage.stall.timeout.ms` with the stage and its
//! error, shows in `/api/groups` and `/metrics`, is logged once (then once a minute), and is
//! ready again once it recovers; a worker that died (a panicking handler) makes `/ready` say
//! which stage and why.

mod common;

use std::io::BufRead;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

const VALID: &str = r#"{"source":"crm","customer_id":"42","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":1.5}"#;
const INVALID: &str =
    r#"{"source":"crm","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":1.5}"#;

async fn produce(addr: std::net::SocketAddr, topic: &str, value: &str) {
    let p = common::producer(addr, &[("acks", "all")]);
    common::within(
        "a produce",
        Duration::from_secs(60),
        p.send(
            FutureRecord::<(), _>::to(topic).payload(value),
            Duration::from_secs(30),
        ),
    )
    .await
    .expect("acknowledged");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ready(http: std::net::SocketAddr) -> common::HttpAnswer {
    common::http(http, "GET", "/ready", None, None)
}

/// The records of `topic` up to its end, by the kafkabox binary's own consumer.
fn consume_all(bootstrap: &str, topic: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["consume", topic, "-b", bootstrap])
        .output()
        .expect("kafkabox consume");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_in_use_cannot_be_deleted() {
    let _watchdog = common::watchdog("a_dead_letter_topic_in_use_cannot_be_deleted");
    let dir = tempfile::tempdir().unwrap();
    let broker = common::BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let bootstrap = broker.addr.to_string();
    let http = broker.http_addr();

    // The CLI (librdkafka's admin client): refused, non-zero, the stage named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["topics", "delete", "customer-events.dlq", "-b", &bootstrap])
        .output()
        .expect("kafkabox topics delete");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("contract stage") && stderr.contains("PolicyViolation"),
        "{stderr}"
    );

    // kafka-python's admin client: POLICY_VIOLATION with the message.
    let script = format!(
        r#"
from kafka.admin import KafkaAdminClient
from kafka.errors import PolicyViolationError
a = KafkaAdminClient(bootstrap_servers="{bootstrap}", request_timeout_ms=20000)
try:
    a.delete_topics(["customer-events.dlq"], timeout_ms=20000)
    print("DELETED")
except PolicyViolationError as e:
    print("REFUSED", e)
a.close()
"#
    );
    let out = std::process::Command::new(common::python())
        .args(["-c", &script])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("REFUSED"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The HTTP API: 403 with the reason.
    let a = common::http(
        http,
        "DELETE",
        "/api/topics/customer-events.dlq",
        None,
        None,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("contract stage"), "{}", a.body);

    // The stage goes on: an invalid event is dead-lettered, a valid one reaches its profile.
    produce(broker.addr, "customer-events", INVALID).await;
    produce(broker.addr, "customer-events", VALID).await;
    common::wait_until("the invalid event in customer-events.dlq", || {
        consume_all(&bootstrap, "customer-events.dlq").contains("recharge")
    })
    .await;
    common::wait_until("the valid event's profile", || {
        common::http(http, "GET", "/api/customers/42", None, None).status == 200
    })
    .await;
    assert_eq!(ready(http).status, 200);

    // Other topics are deleted as before.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["topics", "create", "scratch", "-b", &bootstrap])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["topics", "delete", "scratch", "-b", &bootstrap])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_without_progress_is_not_ready_until_it_recovers() {
    let _watchdog = common::watchdog("a_stage_without_progress_is_not_ready_until_it_recovers");
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there yet: the webhook target is down.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/events");
    let broker = common::BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "customer.events.handlers=profile,webhook",
            "--set",
            &format!("webhook.url={url}"),
            "--set",
            "stage.stall.timeout.ms=1500",
        ],
    );
    let http = broker.http_addr();
    assert_eq!(ready(http).status, 200, "{}", ready(http).body);

    produce(broker.addr, "customer-events", VALID).await;
    common::wait_until("/ready to answer 503", || ready(http).status == 503).await;
    let r = ready(http).json();
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("stage webhook")
            && reason.contains("customer-events/0")
            && reason.contains("no progress"),
        "{r}"
    );

    // /api/groups: the stage's group names the problem.
    let groups = common::http(http, "GET", "/api/groups", None, None).json();
    let webhook = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "kafkabox.webhook")
        .unwrap_or_else(|| panic!("{groups}"));
    let problem = &webhook["problems"][0];
    assert_eq!(problem["state"], "retrying", "{webhook}");
    assert_eq!(problem["topic"], "customer-events");
    assert!(problem["since_ms"].as_i64().unwrap() > 0, "{problem}");
    assert!(problem["attempts"].as_u64().unwrap() >= 1, "{problem}");
    assert!(
        problem["error"].as_str().unwrap().contains("webhook"),
        "{problem}"
    );
    let profile = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "kafkabox.profile")
        .unwrap();
    assert_eq!(profile["problems"], serde_json::json!([]), "{profile}");

    // /metrics: the errors counted, the state shown.
    let metrics = common::http(http, "GET", "/metrics", None, None).body;
    let errors: u64 = metrics
        .lines()
        .find(|l| l.starts_with("kafkabox_stage_errors_total{stage=\"webhook\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(errors >= 1, "{errors}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kafkabox_stage_state{")
                && l.contains("stage=\"webhook\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    // The log says it once (then once a minute), not at every retry.
    let log = broker.log_text();
    assert_eq!(log.matches("stage failed; retrying").count(), 1, "{log}");

    // The target comes up: the stage recovers and the box is ready again.
    let posts = dir.path().join("posts.jsonl");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/webhook_server.py"
    );
    let mut server = std::process::Command::new(common::python())
        .args([script, &port.to_string(), "", posts.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python webhook server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    common::wait_until("/ready to answer 200 again", || ready(http).status == 200).await;
    let posted = std::fs::read_to_string(&posts).unwrap();
    assert!(posted.contains("recharge"), "{posted}");
    assert!(broker.log_text().contains("stage recovered"));
    let _ = server.kill();
    let _ = server.wait();
}

/// A handler that panics on its first batch.
struct Panics;

#[async_trait::async_trait]
impl kafkabox::pipeline::Handler for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    async fn handle(
        &self,
        _events: &[kafkabox::pipeline::Event],
    ) -> Result<(), kafkabox::pipeline::HandlerError> {
        panic!("the handler's own bug");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_died_is_reported_and_a_lost_dead_letter_topic_comes_back() {
    let _watchdog =
        common::watchdog("a_worker_that_died_is_reported_and_a_lost_dead_letter_topic_comes_back");
    let dir = tempfile::tempdir().unwrap();
    let app = kafkabox::Appliance::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0")
        .http("127.0.0.1:0")
        .handler("orders", Panics)
        .start()
        .await
        .unwrap();
    let http = app.http_addr().unwrap();
    assert_eq!(ready(http).status, 200);

    // The dead-letter topic of customer-events removed behind the stage's back (as by hand):
    // created again, and the next invalid event lands there.
    app.store().delete_topic("customer-events.dlq").unwrap();
    common::wait_until("customer-events.dlq to be created again", || {
        app.store().topic("customer-events.dlq").is_some()
    })
    .await;
    produce(app.kafka_addr(), "customer-events", INVALID).await;
    common::wait_until("the invalid event in the new dead-letter topic", || {
        app.store()
            .topic("customer-events.dlq")
            .and_then(|t| t.partitions.first().cloned())
            .is_some_and(|p| app.store().offsets(&p).log_end == 1)
    })
    .await;
    assert_eq!(ready(http).status, 200, "{}", ready(http).body);

    // A handler that panics: its worker dies, /ready says which and why at once.
    produce(app.kafka_addr(), "orders", "{}").await;
    common::wait_until("/ready to answer 503", || ready(http).status == 503).await;
    let r = ready(http).json();
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("stage panics stopped on orders/0")
            && reason.contains("the handler's own bug"),
        "{r}"
    );
    common::within("shutdown", Duration::from_secs(60), app.shutdown())
        .await
        .unwrap();
}
