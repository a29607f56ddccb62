//! The edge forwarder through the real binaries: an edge kafkabox (`serve --upstream`) forwards
//! 1,000,000 records to a second kafkabox standing in for the central cluster while the
//! cluster is stopped and restarted twice and the edge is killed with SIGKILL once; the
//! cluster ends with every record once, in order per partition.
#![cfg(feature = "client")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "edge-data";
const PARTITIONS: i32 = 3;
const TOTAL: usize = 1_000_000;

fn cluster(dir: &std::path::Path, listen: Option<&str>) -> BrokerProcess {
    let mut extra = vec![
        "--set",
        "customer.events.contract=false",
        "--set",
        "customer.events.handlers=",
    ];
    let l;
    if let Some(addr) = listen {
        l = format!("listen={addr}");
        extra.extend(["--set", l.as_str()]);
    }
    BrokerProcess::spawn(dir, &extra)
}

fn edge(dir: &std::path::Path, upstream: &str) -> BrokerProcess {
    BrokerProcess::spawn(
        dir,
        &[
            "--upstream",
            upstream,
            "--set",
            &format!("upstream.topics={TOPIC}"),
            "--set",
            "customer.events.handlers=",
            "--set",
            "num.partitions=3",
            // Deliveries fail fast while the cluster is down: the read-back path runs.
            "--set",
            "kafka.message.timeout.ms=3000",
        ],
    )
}

/// Produces records `range` to the edge (value: the record's number), acks=all, idempotent.
async fn produce(edge: &BrokerProcess, range: std::ops::Range<usize>) {
    let p = common::producer(
        edge.addr,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("batch.num.messages", "10000"),
        ],
    );
    let mut acks = Vec::with_capacity(range.len());
    for i in range {
        let v = format!("r{i:07}");
        let key = format!("k{}", i % 101);
        loop {
            match p.send_result(FutureRecord::to(TOPIC).key(&key).payload(&v)) {
                Ok(f) => {
                    acks.push(f);
                    break;
                }
                // The local queue is full: wait for some acknowledgements.
                Err((_, _)) => {
                    for f in acks.drain(..) {
                        f.await.unwrap().unwrap();
                    }
                }
            }
        }
        if acks.len() >= 50_000 {
            for f in acks.drain(..) {
                f.await.unwrap().unwrap();
            }
        }
    }
    for f in acks {
        f.await.unwrap().unwrap();
    }
}

/// Sum of the cluster's high watermarks of TOPIC (0 while it has no such topic).
fn upstream_count(addr: std::net::SocketAddr) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "count")
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}

fn wait_for_count(addr: std::net::SocketAddr, at_least: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = upstream_count(addr);
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the cluster has {n} records, want {at_least}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_forwards_a_million_records_once_in_order() {
    let _watchdog = common::watchdog("edge_forwards_a_million_records_once_in_order");
    let dir = tempfile::tempdir().unwrap();
    let (cdir, edir) = (dir.path().join("cluster"), dir.path().join("edge"));
    let mut up = cluster(&cdir, None);
    let up_addr = up.addr;
    let upstream = up_addr.to_string();
    // The forwarded topic is created at start, with num.partitions partitions.
    let mut e = edge(&edir, &upstream);

    produce(&e, 0..250_000).await;
    wait_for_count(up_addr, 50_000, "forwarding started");
    // The cluster goes away; the edge keeps accepting.
    assert!(up.terminate().success());
    produce(&e, 250_000..450_000).await;
    let mut up = cluster(&cdir, Some(&upstream));
    wait_for_count(up_addr, 300_000, "after the first restart of the cluster");
    // The edge dies mid-forwarding and comes back on its data dir.
    e.kill9();
    let mut e = edge(&edir, &upstream);
    produce(&e, 450_000..700_000).await;
    wait_for_count(up_addr, 500_000, "after the edge was killed");
    assert!(up.terminate().success());
    produce(&e, 700_000..900_000).await;
    // The edge notices: its deliveries fail (kafka.message.timeout.ms=3000), it says so, and
    // it keeps the records.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = common::http(e.http_addr(), "GET", "/api/forward", None, None).json();
        if status["errors"].as_u64().unwrap_or(0) > 0 {
            assert!(status["lag"].as_i64().unwrap() > 0, "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no forwarding error reported: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut up = cluster(&cdir, Some(&upstream));
    produce(&e, 900_000..TOTAL).await;
    wait_for_count(up_addr, TOTAL as i64, "everything");
    // Nothing more arrives (a duplicate would).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(upstream_count(up_addr), TOTAL as i64, "duplicates upstream");

    // Per partition: the edge's records, once, in the edge's order, same keys and values.
    let edge_records = read_all(e.addr, false);
    let upstream_records = read_all(up_addr, true);
    for p in 0..PARTITIONS {
        let here = &edge_records[&p];
        let there = &upstream_records[&p];
        assert_eq!(here.len(), there.len(), "partition {p}");
        for (i, (a, b)) in here.iter().zip(there.iter()).enumerate() {
            assert_eq!(a, b, "partition {p}, record {i}");
        }
    }
    let status = common::http(e.http_addr(), "GET", "/api/forward", None, None).json();
    assert_eq!(status["upstream"], upstream.as_str(), "{status}");
    // The dashboard shows it (a real browser).
    let (js, _) = common::browser();
    let out = std::process::Command::new("node")
        .current_dir(&js)
        .arg("forward_dashboard.js")
        .arg(format!("http://{}", e.http_addr()))
        .arg(&upstream)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "forward_dashboard.js: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status["lag"], 0, "{status}");
    assert_eq!(
        status["partitions"].as_array().unwrap().len(),
        3,
        "{status}"
    );
    assert!(status["records"].as_u64().unwrap() > 0, "{status}");
    assert!(
        status["errors"].as_u64().unwrap() > 0 && status["last_error"]["message"].is_string(),
        "the cluster was down while this edge ran: {status}"
    );
    let metrics = common::http(e.http_addr(), "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains(&format!(
            "kafkabox_forwarded_records_total{{topic=\"{TOPIC}\"}}"
        )),
        "{metrics}"
    );
    assert!(e.terminate().success());
    assert!(up.terminate().success());
}

/// (edge offset, key, value).
type Row = (i64, Vec<u8>, Vec<u8>);

/// Every record of TOPIC by partition: (edge offset, key, value). Upstream, the edge offset is
/// the `kafkabox.edge.offset` header; on the edge, the record's offset.
fn read_all(addr: std::net::SocketAddr, upstream: bool) -> HashMap<i32, Vec<Row>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "read-all")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .unwrap();
    let mut out = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = c
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut got = Vec::with_capacity(high as usize);
        let deadline = Instant::now() + Duration::from_secs(300);
        while (got.len() as i64) < high {
            assert!(Instant::now() < deadline, "reading {addr} partition {p}");
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.unwrap();
            let offset = if upstream {
                let h = m.headers().expect("edge headers");
                let v = h
                    .iter()
                    .find(|h| h.key == "kafkabox.edge.offset")
                    .and_then(|h| h.value)
                    .expect("kafkabox.edge.offset");
                String::from_utf8_lossy(v).parse::<i64>().unwrap()
            } else {
                m.offset()
            };
            got.push((
                offset,
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
        out.insert(p, got);
    }
    out
}

/// `upstream.topics` defaults to `*`: every topic the edge has at start (but the `.dlq` ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_by_default() {
    let _watchdog = common::watchdog("every_topic_by_default");
    let dir = tempfile::tempdir().unwrap();
    let mut up = cluster(&dir.path().join("cluster"), None);
    let edir = dir.path().join("edge");
    let mut plain = BrokerProcess::spawn(&edir, &["--set", "num.partitions=2"]);
    let p = common::producer(plain.addr, &[]);
    for i in 0..10 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::<(), _>::to("star-a").payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    drop(p);
    assert!(plain.terminate().success());
    let mut e = BrokerProcess::spawn(&edir, &["--upstream", &up.addr.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", up.addr.to_string())
        .set("group.id", "count")
        .create()
        .unwrap();
    loop {
        let n: i64 = (0..2)
            .map(|p| {
                c.fetch_watermarks("star-a", p, Duration::from_secs(10))
                    .map(|(_, h)| h)
                    .unwrap_or(0)
            })
            .sum();
        if n == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "star-a upstream: {n} of 10");
        std::thread::sleep(Duration::from_millis(200));
    }
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(
        md.topics().iter().all(|t| !t.name().ends_with(".dlq")),
        "no dead-letter topic is forwarded"
    );

    // `*` also takes topics created after the start, partitions added since, and a topic
    // deleted and created again (its offsets start over: the read-back must not take the old
    // topic's records for its own).
    let admin = common::admin(e.addr);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    common::create_topic(e.addr, "star-b", 3).await;
    let grown = admin
        .create_partitions(&[NewPartitions::new("star-a", 4)], &opts)
        .await
        .unwrap();
    assert!(grown.iter().all(|r| r.is_ok()), "{grown:?}");
    let p = common::producer(e.addr, &[]);
    let send = |topic: &'static str, partition: i32, v: String| {
        let p = p.clone();
        async move {
            p.send(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&v),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        }
    };
    for i in 0..9 {
        send("star-b", i % 3, format!("b{i}")).await;
    }
    for part in [2, 3] {
        send("star-a", part, format!("a-new-{part}")).await;
    }
    let total = |topic: &str| -> (usize, i64) {
        let n = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|md| md.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        let records = (0..n as i32)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map(|(_, h)| h)
                    .unwrap_or(0)
            })
            .sum();
        (n, records)
    };
    let wait = |topic: &str, want: (usize, i64)| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = total(topic);
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} upstream: (partitions, records) {got:?}, want {want:?}; edge log:\n{}",
                e.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("star-b", (3, 9));
    wait("star-a", (4, 12));

    let deleted = admin.delete_topics(&["star-b"], &opts).await.unwrap();
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    common::create_topic(e.addr, "star-b", 3).await;
    for i in 0..3 {
        send("star-b", i, format!("b-again-{i}")).await;
    }
    wait("star-b", (3, 12));
    // The old topic's workers stopped with it.
    let log = e.log_text();
    assert!(
        log.contains("topic deleted; stage stopped on this partition"),
        "{log}"
    );
    assert!(e.terminate().success());
    assert!(up.terminate().success());
}

/// While records wait for an unreachable cluster and the disk runs low (here: a warning level
/// above any disk, `upstream.warn.free.bytes`), the edge warns long before producers would be
/// refused: in its log, `/api/forward`, `/metrics` and the dashboard (chromium). It keeps
/// accepting, and its local handlers keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_warns_before_the_disk_fills() {
    let _watchdog = common::watchdog("backlog_warns_before_the_disk_fills");
    let dir = tempfile::tempdir().unwrap();
    // A cluster address nothing listens on.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut e = BrokerProcess::spawn(
        dir.path(),
        &[
            "--upstream",
            &nowhere,
            "--set",
            &format!("upstream.topics={TOPIC}"),
            "--set",
            "upstream.warn.free.bytes=1000000000000000000",
            "--set",
            "num.partitions=3",
        ],
    );
    let p = common::producer(e.addr, &[("acks", "all")]);
    for i in 0..100 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::<(), _>::to(TOPIC).payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = common::http(e.http_addr(), "GET", "/api/forward", None, None).json();
        if status["disk"]["warning"].is_string() && status["disk"]["backlog_records"] == 100 {
            break status;
        }
        assert!(Instant::now() < deadline, "no warning: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let disk = &status["disk"];
    assert_eq!(
        disk["warn_below_bytes"], 1_000_000_000_000_000_000u64,
        "{status}"
    );
    assert_eq!(disk["refuse_below_bytes"], 268_435_456, "{status}");
    assert!(disk["free_bytes"].as_u64().unwrap() > 0, "{status}");
    assert!(
        disk["warning"]
            .as_str()
            .unwrap()
            .starts_with("100 records wait to be forwarded"),
        "{status}"
    );
    let metrics = common::http(e.http_addr(), "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("kafkabox_forward_backlog_records 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kafkabox_forward_disk_full_seconds "),
        "{metrics}"
    );
    let log = e.log_text();
    assert!(
        log.contains("records wait to be forwarded") && log.contains("WARN"),
        "{log}"
    );
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let out = std::process::Command::new("node")
        .current_dir(&js)
        .args([
            "forward_dashboard.js",
            &format!("http://{}", e.http_addr()),
            &nowhere,
            "disk",
        ])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "forward_dashboard.js disk: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Still accepting, and the local handlers keep running: the contract sends an invalid
    // customer event to the dead-letter topic while the cluster is unreachable.
    p.send(
        FutureRecord::<(), _>::to(TOPIC).payload("one more"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    p.send(
        FutureRecord::<(), _>::to("customer-events")
            .partition(0)
            .payload("not json"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let dead = common::consume(
        e.addr,
        "customer-events.dlq",
        0,
        0,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "{}", e.log_text());
    assert_eq!(common::payload(&dead[0]), Some(&b"not json"[..]));
    assert!(e.terminate().success());
}
