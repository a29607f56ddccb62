//! kafkabox in integration tests: the embedding builder's `.ephemeral()` with rdkafka through
//! injected faults (the Rust API), the real binary's `serve --ephemeral` ready line and
//! `--ready-file`, `kafkabox faults`, `kafkabox dump` / `load`, `--emulate-kafka` on the wire,
//! faults refused where they must be, and the Node helper (clients/node) with kafkajs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafkabox::appliance::FaultRequest;
use rdkafka::producer::FutureRecord;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kafkabox")
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kafkabox");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

use common::Ephemeral;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_ephemeral_with_faults_exactly_once() {
    let _watchdog = common::watchdog("builder_ephemeral_with_faults_exactly_once");
    let app = kafkabox::Appliance::builder()
        .ephemeral()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let dir = app.data_dir().to_path_buf();
    assert!(app.is_ephemeral() && dir.is_dir());
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("kafkabox-ephemeral-{}-", std::process::id())));
    let faults = app.faults();
    faults
        .add(FaultRequest::error("Produce", "NOT_LEADER_OR_FOLLOWER").count(2))
        .unwrap();
    faults
        .add(FaultRequest::error("Produce", "REQUEST_TIMED_OUT").count(2))
        .unwrap();
    faults
        .add(FaultRequest::disconnect("Produce").count(2))
        .unwrap();
    assert_eq!(faults.list().len(), 3);
    let e = faults
        .add(FaultRequest::error("Produce", "NOPE"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown error 'NOPE'"), "{e}");

    let addr: std::net::SocketAddr = app.bootstrap().parse().unwrap();
    let p = common::producer(
        addr,
        &[("enable.idempotence", "true"), ("retry.backoff.ms", "20")],
    );
    let mut acks = Vec::new();
    for i in 0..200 {
        let v = format!("m{i:04}");
        let f = p
            .send_result(
                FutureRecord::<(), _>::to("rust-faults")
                    .payload(&v)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        acks.push(f);
    }
    let mut offsets = Vec::new();
    for f in acks {
        offsets.push(f.await.unwrap().unwrap().offset);
    }
    offsets.sort();
    assert_eq!(offsets, (0..200).collect::<Vec<i64>>());
    let got = common::consume_async(addr, "rust-faults", 0, 0, 200).await;
    let values: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(common::payload(m).unwrap()).into_owned())
        .collect();
    assert_eq!(
        values,
        (0..200).map(|i| format!("m{i:04}")).collect::<Vec<_>>(),
        "no record lost, duplicated or reordered"
    );
    assert!(faults.list().is_empty(), "{:?}", faults.list());
    // A stall holds answers until cleared.
    let stall = faults.add(FaultRequest::stall("Produce")).unwrap();
    let f = p
        .send_result(
            FutureRecord::<(), _>::to("rust-faults")
                .payload("held")
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    tokio::pin!(f);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut f)
            .await
            .is_err(),
        "answered while stalled"
    );
    assert!(faults.remove(stall.id));
    assert_eq!(f.await.unwrap().unwrap().offset, 200);
    drop(p);
    app.shutdown().await.unwrap();
    assert!(
        !dir.exists(),
        "the ephemeral data dir is removed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_need_an_ephemeral_dir_or_allow_faults() {
    let _watchdog = common::watchdog("faults_need_an_ephemeral_dir_or_allow_faults");
    let dir = tempfile::tempdir().unwrap();
    let app = kafkabox::Appliance::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let e = app
        .faults()
        .add(FaultRequest::latency("Fetch", 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--allow-faults"), "{e}");
    app.shutdown().await.unwrap();
    assert!(dir.path().join("meta").exists() || std::fs::read_dir(dir.path()).unwrap().count() > 0);
    let app = kafkabox::Appliance::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0")
        .set("faults.allow", "true")
        .start()
        .await
        .unwrap();
    app.faults()
        .add(FaultRequest::latency("Fetch", 10))
        .unwrap();
    assert_eq!(app.faults().clear(), 1);
    app.shutdown().await.unwrap();
    assert!(dir.path().exists(), "a kept data dir stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_ephemeral_ready_file_faults_cli_and_dump_load() {
    let _watchdog = common::watchdog("serve_ephemeral_ready_file_faults_cli_and_dump_load");
    let scratch = tempfile::tempdir().unwrap();
    let ready_file = scratch.path().join("ready.json");
    let mut box1 = Ephemeral::start(&[
        "--ready-file",
        ready_file.to_str().unwrap(),
        "--set",
        "num.partitions=2",
    ]);
    let ready = &box1.ready;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["ephemeral"], true);
    assert_eq!(ready["faults"], true);
    assert_eq!(ready["pid"], box1.child.id());
    assert_eq!(
        ready["listeners"]["PLAINTEXT"]["address"], ready["bootstrap"],
        "{ready}"
    );
    // The ready file holds the same line.
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready_file).unwrap()).unwrap();
    assert_eq!(&from_file, ready);
    let data_dir = std::path::PathBuf::from(ready["data_dir"].as_str().unwrap());
    assert!(data_dir.is_dir());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o700,
            "the ephemeral data dir is {mode:o}, docs/testing.md says 0700"
        );
    }
    let (b, h) = (box1.bootstrap(), box1.http());

    // kafkabox faults add / list / clear.
    let (ok, out, err) = run(
        &[
            "faults",
            "add",
            "--api",
            "Produce",
            "--error",
            "NOT_LEADER_OR_FOLLOWER",
            "--count",
            "2",
            "--http",
            &h,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("api=Produce error=NOT_LEADER_OR_FOLLOWER count=2"),
        "{out}"
    );
    let (ok, _, err) = run(
        &[
            "faults",
            "add",
            "--api",
            "Fetch",
            "--latency-ms",
            "5",
            "--probability",
            "0.5",
            "--http",
            &h,
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "faults",
            "add",
            "--refuse-connections-ms",
            "1",
            "--http",
            &h,
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "faults", "add", "--api", "Produce", "--stall", "--count", "1", "--http", &h,
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(
        &[
            "faults",
            "add",
            "--api",
            "Metadata",
            "--disconnect",
            "--probability",
            "0.01",
            "--http",
            &h,
        ],
        None,
    );
    assert!(
        ok && out.contains("api=Metadata disconnect=true"),
        "{out} {err}"
    );
    let (ok, out, _) = run(&["faults", "list", "--json", "--http", &h], None);
    assert!(ok);
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        listed
            .iter()
            .any(|f| f["latency_ms"] == 5 && f["probability"] == 0.5),
        "{out}"
    );
    let stall_id = listed.iter().find(|f| f["stall"] == true).unwrap()["id"]
        .as_u64()
        .unwrap();
    let (ok, _, err) = run(
        &["faults", "clear", &stall_id.to_string(), "--http", &h],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["faults", "add", "--api", "Produce", "--http", &h], None);
    assert!(!ok && err.contains("exactly one"), "{err}");
    // An idempotent producer (kafkabox produce) goes through the two errors.
    let (ok, _, err) = run(
        &["produce", "seeded", "-K", "\t", "-b", &b],
        Some(b"a\tone\nb\ttwo\nc\tthree\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["faults", "list", "--http", &h], None);
    assert!(
        ok && !out.contains("NOT_LEADER_OR_FOLLOWER"),
        "ran out: {out}"
    );
    let (ok, _, err) = run(&["faults", "clear", "--http", &h], None);
    assert!(ok && err.contains("faults cleared"), "{err}");

    // dump, then load into another box: the same records, byte for byte.
    let (ok, dump, err) = run(&["dump", "seeded", "-b", &b], None);
    assert!(ok, "{err}");
    assert_eq!(dump.lines().count(), 3, "{dump}");
    let mut extra = dump.clone();
    extra.push_str(r#"{"partition":1,"timestamp":1700000000000,"key":null,"value":"/wA=","value_encoding":"base64","headers":[{"key":"h","value":"v"}]}"#);
    extra.push('\n');
    let mut box2 = Ephemeral::start(&["--set", "num.partitions=2"]);
    let b2 = box2.bootstrap();
    let (ok, _, err) = run(
        &["topics", "create", "seeded", "--partitions", "2", "-b", &b2],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["load", "seeded", "-b", &b2], Some(extra.as_bytes()));
    assert!(ok && err.contains("4 records loaded into seeded"), "{err}");
    let (ok, dump2, err) = run(&["dump", "seeded", "-b", &b2], None);
    assert!(ok, "{err}");
    let mut a: Vec<&str> = extra.lines().take(3).collect();
    let mut c: Vec<&str> = dump2.lines().filter(|l| !l.contains("/wA=")).collect();
    a.sort();
    c.sort();
    assert_eq!(
        a, c,
        "the same partitions, offsets, timestamps, keys and values"
    );
    let binary = dump2
        .lines()
        .find(|l| l.contains("/wA="))
        .expect("the binary record");
    let v: serde_json::Value = serde_json::from_str(binary).unwrap();
    assert_eq!(v["timestamp"], 1_700_000_000_000i64);
    assert_eq!(v["partition"], 1);
    assert_eq!(v["key"], serde_json::Value::Null);
    assert_eq!(v["value_encoding"], "base64");
    assert_eq!(v["headers"][0]["value"], "v");
    // dump -p: one partition; consume --format dump: the same lines.
    let (ok, p1, err) = run(&["dump", "seeded", "-p", "1", "-b", &b2], None);
    assert!(ok, "{err}");
    assert!(
        p1.lines().all(|l| l.contains("\"partition\":1")) && p1.contains("/wA="),
        "{p1}"
    );
    let (ok, same, err) = run(&["consume", "seeded", "--format", "dump", "-b", &b2], None);
    assert!(ok, "{err}");
    let (mut x, mut y): (Vec<&str>, Vec<&str>) = (same.lines().collect(), dump2.lines().collect());
    x.sort();
    y.sort();
    assert_eq!(x, y);
    // load --partition N puts everything there; --now replaces the timestamps.
    let (ok, _, err) = run(
        &["topics", "create", "one", "--partitions", "2", "-b", &b2],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &["load", "one", "--partition", "1", "--now", "-b", &b2],
        Some(extra.as_bytes()),
    );
    assert!(ok, "{err}");
    let (ok, d, _) = run(&["dump", "one", "-b", &b2], None);
    assert!(ok);
    let lines: Vec<serde_json::Value> = d
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["partition"] == 1), "{d}");
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].as_i64().unwrap() > 1_700_000_000_000 + 86_400_000),
        "{d}"
    );
    // --by-key: the lines' partitions are ignored (a partition the topic lacks is no error).
    let (ok, _, err) = run(
        &["load", "seeded", "--by-key", "-b", &b2],
        Some(b"{\"partition\":7,\"key\":\"k\",\"value\":\"x\"}\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &["load", "seeded", "-b", &b2],
        Some(b"{\"partition\":7,\"value\":\"x\"}\n"),
    );
    assert!(
        !ok && err.contains("partition 7, but seeded has 2 partitions: load with --by-key"),
        "{err}"
    );
    let (ok, _, err) = run(&["load", "seeded", "-b", &b2], Some(b"not json\n"));
    assert!(!ok && err.contains("line 1: not JSON"), "{err}");
    assert!(box2.terminate().success());

    // SIGTERM: the data dir and the ready file go.
    assert!(box1.terminate().success());
    assert!(!data_dir.exists());
    assert!(!ready_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_release_on_the_wire() {
    let _watchdog = common::watchdog("emulated_release_on_the_wire");
    let mut full = Ephemeral::start(&[]);
    let addr: std::net::SocketAddr = full.bootstrap().parse().unwrap();
    let all: ApiVersionsResponse = common::call(
        addr,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name("t".into())
            .with_client_software_version("1".into()),
    )
    .await;
    let range = |r: &ApiVersionsResponse, k: ApiKey| {
        r.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    assert_eq!(range(&all, ApiKey::Produce), Some((3, 12)));
    assert!(range(&all, ApiKey::ConsumerGroupHeartbeat).is_some());
    assert!(full.terminate().success());

    let mut old = Ephemeral::start(&["--emulate-kafka", "2.8"]);
    assert_eq!(old.ready["emulate_kafka"], "2.8");
    let addr: std::net::SocketAddr = old.bootstrap().parse().unwrap();
    let r: ApiVersionsResponse = common::call(
        addr,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name("t".into())
            .with_client_software_version("1".into()),
    )
    .await;
    assert_eq!(range(&r, ApiKey::Produce), Some((3, 9)));
    assert_eq!(range(&r, ApiKey::Metadata), Some((0, 11)));
    assert_eq!(range(&r, ApiKey::ConsumerGroupHeartbeat), None);
    // A version Kafka 2.8 does not have is refused as 2.8 would: the connection closes.
    let mut c = common::Conn::open(addr).await;
    let answer: Option<kafka_protocol::messages::MetadataResponse> = c
        .try_call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(
        answer.is_none(),
        "Metadata v12 answered while emulating 2.8"
    );
    let mut c = common::Conn::open(addr).await;
    let ok: kafka_protocol::messages::MetadataResponse = c
        .call(ApiKey::Metadata, 11, &MetadataRequest::default())
        .await;
    assert_eq!(ok.brokers.len(), 1);
    assert!(old.terminate().success());

    let (ok, _, err) = run(
        &[
            "serve",
            "--ephemeral",
            "--emulate-kafka",
            "9.9",
            "--listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert!(
        !ok && err.contains("no API version table for Kafka 9.9; known releases: 1.0"),
        "{err}"
    );
}

#[test]
fn node_helper_with_kafkajs() {
    let _watchdog = common::watchdog("node_helper_with_kafkajs");
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/kafkajs").exists(),
        "kafkajs is not installed in tests/js: run scripts/test.sh (npm ci)"
    );
    let logs = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .current_dir(&js)
        .arg("node_helper.js")
        .env("KAFKABOX_BIN", bin())
        .env("KB_LOG_DIR", logs.path())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node_helper.js failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(s["ephemeral"], true, "{s}");
    assert_eq!(s["faultsSet"], 3, "{s}");
    assert_eq!(s["exactlyOnceInOrder"], true, "{s}");
    assert_eq!(s["consumed"], 100, "{s}");
    assert_eq!(s["faultsLeft"], 0, "{s}");
    assert_eq!(s["injectedErrors"], 4, "{s}");
    assert_eq!(s["injectedDisconnects"], 1, "{s}");
    assert_eq!(s["badFault"], "refused", "{s}");
    assert_eq!(s["exitCode"], 0, "{s}");
    assert_eq!(s["dataDirRemoved"], true, "{s}");
    // kafkajs picks its versions from ApiVersions; the box closes the connection on any
    // version the release lacks, so these round trips show it stayed within each release.
    for r in ["2.8", "3.5", "3.9", "4.0"] {
        let e = &s[format!("emulate_{r}")];
        assert_eq!(e["consumed"], serde_json::json!(["x", "y"]), "{s}");
        assert_eq!(e["release"], r, "{s}");
        assert_eq!(e["partitions"], 2, "{s}");
    }
}
