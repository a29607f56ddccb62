//! Kafka transactions through the real `kafkabox serve` binary and real clients:
//! confluent-kafka (tests/python/transactions.py: commit, abort, the last stable offset,
//! consume-transform-produce, fencing, timeouts), kafkajs (tests/js/kafkajs_transactions.js),
//! kafka-python and aiokafka (tests/python/py_transactions.py), a quixstreams exactly-once
//! application (tests/python/quix_exactly_once.py), librdkafka through rdkafka (the in-box
//! stages and the edge forwarder never see an aborted event; all or nothing across kill -9;
//! lag against the last stable offset; compaction; AddPartitionsToTxn v4-5).

mod common;

use std::path::Path;
use std::process::Command;

use common::BrokerProcess;
use common::{last_json, run};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn confluent_kafka_transactions() {
    let _watchdog = common::watchdog("confluent_kafka_transactions");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
        ],
    );
    let out = run(
        Command::new(common::python())
            .arg(root().join("tests/python/transactions.py"))
            .arg(broker.addr.to_string()),
        "transactions.py",
    );
    let s = last_json(&out);
    assert_eq!(s["committed"], 6, "{s}");
    assert_eq!(s["uncommitted"], 9, "{s}");
    assert_eq!(s["held_at_lso"], true, "{s}");
    assert_eq!(s["consume_transform_produce"], 6, "{s}");
    assert_eq!(s["fenced"], "_FENCED", "{s}");
    assert!(s["timeout_abort_s"].as_f64().unwrap() < 30.0, "{s}");
}

#[test]
fn kafkajs_transactions_with_send_offsets() {
    let _watchdog = common::watchdog("kafkajs_transactions_with_send_offsets");
    let js = root().join("tests/js");
    assert!(
        js.join("node_modules/kafkajs").exists(),
        "kafkajs is not installed in tests/js: run scripts/test.sh (npm ci)"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let out = run(
        Command::new("node")
            .current_dir(&js)
            .arg("kafkajs_transactions.js")
            .arg(broker.addr.to_string()),
        "kafkajs_transactions.js",
    );
    let s = last_json(&out);
    assert_eq!(s["committed"], serde_json::json!(["c1", "c2", "c3"]), "{s}");
    assert_eq!(
        s["group_offset"], 2,
        "the aborted sendOffsets did not move the group: {s}"
    );
    assert_eq!(s["high"], 7, "three transactions, three markers: {s}");
}

#[test]
fn kafka_python_and_aiokafka_transactions() {
    let _watchdog = common::watchdog("kafka_python_and_aiokafka_transactions");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let out = run(
        Command::new(common::python())
            .arg(root().join("tests/python/py_transactions.py"))
            .arg(broker.addr.to_string()),
        "py_transactions.py",
    );
    let s = last_json(&out);
    assert_eq!(s["kafka_python"], serde_json::json!(["c1", "c2"]), "{s}");
    assert_eq!(s["committed"], serde_json::json!(["c1", "c2", "c3"]), "{s}");
    assert_eq!(s["uncommitted"], 4, "{s}");
}

#[test]
fn quixstreams_exactly_once_counts_and_restores() {
    let _watchdog = common::watchdog("quixstreams_exactly_once_counts_and_restores");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let out = run(
        Command::new(common::quix_python())
            .arg(root().join("tests/python/quix_exactly_once.py"))
            .arg(broker.addr.to_string())
            .arg(dir.path().join("quix-state")),
        "quix_exactly_once.py",
    );
    let s = last_json(&out);
    assert_eq!(s["first_run"], 30, "{s}");
    assert_eq!(s["second_run"], 60, "{s}");
    assert_eq!(s["restored"], true, "{s}");
}

const VALID_42: &str = r#"{"source":"crm","customer_id":"42","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":1.5}"#;
const VALID_43: &str = r#"{"source":"crm","customer_id":"43","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":2.5}"#;
const INVALID: &str =
    r#"{"source":"crm","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z","value":1.5}"#;

/// A transactional librdkafka producer, its transactions initialised.
fn txn_producer(
    addr: std::net::SocketAddr,
    id: &str,
    timeout_ms: u32,
) -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::Producer;
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.min(20_000).to_string())
        .create()
        .expect("transactional producer");
    p.init_transactions(std::time::Duration::from_secs(30))
        .expect("init_transactions");
    p
}

fn send(p: &rdkafka::producer::BaseProducer, topic: &str, value: &str) {
    use rdkafka::producer::{BaseRecord, Producer};
    p.send(BaseRecord::<(), _>::to(topic).payload(value).partition(0))
        .map_err(|(e, _)| e)
        .expect("queued");
    p.flush(std::time::Duration::from_secs(20))
        .expect("flushed");
}

/// The values of `topic` partition 0 as the kafkabox binary's consumer prints them.
fn consume_cli(bootstrap: &str, topic: &str, isolation: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
    cmd.args(["consume", topic, "-p", "0", "-b", bootstrap]);
    if let Some(i) = isolation {
        cmd.args(["--isolation", i]);
    }
    run(&mut cmd, "kafkabox consume")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_box_never_sees_an_aborted_event() {
    use rdkafka::producer::Producer;
    let watchdog = common::watchdog("the_box_never_sees_an_aborted_event");
    let dir = tempfile::tempdir().unwrap();
    // A second kafkabox stands in for the central cluster the box forwards to.
    let cluster = BrokerProcess::spawn(
        &dir.path().join("cluster"),
        &[
            "--set",
            "customer.events.contract=false",
            "--set",
            "customer.events.handlers=",
        ],
    );
    let upstream = cluster.addr.to_string();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--upstream",
            &upstream,
            "--set",
            "upstream.topics=customer-events",
        ],
    );
    let http = broker.http_addr();
    let bootstrap = broker.addr.to_string();
    let topic = "customer-events";

    watchdog.step("an aborted transaction of a valid and an invalid event");
    let p = txn_producer(broker.addr, "box-txn", 60_000);
    p.begin_transaction().unwrap();
    send(&p, topic, VALID_42);
    send(&p, topic, INVALID);
    p.abort_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    watchdog.step("a committed transaction of another valid event");
    p.begin_transaction().unwrap();
    send(&p, topic, VALID_43);
    p.commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();

    watchdog.step("the committed event reaches its profile");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::http(http, "GET", "/api/customers/43", None, None).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the committed event never reached a profile"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The stages are past the marker: nothing of the aborted transaction reached anything.
    let a = common::http(http, "GET", "/api/customers/42", None, None);
    assert_eq!(a.status, 404, "an aborted event made a profile: {}", a.body);
    let dlq = common::http(http, "GET", "/api/dlq", None, None).json();
    assert_eq!(
        dlq["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "an aborted invalid event was dead-lettered: {dlq}"
    );
    let browse = common::http(
        http,
        "GET",
        "/api/topics/customer-events/records?partition=0&offset=0",
        None,
        None,
    )
    .json();
    let shown: Vec<&Value> = browse["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["value"]["customer_id"])
        .collect();
    assert_eq!(shown, vec!["43"], "{browse}");

    watchdog.step("the forwarder sent the committed event only");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = common::http(http, "GET", "/api/forward", None, None).json();
        if status["lag"] == 0 && status["records"].as_u64() == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forwarder did not catch up: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Read uncommitted upstream: nothing of the aborted transaction reached it at all.
    assert_eq!(
        consume_cli(&upstream, topic, None),
        vec![VALID_43.to_string()]
    );

    watchdog.step("kafkabox consume, both isolation levels");
    assert_eq!(
        consume_cli(&bootstrap, topic, Some("read_committed")),
        vec![VALID_43.to_string()]
    );
    assert_eq!(
        consume_cli(&bootstrap, topic, None),
        vec![
            VALID_42.to_string(),
            INVALID.to_string(),
            VALID_43.to_string()
        ],
        "read_uncommitted (the default) shows every record"
    );

    watchdog.step("/api/transactions and /metrics");
    let txns = common::http(http, "GET", "/api/transactions", None, None).json();
    assert_eq!(
        txns["transactions"][0]["transactional_id"], "box-txn",
        "{txns}"
    );
    assert_eq!(txns["transactions"][0]["state"], "CompleteCommit", "{txns}");
    let metrics = common::http(http, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("kafkabox_transactions_committed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kafkabox_transactions_aborted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kafkabox_transactions_open 0"),
        "{metrics}"
    );
}

#[test]
fn transactions_are_all_or_nothing_across_kill_9() {
    use rdkafka::producer::Producer;
    let watchdog = common::watchdog("transactions_are_all_or_nothing_across_kill_9");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
    ];
    let mut broker = BrokerProcess::spawn(&data, &args);
    let topic = "k9";
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_kafkabox")).args([
            "topics",
            "create",
            topic,
            "-b",
            &broker.addr.to_string(),
        ]),
        "topics create",
    );
    drop(out);

    watchdog.step("an open transaction, a committed one, a plain record; then kill -9");
    let open = txn_producer(broker.addr, "k9-open", 3_000);
    open.begin_transaction().unwrap();
    for v in ["open-1", "open-2", "open-3"] {
        send(&open, topic, v);
    }
    let done = txn_producer(broker.addr, "k9-done", 60_000);
    done.begin_transaction().unwrap();
    send(&done, topic, "done-1");
    send(&done, topic, "done-2");
    done.commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    let plain = common::producer(broker.addr, &[("acks", "all")]);
    drop(plain);
    broker.kill9();
    drop(open);
    drop(done);

    watchdog.step("after the restart: read_committed sees the committed transaction only");
    let broker = BrokerProcess::spawn(&data, &args);
    let bootstrap = broker.addr.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let seen = consume_cli(&bootstrap, topic, Some("read_committed"));
        if seen == ["done-1", "done-2"] {
            break;
        }
        assert!(
            seen.iter().all(|v| v.starts_with("done")),
            "an open transaction's records were shown to read_committed: {seen:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the open transaction was not aborted after its timeout: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(
        consume_cli(&bootstrap, topic, None).len(),
        5,
        "nothing acknowledged is lost"
    );

    watchdog.step("the ids work again: a new instance of k9-done commits");
    let again = txn_producer(broker.addr, "k9-done", 60_000);
    again.begin_transaction().unwrap();
    send(&again, topic, "done-3");
    again
        .commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        consume_cli(&bootstrap, topic, Some("read_committed")),
        vec!["done-1", "done-2", "done-3"]
    );
}

#[test]
fn transaction_settings_through_serve() {
    use rdkafka::producer::Producer;
    let watchdog = common::watchdog("transaction_settings_through_serve");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "transaction.max.timeout.ms=5000",
            "--set",
            "transactional.id.expiration.ms=1000",
            "--set",
            "transaction.remove.expired.transaction.cleanup.interval.ms=300",
        ],
    );
    watchdog.step("a timeout above transaction.max.timeout.ms is refused");
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .set("transactional.id", "too-long")
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let e = p
        .init_transactions(std::time::Duration::from_secs(30))
        .expect_err("INVALID_TRANSACTION_TIMEOUT");
    assert!(
        format!("{e}").contains("Transaction timeout is larger than the maximum"),
        "{e}"
    );
    drop(p);

    watchdog.step("an idle transactional id expires after transactional.id.expiration.ms");
    let ok = txn_producer(broker.addr, "short-lived", 3_000);
    ok.begin_transaction().unwrap();
    send(&ok, "expiring", "v");
    ok.commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    drop(ok);
    let http = broker.http_addr();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = common::http(http, "GET", "/api/transactions", None, None).json();
        let ids: Vec<&str> = t["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["transactional_id"].as_str())
            .collect();
        if !ids.contains(&"short-lived") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle transactional id was never removed: {t}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Polls `c` until it has `n` records (at most 30 s), then commits them.
fn read_and_commit(c: &rdkafka::consumer::BaseConsumer, n: usize, what: &str) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut got = 0;
    while got < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {got} of {n} records"
        );
        if let Some(m) = c.poll(std::time::Duration::from_millis(200)) {
            m.expect("consumed");
            got += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
}

/// The group `id` of `/api/groups`.
fn api_group(http: std::net::SocketAddr, id: &str) -> Value {
    let all = common::http(http, "GET", "/api/groups", None, None).json();
    all.as_array()
        .and_then(|a| a.iter().find(|g| g["group_id"] == id).cloned())
        .unwrap_or_else(|| panic!("no group {id}: {all}"))
}

#[test]
fn lag_is_against_the_last_stable_offset_for_read_committed_groups() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::Producer;
    let watchdog =
        common::watchdog("lag_is_against_the_last_stable_offset_for_read_committed_groups");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let http = broker.http_addr();
    let bootstrap = broker.addr.to_string();
    let topic = "customer-events";

    watchdog.step("three committed events, then a transaction of two left open");
    let plain: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    for v in [VALID_42, VALID_43, VALID_42] {
        send(&plain, topic, v);
    }
    let p = txn_producer(broker.addr, "lag-txn", 60_000);
    p.begin_transaction().unwrap();
    send(&p, topic, VALID_43);
    send(&p, topic, VALID_43);

    watchdog.step("a read_committed and a read_uncommitted group read what they can");
    let group = |id: &str, isolation: &str| -> BaseConsumer {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", id)
            .set("client.id", id)
            .set("isolation.level", isolation)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        c.assign(&tpl).unwrap();
        c
    };
    let rc = group("rc", "read_committed");
    read_and_commit(&rc, 3, "read_committed");
    let ru = group("ru", "read_uncommitted");
    read_and_commit(&ru, 5, "read_uncommitted");

    watchdog.step("/api/groups: lag against the last stable offset for the read_committed group");
    let g = api_group(http, "rc");
    assert_eq!(g["isolation"], "read_committed", "{g}");
    assert_eq!(g["lag"], 0, "{g}");
    let o = &g["offsets"][0];
    assert_eq!(
        (
            &o["committed_offset"],
            &o["last_stable_offset"],
            &o["log_end_offset"]
        ),
        (&Value::from(3), &Value::from(3), &Value::from(5)),
        "{g}"
    );
    let g = api_group(http, "ru");
    assert_eq!(
        (&g["isolation"], &g["lag"]),
        (&Value::from("read_uncommitted"), &Value::from(0)),
        "{g}"
    );
    // The stages read committed events only: the open transaction is not behind them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let g = api_group(http, "kafkabox.profile");
        if g["lag"] == 0 && g["offsets"][0]["committed_offset"] == 3 {
            assert_eq!(g["isolation"], "read_committed", "{g}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the profile stage: {g}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let metrics = common::http(http, "GET", "/metrics", None, None).body;
    let stage_lag: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kafkabox_handler_lag{") && l.contains("customer-events"))
        .collect();
    assert!(
        !stage_lag.is_empty() && stage_lag.iter().all(|l| l.ends_with(" 0")),
        "{stage_lag:?}"
    );

    watchdog.step("kafkabox groups describe: by --isolation, stages read_committed");
    let describe = |args: &[&str]| -> Value {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
        cmd.args(["groups", "describe"])
            .args(args)
            .args(["--json", "-b", &bootstrap]);
        last_json(&run(&mut cmd, "kafkabox groups describe"))
    };
    let d = describe(&["rc"]);
    assert_eq!(
        (&d["isolation"], &d["lag"]),
        (&Value::from("read_uncommitted"), &Value::from(2)),
        "{d}"
    );
    assert_eq!(d["offsets"][0]["last_stable_offset"], 3, "{d}");
    let d = describe(&["rc", "--isolation", "read_committed"]);
    assert_eq!(
        (&d["isolation"], &d["lag"]),
        (&Value::from("read_committed"), &Value::from(0)),
        "{d}"
    );
    let d = describe(&["kafkabox.profile"]);
    assert_eq!(
        (&d["isolation"], &d["lag"]),
        (&Value::from("read_committed"), &Value::from(0)),
        "{d}"
    );

    watchdog.step("the commit makes the transaction's records the read_committed group's lag");
    p.commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    let g = api_group(http, "rc");
    // Two records and the marker (Kafka's lag counts offsets).
    assert_eq!(g["lag"], 3, "{g}");
    drop((rc, ru));
}

/// `records_removed` summed over the broker log's compaction lines of `topic`.
fn compacted_away(log: &str, topic: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("compacted") && l.contains(&format!("topic={topic}")))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("records_removed="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn compaction_removes_aborted_records_then_the_abort_marker() {
    use rdkafka::producer::Producer;
    let watchdog = common::watchdog("compaction_removes_aborted_records_then_the_abort_marker");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &["--set", "log.retention.check.interval.ms=100"],
    );
    let bootstrap = broker.addr.to_string();
    run(
        Command::new(env!("CARGO_BIN_EXE_kafkabox")).args([
            "topics",
            "create",
            "ledger",
            "-p",
            "1",
            "-c",
            "cleanup.policy=compact",
            "-c",
            "segment.bytes=300",
            "-c",
            "delete.retention.ms=0",
            "-b",
            &bootstrap,
        ]),
        "kafkabox topics create",
    );

    watchdog.step("an aborted transaction, a committed one, then records that roll the segments");
    // A compacted topic takes keyed records only (Kafka's rule).
    let keyed = |p: &rdkafka::producer::BaseProducer, key: &str, value: &str| {
        use rdkafka::producer::BaseRecord;
        p.send(
            BaseRecord::to("ledger")
                .key(key)
                .payload(value)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
        p.flush(std::time::Duration::from_secs(20))
            .expect("flushed");
    };
    let p = txn_producer(broker.addr, "ledger-txn", 60_000);
    p.begin_transaction().unwrap();
    keyed(&p, "a", "a1");
    keyed(&p, "b", "a2");
    p.abort_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    p.begin_transaction().unwrap();
    keyed(&p, "c", "c1");
    p.commit_transaction(std::time::Duration::from_secs(30))
        .unwrap();
    let plain: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    for i in 0..10 {
        keyed(&plain, &format!("f{i}"), &format!("f{i}"));
    }

    watchdog.step("compaction: a read_uncommitted consumer no longer sees the aborted records");
    let want: Vec<String> = std::iter::once("c1".to_string())
        .chain((0..10).map(|i| format!("f{i}")))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = consume_cli(&bootstrap, "ledger", Some("read_uncommitted"));
        // The two aborted records, then the ABORT marker (nothing of its transaction left,
        // delete.retention.ms=0); the COMMIT marker stays with c1.
        if got == want && compacted_away(&broker.log_text(), "ledger") == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "read {got:?}, compacted away {}: {}",
            compacted_away(&broker.log_text(), "ledger"),
            broker.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // read_committed reads the same.
    assert_eq!(
        consume_cli(&bootstrap, "ledger", Some("read_committed")),
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_to_txn_batched_and_verify_only() {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest,
        EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let _watchdog = common::watchdog("add_partitions_to_txn_batched_and_verify_only");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    common::create_topic(broker.addr, "kip890", 2).await;
    let mut c = common::Conn::open(broker.addr).await;
    let id = || TransactionalId(StrBytes::from_static_str("t890"));
    let init: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(id()))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    let topic = |partitions: Vec<i32>| {
        vec![AddPartitionsToTxnTopic::default()
            .with_name(kafka_protocol::messages::TopicName(
                StrBytes::from_static_str("kip890"),
            ))
            .with_partitions(partitions)]
    };
    // The client's form (v3) adds partition 0.
    let r: AddPartitionsToTxnResponse = c
        .call(
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id())
                .with_v3_and_below_producer_id(pid)
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(topic(vec![0])),
        )
        .await;
    assert_eq!(
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    // The batched form (v4, v5): verify_only says which are in the transaction.
    let batched = |verify_only: bool, epoch: i16, partitions: Vec<i32>| {
        AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(id())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_verify_only(verify_only)
                .with_topics(topic(partitions)),
        ])
    };
    let codes = |r: &AddPartitionsToTxnResponse| -> Vec<(i32, i16)> {
        assert_eq!(r.error_code, 0, "{r:?}");
        assert_eq!(r.results_by_transaction[0].transactional_id, id());
        r.results_by_transaction[0].topic_results[0]
            .results_by_partition
            .iter()
            .map(|p| (p.partition_index, p.partition_error_code))
            .collect()
    };
    for version in [4, 5] {
        let r: AddPartitionsToTxnResponse = c
            .call(
                ApiKey::AddPartitionsToTxn,
                version,
                &batched(true, epoch, vec![0, 1]),
            )
            .await;
        // TRANSACTION_ABORTABLE (120) for the partition that is not in it.
        assert_eq!(codes(&r), vec![(0, 0), (1, 120)], "v{version}");
    }
    let r: AddPartitionsToTxnResponse = c
        .call(
            ApiKey::AddPartitionsToTxn,
            5,
            &batched(false, epoch, vec![1]),
        )
        .await;
    assert_eq!(codes(&r), vec![(1, 0)]);
    let r: AddPartitionsToTxnResponse = c
        .call(
            ApiKey::AddPartitionsToTxn,
            5,
            &batched(true, epoch, vec![0, 1]),
        )
        .await;
    assert_eq!(codes(&r), vec![(0, 0), (1, 0)]);
    // An older epoch is fenced (PRODUCER_FENCED, 90).
    let r: AddPartitionsToTxnResponse = c
        .call(
            ApiKey::AddPartitionsToTxn,
            5,
            &batched(true, epoch - 1, vec![0]),
        )
        .await;
    assert_eq!(codes(&r), vec![(0, 90)]);
    let end: EndTxnResponse = c
        .call(
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(id())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_committed(false),
        )
        .await;
    assert_eq!(end.error_code, 0);
}
