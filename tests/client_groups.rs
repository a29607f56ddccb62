//! Consumer groups and the admin API through the other real clients, against the real
//! `kafkabox serve` binary: kafka-python and confluent-kafka (tests/python/groups_admin.py),
//! kafkajs from npm (tests/js, installed by scripts/test.sh) and kcat's balanced consumer.

mod common;

use std::path::Path;
use std::process::Command;

use common::BrokerProcess;
use common::{last_json, run};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn python_clients_groups_and_admin() {
    let _watchdog = common::watchdog("python_clients_groups_and_admin");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let out = run(
        Command::new(common::python())
            .arg(root().join("tests/python/groups_admin.py"))
            .arg(broker.addr.to_string()),
        "groups_admin.py",
    );
    let s = last_json(&out);
    assert_eq!(s["kafka_python_offsets_for_times"], 5, "{s}");
    assert_eq!(s["kafka_python_group"], 10, "{s}");
    assert_eq!(s["confluent_group"], 30, "{s}");
    assert_eq!(s["compacted_null_key"], "INVALID_RECORD", "{s}");
    assert_eq!(s["unknown_config"], "INVALID_CONFIG", "{s}");
    assert_eq!(s["log_append_time"], "broker", "{s}");
    assert!(s["confluent_close_s"].as_f64().unwrap() < 5.0, "{s}");
}

#[test]
fn kafkajs_producer_consumer_group_and_admin() {
    let _watchdog = common::watchdog("kafkajs_producer_consumer_group_and_admin");
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
            .arg("kafkajs_roundtrip.js")
            .arg(broker.addr.to_string()),
        "kafkajs_roundtrip.js",
    );
    let s = last_json(&out);
    assert_eq!(s["partitions"], 3, "{s}");
    assert_eq!(
        s["split"],
        serde_json::json!([1, 2]),
        "two members share three partitions: {s}"
    );
    assert_eq!(s["consumed"], 60, "{s}");
    assert_eq!(s["values"], 60, "{s}");
    assert_eq!(s["committed"], 60, "{s}");
    assert_eq!(s["state"], "Empty", "{s}");
    assert_eq!(s["reset"], "0", "{s}");
    assert_eq!(s["low1"], true, "{s}");
    assert_eq!(s["partitionsAfter"], 4, "{s}");
    assert_eq!(s["retention"], "604800000", "{s}");
    assert_eq!(s["topicsAfter"], false, "{s}");
    assert!(
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "js-group"),
        "{s}"
    );
}

#[test]
fn kcat_balanced_consumer_reads_and_resumes() {
    let _watchdog = common::watchdog("kcat_balanced_consumer_reads_and_resumes");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr.to_string();
    let input: String = (0..25).map(|i| format!("line-{i}\n")).collect();
    let mut produce = Command::new("kcat")
        .args(["-P", "-b", &addr, "-t", "kcat-group"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat -P");
    use std::io::Write;
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());
    // -G: a balanced consumer in group kg; -e exits at the end of the partitions.
    let consume = |what: &str| {
        run(
            Command::new("timeout").args([
                "60",
                "kcat",
                "-b",
                &addr,
                "-G",
                "kg",
                "-e",
                "-q",
                "-X",
                "auto.offset.reset=earliest",
                "-X",
                "enable.auto.commit=true",
                "-X",
                "auto.commit.interval.ms=100",
                "kcat-group",
            ]),
            what,
        )
    };
    let first = consume("kcat -G");
    assert_eq!(first.lines().count(), 25, "{first}");
    assert_eq!(first.lines().next(), Some("line-0"));
    // The group committed its position: a second run of the group starts at the end.
    let second = consume("kcat -G again");
    assert_eq!(second.lines().count(), 0, "{second}");
}
