//! Damaged data dirs, one test per kind of damage, through the real binary: 10,000 records in
//! four segments, the broker stopped, then its files damaged. `kafkabox check` must name the
//! damage (exit code 1), `kafkabox serve` must not serve the partition as if nothing happened,
//! `kafkabox repair` must say what it dropped, and afterwards the intact records read back, the
//! next record gets offset 10,000 (offsets are never reused) and `check` is clean.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::BrokerProcess;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

const RECORDS: usize = 10_000;

fn value(i: usize) -> String {
    format!("record-{i:06}-{}", "x".repeat(300))
}

fn kafkabox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(args)
        .output()
        .expect("run kafkabox")
}

/// A data dir with topic `t1`: 10,000 records in segments of 1 MiB, written once per test run
/// and copied for each test; batches of 100 records (~33 KB, many per segment), or with
/// `big` librdkafka's default batches of up to 1 MB (stored as 64 KiB chunks, which sled keeps
/// in blob files).
fn pristine(big: bool) -> &'static Path {
    static SMALL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static BIG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = if big { &BIG } else { &SMALL };
    &cell
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("data");
            let written = data.clone();
            // Its own thread and runtime: the tests calling this run inside theirs.
            std::thread::spawn(move || {
                let data = written;
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let mut broker =
                        BrokerProcess::spawn(&data, &["--set", "log.segment.bytes=1048576"]);
                    // Batches of 100 records (~33 KB): many batches per segment.
                    let p = common::producer(
                        broker.addr,
                        &[
                            ("acks", "all"),
                            ("linger.ms", "20"),
                            ("batch.num.messages", if big { "10000" } else { "100" }),
                        ],
                    );
                    let mut futures = Vec::new();
                    for i in 0..RECORDS {
                        let v = value(i);
                        futures.push(
                            p.send_result(FutureRecord::<(), _>::to("t1").payload(v.as_bytes()))
                                .expect("enqueue"),
                        );
                    }
                    for (i, f) in futures.into_iter().enumerate() {
                        let d = f.await.unwrap().expect("delivered");
                        assert_eq!(d.offset, i as i64);
                    }
                    assert_eq!(broker.terminate().code(), Some(0));
                });
            })
            .join()
            .expect("writing the data dir");
            (tmp, data)
        })
        .1
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The partition's segment directories, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in std::fs::read_dir(data.join("segments")).unwrap() {
        for s in std::fs::read_dir(p.unwrap().path()).unwrap() {
            out.push(s.unwrap().path());
        }
    }
    out.sort();
    out
}

/// Inverts 64 bytes of `file` at `at`.
fn flip(file: &Path, at: u64) {
    flip_n(file, at, 64);
}

/// Inverts `n` bytes of `file` at `at`.
fn flip_n(file: &Path, at: u64, n: usize) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut buf = vec![0u8; n];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut buf).unwrap();
    for b in &mut buf {
        *b ^= 0xff;
    }
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&buf).unwrap();
}

/// Records of `t1` a consumer gets from offset 0 within 10 s (errors are the broker's to log).
fn read_all(addr: std::net::SocketAddr) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "damage-test-unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t1", 0, Offset::Offset(0))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while n < RECORDS && std::time::Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(200)) {
            n += 1;
        }
    }
    n
}

/// Damages a copy with `damage`, then checks, serves, repairs and serves again. Returns the
/// ranges of offsets the repair dropped. With `newest_from` (the damage is in the newest
/// segment, which starts there), the damaged box still serves every record before it, and
/// ListOffsets, `/api/topics` and the metrics say the partition is damaged.
async fn damaged(
    name: &str,
    big: bool,
    newest_from: Option<i64>,
    damage: impl FnOnce(&Path),
) -> Vec<(i64, i64)> {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(pristine(big), &data);
    let segs = segments(&data);
    assert!(segs.len() >= 3, "{segs:?}");
    damage(&data);
    let dir = data.to_str().unwrap();

    let check = kafkabox(&["check", dir]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{name}: check found nothing: {out}"
    );
    assert!(out.contains("t1-0: DAMAGED from offset"), "{name}: {out}");

    // The broker does not serve the damaged partition as if it were whole: reading it gets
    // fewer records than were acknowledged, and the log names the damage; what lies before
    // the damage is served.
    {
        let broker = BrokerProcess::spawn(&data, &[]);
        let addr = broker.addr;
        let read = tokio::task::spawn_blocking(move || read_all(addr))
            .await
            .unwrap();
        assert!(read < RECORDS, "{name}: all {read} records were served");
        let log = broker.log_text();
        assert!(
            log.contains("cannot be loaded")
                || log.contains("cannot be read")
                || log.contains("missing from the partition's segment files")
                || log.contains("are missing from the stored log")
                || log.contains("damaged files"),
            "{name}: {log}"
        );
        assert!(log.contains("kafkabox check"), "{name}: {log}");
        let t = common::http(broker.http_addr(), "GET", "/api/topics/t1", None, None).json();
        assert!(
            t["partitions"][0]["damaged"]["reason"].is_string(),
            "{name}: /api/topics does not say it is damaged: {t}"
        );
        let metrics = common::http(broker.http_addr(), "GET", "/metrics", None, None).body;
        assert!(
            metrics.contains("kafkabox_partition_damaged{topic=\"t1\",partition=\"0\"} 1"),
            "{name}: {metrics}"
        );
        if let Some(base) = newest_from {
            assert!(
                read as i64 >= base,
                "{name}: only {read} records served, the damage starts at {base}"
            );
            // ListOffsets: a storage error, not a made-up end.
            let err = tokio::task::spawn_blocking(move || {
                use rdkafka::consumer::{BaseConsumer, Consumer};
                let c: BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", addr.to_string())
                    .create()
                    .unwrap();
                c.fetch_watermarks("t1", 0, Duration::from_secs(10))
            })
            .await
            .unwrap()
            .expect_err("watermarks of a damaged partition");
            assert_eq!(
                err.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::KafkaStorageError),
                "{name}: {err:?}"
            );
            // A producer gets KAFKA_STORAGE_ERROR (retriable: it gives up at its timeout).
            let p = common::producer(addr, &[("message.timeout.ms", "3000"), ("retries", "0")]);
            let e = p
                .send(
                    FutureRecord::<(), _>::to("t1").payload("into the damage"),
                    Duration::from_secs(10),
                )
                .await
                .expect_err("a write to a damaged partition");
            assert_eq!(
                e.0.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::KafkaStorageError),
                "{name}: {e:?}"
            );
        }
    }

    let repair = kafkabox(&["repair", dir]);
    let out = String::from_utf8_lossy(&repair.stdout).to_string();
    assert!(
        repair.status.success(),
        "{name}: repair failed: {out}{}",
        String::from_utf8_lossy(&repair.stderr)
    );
    let mut dropped = Vec::new();
    for line in out
        .lines()
        .filter(|l| l.starts_with("t1-0: dropped offsets "))
    {
        let range = line["t1-0: dropped offsets ".len()..]
            .split_whitespace()
            .next()
            .unwrap();
        let (from, to) = range.split_once("..").unwrap();
        dropped.push((from.parse::<i64>().unwrap(), to.parse::<i64>().unwrap()));
        assert!(
            line.ends_with("the next record gets offset 10000"),
            "{name}: {line}"
        );
    }
    assert!(!dropped.is_empty(), "{name}: no dropped line: {out}");
    assert!(out.contains("all intact"), "{name}: {out}");
    assert!(kafkabox(&["check", dir]).status.success(), "{name}");
    let lost = |o: i64| dropped.iter().any(|(f, t)| *f <= o && o < *t);
    let kept: Vec<i64> = (0..RECORDS as i64).filter(|o| !lost(*o)).collect();

    // Served again: every intact record at its offset (a dropped range is a gap consumers
    // step over), then new ones after every offset ever used.
    let broker = BrokerProcess::spawn(&data, &[]);
    let got = common::consume_async(broker.addr, "t1", 0, 0, kept.len()).await;
    let offsets: Vec<i64> = got.iter().map(|m| m.offset()).collect();
    assert_eq!(offsets, kept, "{name}: dropped {dropped:?}");
    for m in &got {
        assert_eq!(
            common::payload(m),
            Some(value(m.offset() as usize).as_bytes()),
            "{name}"
        );
    }
    let p = common::producer(broker.addr, &[("acks", "all")]);
    let d = p
        .send(
            FutureRecord::<(), _>::to("t1").payload("after the repair"),
            Duration::from_secs(30),
        )
        .await
        .expect("produce after the repair");
    assert_eq!(d.offset, RECORDS as i64, "{name}: an offset was reused");
    // A consumer that was inside a dropped range moves on to the next record after it.
    let (from, to) = dropped[0];
    let after = common::consume_async(broker.addr, "t1", 0, from, 1).await;
    assert_eq!(after.len(), 1, "{name}");
    assert_eq!(after[0].offset(), to, "{name}");
    dropped
}

/// The base offset of a segment directory (its name, before any `-generation`).
fn base_of(dir: &Path) -> i64 {
    dir.file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segment_truncated() {
    let _watchdog = common::watchdog("the_newest_segment_truncated");
    let newest = base_of(segments(pristine(false)).last().unwrap());
    let dropped = damaged("truncated", false, Some(newest), |data| {
        let db = segments(data).last().unwrap().join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(len / 2).unwrap();
    })
    .await;
    assert!(dropped[0].0 < RECORDS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_near_the_end_of_the_newest_segment() {
    let _watchdog = common::watchdog("bytes_flipped_near_the_end_of_the_newest_segment");
    damaged("flipped end", false, None, |data| {
        let db = segments(data).last().unwrap().join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        flip(&db, len - 5_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_inside_a_sealed_segment() {
    let _watchdog = common::watchdog("bytes_flipped_inside_a_sealed_segment");
    let third = base_of(&segments(pristine(false))[2]);
    let dropped = damaged("flipped sealed", false, None, |data| {
        let db = segments(data)[1].join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        flip(&db, len / 2);
    })
    .await;
    // Only the damaged range of the second segment goes: every later segment stays.
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].0 < 6_000,
        "the damage is in the second segment: {dropped:?}"
    );
    assert_eq!(
        dropped[0].1, third,
        "the third segment and later are kept: {dropped:?}"
    );
}

/// Two neighbouring sealed segments damaged: each loses only its damaged range, the two gaps
/// touch and reads step over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flipped_inside_two_sealed_segments() {
    let _watchdog = common::watchdog("bytes_flipped_inside_two_sealed_segments");
    let dropped = damaged("two sealed", false, None, |data| {
        for i in [1, 2] {
            let db = segments(data)[i].join("db");
            let len = std::fs::metadata(&db).unwrap().len();
            flip(&db, len / 2);
        }
    })
    .await;
    assert_eq!(dropped.len(), 2, "{dropped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segment_deleted() {
    let _watchdog = common::watchdog("the_newest_segment_deleted");
    let mut base = 0;
    let dropped = damaged("deleted segment", false, None, |data| {
        let newest = segments(data).pop().unwrap();
        base = newest
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        std::fs::remove_dir_all(newest).unwrap();
    })
    .await;
    assert_eq!(
        dropped[0].0, base,
        "everything from the deleted segment's base is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segments_blobs_deleted() {
    let _watchdog = common::watchdog("the_newest_segments_blobs_deleted");
    damaged("deleted blobs", false, None, |data| {
        // sled keeps big pages of a segment's tree in blob files: those of the newest segment
        // that has any go.
        let mut n = 0;
        for seg in segments(data).iter().rev() {
            let blobs: Vec<_> = std::fs::read_dir(seg.join("blobs"))
                .unwrap()
                .map(|b| b.unwrap().path())
                .collect();
            if blobs.is_empty() {
                continue;
            }
            for b in blobs {
                std::fs::remove_file(b).unwrap();
                n += 1;
            }
            break;
        }
        assert!(n > 0, "no blobs to delete");
    })
    .await;
}

/// 16 bytes flipped at the start of the newest segment's database file, where sled keeps what
/// it needs to open it: the newest segment cannot be read at all, and the partition is still
/// served up to it, reported damaged; the repair drops that segment and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segment_unreadable() {
    let _watchdog = common::watchdog("the_newest_segment_unreadable");
    let newest = base_of(segments(pristine(false)).last().unwrap());
    let dropped = damaged("unreadable newest", false, Some(newest), |data| {
        let db = segments(data).last().unwrap().join("db");
        flip_n(&db, 0, 16);
    })
    .await;
    assert!(dropped[0].0 >= newest, "{dropped:?}");
}

/// The newest segment's sled configuration file damaged: sled refuses to open the segment
/// ("Read corrupted data"). The older segments are still served; the repair drops the newest
/// segment whole and keeps every older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segment_does_not_open() {
    let _watchdog = common::watchdog("the_newest_segment_does_not_open");
    let newest = base_of(segments(pristine(false)).last().unwrap());
    let dropped = damaged("newest does not open", false, Some(newest), |data| {
        let conf = segments(data).last().unwrap().join("conf");
        flip_n(&conf, 0, 16);
    })
    .await;
    assert_eq!(dropped[0].0, newest, "{dropped:?}");
}

/// The metadata database deleted: never a new empty cluster over the old segments.
#[test]
fn the_metadata_database_deleted() {
    let _watchdog = common::watchdog("the_metadata_database_deleted");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(pristine(false), &data);
    std::fs::remove_file(data.join("db")).unwrap();
    let dir = data.to_str().unwrap();
    for cmd in [&["check", dir][..], &["repair", dir]] {
        let out = kafkabox(cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no cluster id"), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["serve", "--data-dir", dir, "--listen", "127.0.0.1:0"])
        .args(["--set", "http.listen=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("will not start an empty cluster over existing data"),
        "{err}"
    );
}
