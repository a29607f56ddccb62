//! A full disk, on a real small file system: the data dir is a 48 MiB tmpfs (the test mounts
//! it, so it needs root, as CI has; without it the test fails, it does not skip). Producers fill
//! it through the real binary; writes must then be refused promptly with KAFKA_STORAGE_ERROR
//! (not hang), reads and metadata go on, SIGTERM exits, and once the file system is grown the
//! box accepts writes again by itself; every acknowledged record survives a kill -9.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the disk-full test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn resize(&self, size_mib: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "remounting the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

const RESERVE: &str = "8388608";

fn spawn(data: &Path) -> BrokerProcess {
    BrokerProcess::spawn(
        data,
        &[
            "--set",
            &format!("storage.free.bytes.min={RESERVE}"),
            "--set",
            "log.segment.bytes=4194304",
            "--set",
            "storage.cache.bytes=8388608",
        ],
    )
}

fn value(i: usize) -> String {
    format!("{i:08}-{}", "v".repeat(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let _watchdog =
        common::watchdog("a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself");
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, 48);
    // The data dir is the mount itself, so the broker's log file lies outside it.
    let mut broker = spawn(&mnt);
    let addr = broker.addr;

    // Fill it: 1 KiB records, acks=all, no retries, so the first refusal shows as an error.
    let p = common::producer(
        addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "10000"),
        ],
    );
    let mut acked: Vec<(i64, String)> = Vec::new();
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    // 48 MiB holds well under 100,000 records of 1 KiB.
    while refused.is_none() && i < 100_000 && Instant::now() < deadline {
        let mut wave = Vec::new();
        for _ in 0..500 {
            let v = value(i);
            i += 1;
            let f = p
                .send_result(FutureRecord::<(), _>::to("fill").payload(v.as_bytes()))
                .expect("enqueue");
            wave.push((v, f));
        }
        for (v, f) in wave {
            match f.await.expect("delivery future") {
                Ok(d) => acked.push((d.offset, v)),
                Err((e, _)) => {
                    refused.get_or_insert(e);
                }
            }
        }
    }
    let refused = refused.expect("the disk never filled");
    assert_eq!(
        refused,
        KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError),
        "a full disk must be answered with KAFKA_STORAGE_ERROR, promptly (not a timeout)"
    );
    assert!(acked.len() > 10_000, "only {} acknowledged", acked.len());
    let log = broker.log_text();
    assert!(
        log.contains("writes are refused with KAFKA_STORAGE_ERROR"),
        "{log}"
    );
    assert!(!log.contains("No space left"), "sled met ENOSPC: {log}");

    // Still full: another write is refused again, at once.
    let again = p
        .send(
            FutureRecord::<(), _>::to("fill").payload("more"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(
            again,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError),
                _
            ))
        ),
        "{again:?}"
    );

    // Reads go on: every acknowledged record, in order.
    let got = common::consume_async(addr, "fill", 0, 0, acked.len()).await;
    assert_eq!(got.len(), acked.len());
    for (m, (off, v)) in got.iter().zip(&acked) {
        assert_eq!(m.offset(), *off);
        assert_eq!(common::payload(m), Some(v.as_bytes()));
    }
    let metrics = common::http(broker.http_addr(), "GET", "/metrics", None, None);
    let refused_count = metrics
        .body
        .lines()
        .find(|l| l.starts_with("kafkabox_storage_writes_refused_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("kafkabox_storage_writes_refused_total");
    assert!(refused_count >= 2, "{}", metrics.body);
    assert!(metrics.body.contains("kafkabox_storage_free_bytes "));
    // /ready (and so the dashboard's banner) says writes are refused for disk space.
    let ready = common::http(broker.http_addr(), "GET", "/ready", None, None).json();
    assert!(
        ready["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("storage.free.bytes.min")),
        "{ready}"
    );

    // SIGTERM exits while the disk is full.
    assert_eq!(broker.terminate().code(), Some(0), "{}", broker.log_text());

    // Restart on the full disk, then grow the file system: writes are accepted again without
    // a restart, offsets continue.
    let mut broker = spawn(&mnt);
    let addr = broker.addr;
    let p = common::producer(
        addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "10000"),
        ],
    );
    // A restart can give back a little of what sled held, so a few records may fit before the
    // reserve is reached again; then writes are refused as before the restart.
    let mut still = None;
    for j in 0..2_000 {
        let v = value(500_000 + j);
        match p
            .send(
                FutureRecord::<(), _>::to("fill").payload(v.as_bytes()),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(d) => acked.push((d.offset, v)),
            Err((e, _)) => {
                still = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        still,
        Some(KafkaError::MessageProduction(
            RDKafkaErrorCode::KafkaStorageError
        )),
        "writes on the full disk after a restart"
    );
    fs.resize(96);
    let idem = common::producer(addr, &[("acks", "all"), ("enable.idempotence", "true")]);
    let next = acked.last().map_or(0, |a| a.0 + 1);
    for j in 0..200 {
        let v = value(1_000_000 + j);
        let off = idem
            .send(
                FutureRecord::<(), _>::to("fill").payload(v.as_bytes()),
                Duration::from_secs(30),
            )
            .await
            .expect("a write after space returned")
            .offset;
        assert_eq!(off, next + j as i64, "offsets continue densely");
        acked.push((off, v));
    }
    assert!(
        broker.log_text().contains("writes are accepted again"),
        "{}",
        broker.log_text()
    );

    // kill -9 and restart: everything acknowledged is there.
    broker.kill9();
    let broker = spawn(&mnt);
    let got = common::consume_async(broker.addr, "fill", 0, 0, acked.len()).await;
    assert_eq!(got.len(), acked.len());
    for (m, (off, v)) in got.iter().zip(&acked) {
        assert_eq!(m.offset(), *off);
        assert_eq!(common::payload(m), Some(v.as_bytes()));
    }
    drop(broker);
    drop(fs);
}
