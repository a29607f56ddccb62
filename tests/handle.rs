//! `kafkabox handle` (the real binary) against a second kafkabox standing in for the cluster:
//! two handler processes share a 6-partition customer-events topic (half the events without a
//! key, so one customer's events are on several partitions), one is killed with SIGKILL
//! mid-stream, a third starts later with an empty cache; the profiles in the changelog count
//! every event exactly once and the invalid events are in customer-events.dlq.
#![cfg(feature = "client")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Ephemeral;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kafkabox")
}

/// Runs a client command; panics unless it succeeds. Returns stdout.
fn cli(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("kafkabox");
    assert!(
        out.status.success(),
        "kafkabox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `kafkabox handle` process, SIGKILLed on drop if still running.
struct Handler {
    child: Child,
    log: std::path::PathBuf,
}

impl Handler {
    fn start(bootstrap: &str, dir: &std::path::Path, name: &str) -> Handler {
        Handler::start_as(bootstrap, dir, name, "at_least_once")
    }

    /// A handler with `processing.guarantee` `guarantee`.
    fn start_as(bootstrap: &str, dir: &std::path::Path, name: &str, guarantee: &str) -> Handler {
        let guarantee = format!("processing.guarantee={guarantee}");
        Handler::spawn(
            bootstrap,
            dir,
            name,
            &[
                "--set",
                "kafka.session.timeout.ms=6000",
                "--set",
                "kafka.heartbeat.interval.ms=500",
                // librdkafka's rebalance timeout: a member killed while it was joining holds a
                // rebalance up to this long (Kafka's behaviour too); 300 s by default.
                "--set",
                "kafka.max.poll.interval.ms=15000",
                "--set",
                &guarantee,
            ],
        )
    }

    /// The same settings from a config file (`--config`), the cluster from the environment.
    fn start_with_config(
        bootstrap: &str,
        dir: &std::path::Path,
        name: &str,
        guarantee: &str,
    ) -> Handler {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!("\"processing.guarantee\" = \"{guarantee}\"\n[kafka]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n\"max.poll.interval.ms\" = 15000\n"),
        )
        .unwrap();
        std::env::set_var("KAFKABOX_BOOTSTRAP", bootstrap);
        Handler::spawn("", dir, name, &["--config", file.to_str().unwrap()])
    }

    fn spawn(bootstrap: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Handler {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(bin());
        cmd.args(["handle", "--group", "profiles"]);
        if !bootstrap.is_empty() {
            cmd.args(["--bootstrap", bootstrap]);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(extra)
            .env("NO_COLOR", "1")
            .env("KAFKABOX_LOG", "info,kafkabox::handle=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kafkabox handle");
        Handler { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        common::terminate(&mut self.child)
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

fn event(customer: &str, kind: &str, i: usize) -> String {
    serde_json::json!({
        "customer_id": customer,
        "event_type": kind,
        "timestamp": "2024-01-15T10:30:00Z",
        "source": "crm",
        "value": (i % 7) as f64,
    })
    .to_string()
}

/// Produces events `range`, every 997th invalid. Returns how many were invalid.
async fn produce(
    p: &rdkafka::producer::FutureProducer,
    range: std::ops::Range<usize>,
    expected: &mut BTreeMap<String, (u64, f64)>,
) -> usize {
    let mut invalid = 0;
    let mut acks = Vec::new();
    for i in range {
        let customer = format!("c{:03}", i % 300);
        let value = if i % 997 == 0 {
            invalid += 1;
            format!("{{\"customer_id\": \"{customer}\", \"oops\": {i}}}")
        } else {
            let e = expected.entry(customer.clone()).or_default();
            e.0 += 1;
            e.1 += (i % 7) as f64;
            event(&customer, "recharge", i)
        };
        // Half without a key, as the integration guide's Python and Java examples send them:
        // one customer's events land on several partitions.
        let mut record =
            FutureRecord::<[u8], [u8]>::to("customer-events").payload(value.as_bytes());
        if i % 2 == 0 {
            record = record.key(customer.as_bytes());
        }
        acks.push(p.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    invalid
}

/// Waits until group `profiles` has committed up to the log end of every partition (of
/// `partitions` of customer-events and as many re-keyed ones).
fn wait_caught_up(cluster: &Ephemeral, partitions: usize, what: &str, logs: &[&Handler]) {
    let bootstrap = &cluster.bootstrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = Command::new(bin())
            .args(["groups", "describe", "profiles", "--json", "-b", bootstrap])
            .output()
            .unwrap();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let offsets = v["offsets"].as_array().cloned().unwrap_or_default();
            let of = |t: &str| offsets.iter().filter(|o| o["topic"] == t).count();
            // The source topic and the re-keyed events, all partitions handled.
            if of("customer-events") == partitions
                && of("profiles-customer-events-repartition") == partitions
                && v["lag"] == 0
            {
                return;
            }
        }
        if Instant::now() > deadline {
            let status = Command::new(bin())
                .args(["groups", "describe", "profiles", "-b", bootstrap])
                .output()
                .unwrap();
            let mut logs: Vec<String> = logs.iter().map(|h| h.log()).collect();
            logs.push(cluster.log_text());
            panic!(
                "not caught up ({what}): {}\n{}",
                String::from_utf8_lossy(&status.stdout),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The cluster: a kafkabox whose customer-events is a plain topic of `partitions` partitions.
fn plain_cluster(partitions: usize) -> Ephemeral {
    let cluster = Ephemeral::start(&[
        "--set",
        "log.retention.check.interval.ms=600000",
        "--set",
        "customer.events.contract=false",
        "--set",
        "customer.events.handlers=",
        // `kafkabox handle` writes customer-events.dlq as a client, as on a Kafka cluster.
        "--set",
        "dead.letter.topics.reserved=false",
        // A handler killed mid-transaction (exactly_once_v2) holds its partitions' last stable
        // offset until the transaction times out: looked for every second.
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
    ]);
    let n = partitions.to_string();
    let b = cluster.bootstrap();
    cli(&[
        "topics",
        "create",
        "customer-events",
        "--partitions",
        &n,
        "-b",
        &b,
    ]);
    cluster
}

/// The changelog's last profile per customer.
fn profiles(bootstrap: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for line in cli(&["dump", "profiles-profiles-changelog", "-b", bootstrap]).lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let key = r["key"].as_str().unwrap().to_string();
        let value: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
        out.insert(key, value);
    }
    out
}

fn check_exact(bootstrap: &str, expected: &BTreeMap<String, (u64, f64)>) {
    let got = profiles(bootstrap);
    assert_eq!(got.len(), expected.len(), "customers");
    for (customer, (events, sum)) in expected {
        let p = &got[customer];
        assert_eq!(p["events"].as_u64(), Some(*events), "{customer}: {p}");
        assert_eq!(
            p["by_type"]["recharge"]["count"].as_u64(),
            Some(*events),
            "{customer}"
        );
        assert_eq!(
            p["by_type"]["recharge"]["value_sum"].as_f64(),
            Some(*sum),
            "{customer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_one_killed_profiles_exact() {
    let _watchdog = common::watchdog("two_handlers_one_killed_profiles_exact");
    two_handlers_one_killed("at_least_once").await;
}

/// The same with `processing.guarantee=exactly_once_v2`: the killed handler's open
/// transaction is aborted, and the dead letters are there exactly once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_one_killed_exactly_once() {
    let _watchdog = common::watchdog("two_handlers_one_killed_exactly_once");
    two_handlers_one_killed("exactly_once_v2").await;
}

async fn two_handlers_one_killed(guarantee: &str) {
    let exactly_once = guarantee == "exactly_once_v2";
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = plain_cluster(6);
    let b = cluster.bootstrap();
    let mut a = Handler::start_as(&b, dir.path(), "a", guarantee);
    let mut h2 = Handler::start_as(&b, dir.path(), "b", guarantee);
    let addr: std::net::SocketAddr = b.parse().unwrap();
    let p = common::producer(addr, &[("enable.idempotence", "true")]);
    let mut expected = BTreeMap::new();
    let mut invalid = produce(&p, 0..6000, &mut expected).await;
    wait_caught_up(
        &cluster,
        6,
        "the first 6,000 events, two handlers",
        &[&a, &h2],
    );
    assert!(
        a.log().contains("profiles restored from the changelog"),
        "{}",
        a.log()
    );
    assert!(
        h2.log().contains("profiles restored from the changelog"),
        "{}",
        h2.log()
    );
    // Mid-stream: events keep arriving while one handler dies.
    let second = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut expected = BTreeMap::new();
            let invalid = produce(&p, 6000..16000, &mut expected).await;
            (expected, invalid)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9();
    let (more, more_invalid) =
        common::within("the second producer", Duration::from_secs(300), second)
            .await
            .unwrap();
    for (k, (n, s)) in more {
        let e: &mut (u64, f64) = expected.entry(k).or_default();
        e.0 += n;
        e.1 += s;
    }
    invalid += more_invalid;
    wait_caught_up(
        &cluster,
        6,
        "16,000 events after a handler was killed",
        &[&h2],
    );
    check_exact(&b, &expected);

    // A new handler with an empty cache takes over from the changelog alone.
    h2.kill9();
    let mut c = Handler::start_with_config(&b, dir.path(), "c", guarantee);
    invalid += produce(&p, 16000..18000, &mut expected).await;
    wait_caught_up(&cluster, 6, "18,000 events, a fresh handler", &[&c]);
    check_exact(&b, &expected);
    assert!(
        c.log().contains("profiles restored from the changelog"),
        "{}",
        c.log()
    );
    // Every invalid event is in the dead-letter topic (at least once; by original offset).
    let dlq = cli(&["dump", "customer-events.dlq", "-b", &b]);
    let originals: BTreeSet<(String, String)> = dlq
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let h = |k: &str| {
                r["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["key"] == k)
                    .map(|h| h["value"].as_str().unwrap().to_string())
                    .unwrap()
            };
            (h("kafkabox.dlq.partition"), h("kafkabox.dlq.offset"))
        })
        .collect();
    assert_eq!(originals.len(), invalid, "{dlq}");
    if exactly_once {
        // Once each: the dead letters were written in the batches' transactions.
        assert_eq!(dlq.lines().count(), invalid, "{dlq}");
        for h in [&a, &h2, &c] {
            assert!(
                h.log()
                    .contains("exactly_once_v2: each batch is one transaction"),
                "{}",
                h.log()
            );
        }
    }
    assert!(c.terminate().success(), "{}", c.log());
    assert!(cluster.terminate().success());
}

/// An embedded Rust handler through the same `Handler` trait, run by `HandleBuilder` against an
/// in-process box: it sees every record of its topic, in order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_handler_on_a_cluster() {
    let _watchdog = common::watchdog("embedded_handler_on_a_cluster");
    use kafkabox::pipeline::{Event, Handler, HandlerError};
    use std::sync::{Arc, Mutex};

    struct Collect(Arc<Mutex<Vec<(i32, i64, String)>>>);
    #[async_trait::async_trait]
    impl Handler for Collect {
        fn name(&self) -> &str {
            "collect"
        }
        async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
            let mut seen = self.0.lock().unwrap();
            for e in events {
                let v = String::from_utf8_lossy(e.value.as_deref().unwrap_or_default());
                seen.push((e.partition, e.offset, v.into_owned()));
            }
            Ok(())
        }
    }

    let cluster = kafkabox::Appliance::builder()
        .ephemeral()
        .listen("127.0.0.1:0")
        .without_contract("customer-events")
        .set("dead.letter.topics.reserved", "false")
        .start()
        .await
        .unwrap();
    let mut config = kafkabox::Config::default();
    config.set("customer.events.contract", "false").unwrap();
    config.set("customer.events.handlers", "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let runner = kafkabox::handle::HandleBuilder::new(config, &cluster.bootstrap(), "embedded")
        .data_dir(dir.path())
        .handler("orders", Collect(seen.clone()));
    let task = tokio::spawn(runner.run(rx));
    let addr: std::net::SocketAddr = cluster.bootstrap().parse().unwrap();
    let p = common::producer(addr, &[("enable.idempotence", "true")]);
    for i in 0..50 {
        let v = format!("order-{i}");
        p.send(
            FutureRecord::<(), _>::to("orders").payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(true);
    common::within(
        "the embedded handler to stop",
        Duration::from_secs(30),
        task,
    )
    .await
    .unwrap()
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let values: Vec<String> = seen.iter().map(|(_, _, v)| v.clone()).collect();
    assert_eq!(
        values,
        (0..50).map(|i| format!("order-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        seen.iter().map(|(_, o, _)| *o).collect::<Vec<_>>(),
        (0..50).collect::<Vec<i64>>()
    );
    common::within(
        "the cluster to shut down",
        Duration::from_secs(30),
        cluster.shutdown(),
    )
    .await
    .unwrap();
}

/// A changelog record written late by a process that had lost its partition (its send was in
/// flight when another took over: a "zombie") does not move a profile back: a process that
/// restores the changelog afterwards keeps the newer state and counts on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_changelog_write_does_not_move_a_profile_back() {
    let _watchdog = common::watchdog("a_late_changelog_write_does_not_move_a_profile_back");
    let dir = tempfile::tempdir().unwrap();
    let cluster = plain_cluster(1);
    let b = cluster.bootstrap();
    let addr: std::net::SocketAddr = b.parse().unwrap();
    let p = common::producer(addr, &[("enable.idempotence", "true")]);
    let send = |i: usize| {
        let p = p.clone();
        async move {
            let v = event("zed", "recharge", i);
            p.send(
                FutureRecord::<(), _>::to("customer-events").payload(&v),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
    };
    let mut a = Handler::start(&b, dir.path(), "a");
    // Two events, one batch each: the changelog holds the profile after one, then after two.
    send(1).await;
    wait_caught_up(&cluster, 1, "the first event", &[&a]);
    send(2).await;
    wait_caught_up(&cluster, 1, "the second event", &[&a]);
    assert!(a.terminate().success());
    let versions: Vec<Value> = cli(&["dump", "profiles-profiles-changelog", "-b", &b])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let first = versions[0]["value"].as_str().unwrap().to_string();
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["events"], 1);
    // The zombie's late write: the profile after one event, after the one after two.
    p.send(
        FutureRecord::to("profiles-profiles-changelog")
            .key("zed")
            .payload(&first)
            .partition(0),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    // A process with an empty cache restores the changelog, then handles a third event.
    let c = Handler::start(&b, dir.path(), "c");
    send(3).await;
    wait_caught_up(&cluster, 1, "the third event, after the restore", &[&c]);
    let zed = &profiles(&b)["zed"];
    assert_eq!(zed["events"], 3, "{zed}\n{}", c.log());
    assert!(
        c.log()
            .contains("older than the profile restored before them were skipped"),
        "{}",
        c.log()
    );
}
