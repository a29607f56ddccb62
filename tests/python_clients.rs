//! The integration guide's own Python example (kafka-python 3, verbatim) and confluent-kafka
//! and kcat against the real `kafkabox serve` process; every field read back and compared.

mod common;

use std::path::Path;
use std::process::Command;

use common::BrokerProcess;
use serde_json::Value;

const GUIDE_PLACEHOLDER: &str = "kafka-broker.yourcompany.com:9092";

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run_python(args: &[&str]) -> String {
    let out = Command::new(common::python())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Reads `count` records with a client; returns the JSON objects it printed.
fn read_back(client: &str, addr: &str, topic: &str, count: usize) -> Vec<Value> {
    let clients = script("clients.py");
    let out = run_python(&[
        clients.to_str().unwrap(),
        client,
        addr,
        topic,
        &count.to_string(),
    ]);
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        recs.len(),
        count,
        "{client} read {} of {count}: {out}",
        recs.len()
    );
    recs
}

/// The guide's events as read back, checked field by field.
fn check_guide_events(recs: &[Value]) {
    let expected = [
        (
            "data_usage",
            500.0,
            serde_json::json!({"network_type": "4G", "location": "city_name"}),
        ),
        (
            "recharge",
            50.0,
            serde_json::json!({"payment_method": "credit_card"}),
        ),
    ];
    assert_eq!(recs.len(), expected.len());
    for (i, (rec, (event_type, value, metadata))) in recs.iter().zip(expected.iter()).enumerate() {
        assert_eq!(rec["offset"], i as i64);
        let ev: Value = serde_json::from_str(rec["value"].as_str().expect("value text"))
            .expect("event is JSON");
        assert_eq!(ev["source"], "in");
        assert_eq!(ev["source_name"], "IN System");
        assert_eq!(ev["customer_id"], "1234567890");
        assert_eq!(ev["event_type"], *event_type);
        assert_eq!(ev["value"].as_f64(), Some(*value));
        assert_eq!(ev["metadata"], *metadata);
        // Python isoformat() + 'Z': 2026-01-15T10:30:00.123456Z
        let ts = ev["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.len() == 27
                && ts.ends_with('Z')
                && ts.as_bytes()[10] == b'T'
                && ts.as_bytes()[19] == b'.',
            "timestamp {ts}"
        );
        assert_eq!(
            ev.as_object().unwrap().len(),
            7,
            "no field lost or added: {ev}"
        );
    }
}

#[test]
fn guide_python_example_verbatim_with_kafka_python() {
    let _watchdog = common::watchdog("guide_python_example_verbatim_with_kafka_python");
    // The copy under tests/ must stay the guide's code, character for character.
    let copy = std::fs::read_to_string(script("guide_example.py")).unwrap();
    let guide_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/docs/integration-guide.md");
    if let Ok(guide) = std::fs::read_to_string(&guide_path) {
        let start = guide.find("```python\n").expect("python block") + "```python\n".len();
        let end = start + guide[start..].find("```").expect("block end");
        assert!(
            copy.ends_with(&guide[start..end]),
            "tests/python/guide_example.py differs from the guide"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr.to_string();
    assert!(copy.contains(GUIDE_PLACEHOLDER));
    let code = copy.replace(GUIDE_PLACEHOLDER, &addr);
    run_python(&["-c", &code]);

    let with_kafka_python = read_back("kafka-python-read", &addr, "customer-events", 2);
    check_guide_events(&with_kafka_python);
    let with_confluent = read_back("confluent-read", &addr, "customer-events", 2);
    assert_eq!(
        with_kafka_python, with_confluent,
        "both clients read the same bytes"
    );
    // kafka-python 3 is idempotent by default: its InitProducerId was answered.
    assert!(
        !broker.log_text().contains("ERROR"),
        "{}",
        broker.log_text()
    );
}

#[test]
fn same_events_through_confluent_kafka_default_and_idempotent() {
    let _watchdog = common::watchdog("same_events_through_confluent_kafka_default_and_idempotent");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr.to_string();
    let clients = script("clients.py");
    for (topic, idempotent) in [
        ("customer-events", "false"),
        ("customer-events-idem", "true"),
    ] {
        let out = run_python(&[
            clients.to_str().unwrap(),
            "confluent-produce",
            &addr,
            topic,
            idempotent,
        ]);
        assert_eq!(out.trim(), "[0, 1]", "offsets from the produce responses");
        let recs = read_back("kafka-python-read", &addr, topic, 2);
        check_guide_events(&recs);
        assert!(recs.iter().all(|r| r["key"] == "1234567890"), "key kept");
        assert_eq!(recs, read_back("confluent-read", &addr, topic, 2));
    }
}

fn kcat(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat must be installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kcat_on_librdkafka_2_0_produces_and_consumes() {
    let _watchdog = common::watchdog("kcat_on_librdkafka_2_0_produces_and_consumes");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.addr.to_string();
    let lines: String = (0..100).map(|i| format!("key{i}:value {i}\n")).collect();
    kcat(&["-P", "-b", &addr, "-t", "kc", "-K:"], &lines);
    kcat(
        &[
            "-P",
            "-b",
            &addr,
            "-t",
            "kc",
            "-K:",
            "-X",
            "enable.idempotence=true",
        ],
        "k100:last\n",
    );
    let out = kcat(
        &[
            "-C",
            "-b",
            &addr,
            "-t",
            "kc",
            "-e",
            "-q",
            "-f",
            "%o|%k|%s\\n",
        ],
        "",
    );
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 101, "{out}");
    for (i, line) in got.iter().take(100).enumerate() {
        assert_eq!(*line, format!("{i}|key{i}|value {i}"));
    }
    assert_eq!(got[100], "100|k100|last");
    // Consuming from an offset in the middle.
    let out = kcat(
        &[
            "-C", "-b", &addr, "-t", "kc", "-o", "50", "-c", "2", "-q", "-f", "%o|%s\\n",
        ],
        "",
    );
    assert_eq!(out, "50|value 50\n51|value 51\n");
}

#[test]
fn kafka_python_compressed_batches_are_stored_as_sent_and_decode() {
    let _watchdog =
        common::watchdog("kafka_python_compressed_batches_are_stored_as_sent_and_decode");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &[]);
    let addr = broker.addr.to_string();
    let clients = script("clients.py");
    let codecs = [("gzip", 1i16), ("snappy", 2), ("lz4", 3), ("zstd", 4)];
    let want: Vec<String> = (0..50)
        .map(|i| format!("value-{i} {}", "x".repeat(50)))
        .collect();
    for (codec, _) in codecs {
        let topic = format!("kp-{codec}");
        let out = run_python(&[
            clients.to_str().unwrap(),
            "kafka-python-produce",
            &addr,
            &topic,
            codec,
            "50",
        ]);
        let offsets: Vec<i64> = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(offsets, (0..50).collect::<Vec<i64>>(), "{codec}");
        let recs = read_back("confluent-read", &addr, &topic, 50);
        let values: Vec<&str> = recs.iter().map(|r| r["value"].as_str().unwrap()).collect();
        assert_eq!(values, want, "{codec}: read back by confluent-kafka");
    }
    assert_eq!(broker.terminate().code(), Some(0));
    // The stored batches carry kafka-python's codec (snappy in xerial framing) and decode.
    let store = kafkabox_storage::Store::open(kafkabox_storage::StoreConfig::new(&data)).unwrap();
    for (codec, bits) in codecs {
        let t = store.topic(&format!("kp-{codec}")).unwrap();
        let mut buf = bytes::BytesMut::new();
        store
            .read(&t.partitions[0], 0, 1 << 24, true, &mut buf)
            .unwrap()
            .unwrap();
        let mut values = Vec::new();
        for b in kafkabox_protocol::batch::split_batches(&buf) {
            let (h, bytes) = b.unwrap();
            assert_eq!(
                h.attributes & 7,
                bits,
                "{codec}: stored as kafka-python sent it"
            );
            if codec == "snappy" {
                assert_eq!(
                    &bytes[61..69],
                    b"\x82SNAPPY\x00",
                    "kafka-python frames snappy the xerial way"
                );
            }
            let (_, recs) = kafkabox_protocol::batch::decode_batch(bytes, 1 << 24).unwrap();
            values.extend(
                recs.into_iter()
                    .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
            );
        }
        assert_eq!(values, want, "{codec}: decode_batch");
    }
    store.close().unwrap();
}
