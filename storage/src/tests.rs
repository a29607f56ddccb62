use super::*;
use kafkabox_protocol::batch::{encode_uncompressed, validate_produce_batch, ProducerFields};

fn batch(n: usize, producer: ProducerFields) -> (Vec<u8>, BatchHeader) {
    let recs: Vec<kafkabox_protocol::batch::KeyValue<'_>> =
        (0..n).map(|_| (None, Some(&b"value"[..]))).collect();
    let b = encode_uncompressed(&recs, 1_000, producer);
    let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
    (b, h)
}

/// Topic configs that give every batch a segment of its own.
fn segment_per_batch() -> BTreeMap<String, String> {
    BTreeMap::from([("segment.bytes".to_string(), "1".to_string())])
}

#[tokio::test]
async fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let cluster;
    {
        let s = Store::open(cfg.clone()).unwrap();
        cluster = s.cluster_id().to_string();
        assert_eq!(cluster.len(), 22);
        let t = s.create_topic("t", 2, BTreeMap::new()).unwrap();
        let p = &t.partitions[1];
        let (b, h) = batch(3, ProducerFields::NONE);
        let a1 = s.append(p, &b, &h).unwrap();
        let a2 = s.append(p, &b, &h).unwrap();
        assert_eq!((a1.base_offset, a2.base_offset), (0, 3));
        s.wait_durable(a2.write_seq).await.unwrap();
        let mut out = BytesMut::new();
        // Offset 4 is in the middle of the second batch: the whole batch comes back.
        s.read(p, 4, 1 << 20, true, &mut out).unwrap().unwrap();
        let h2 = batch::parse_header(&out).unwrap();
        assert_eq!(h2.base_offset, 3);
        assert_eq!(out.len(), b.len());
        assert_eq!(&out[21..], &b[21..]);
        // Out of range.
        assert!(s.read(p, 7, 100, true, &mut out).unwrap().is_none());
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    assert_eq!(s.cluster_id(), cluster);
    let t = s.topic("t").unwrap();
    assert_eq!(
        s.offsets(&t.partitions[1]),
        Offsets {
            log_start: 0,
            log_end: 6
        }
    );
    assert_eq!(
        s.offsets(&t.partitions[0]),
        Offsets {
            log_start: 0,
            log_end: 0
        }
    );
    assert!(matches!(
        s.create_topic("t", 1, BTreeMap::new()),
        Err(StoreError::TopicExists(_))
    ));
}

#[tokio::test]
async fn read_respects_max_bytes_but_returns_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
    let p = &t.partitions[0];
    let (b, h) = batch(10, ProducerFields::NONE);
    for _ in 0..5 {
        s.append(p, &b, &h).unwrap();
    }
    // Readers see what a flush covered (the high watermark).
    s.flush().unwrap();
    let mut out = BytesMut::new();
    s.read(p, 0, 1, true, &mut out).unwrap().unwrap();
    assert_eq!(out.len(), b.len());
    out.clear();
    s.read(p, 0, 1, false, &mut out).unwrap().unwrap();
    assert_eq!(out.len(), 0);
    out.clear();
    s.read(p, 0, b.len() * 2 + 1, true, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), b.len() * 2);
    out.clear();
    s.read(p, 0, 1 << 20, true, &mut out).unwrap().unwrap();
    assert_eq!(out.len(), b.len() * 5);
}

#[tokio::test]
async fn idempotent_duplicates_and_gaps_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let pid;
    {
        let s = Store::open(cfg.clone()).unwrap();
        pid = s.new_producer_id(b"User:ANONYMOUS").unwrap();
        let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        let p = &t.partitions[0];
        let (b, h) = batch(
            5,
            ProducerFields {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: 0,
            },
        );
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 0);
        let dup = s.append(p, &b, &h).unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, 0);
        let (b, h) = batch(
            1,
            ProducerFields {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: 7,
            },
        );
        assert!(matches!(
            s.append(p, &b, &h),
            Err(AppendError::OutOfOrderSequence {
                expected: 5,
                got: 7
            })
        ));
        // An id whose sequence number was never handed out (the store checks only that;
        // whether an id belongs to the principal using it is `producer_id_owned_by`, which
        // the broker asks before appending).
        let (b, h) = batch(
            1,
            ProducerFields {
                producer_id: pid + (1 << 40),
                producer_epoch: 0,
                base_sequence: 0,
            },
        );
        assert!(matches!(
            s.append(p, &b, &h),
            Err(AppendError::UnknownProducerId(_))
        ));
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let t = s.topic("t").unwrap();
    let p = &t.partitions[0];
    let (b, h) = batch(
        5,
        ProducerFields {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
        },
    );
    let dup = s.append(p, &b, &h).unwrap();
    assert!(dup.duplicate, "producer state must survive a restart");
    let (b, h) = batch(
        2,
        ProducerFields {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 5,
        },
    );
    assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 5);
    assert!(s.new_producer_id(b"User:ANONYMOUS").unwrap() > pid);
}

#[tokio::test]
async fn group_commit_releases_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
    let p = t.partitions[0].clone();
    let (b, h) = batch(1, ProducerFields::NONE);
    let mut seqs = Vec::new();
    for _ in 0..100 {
        seqs.push(s.append(&p, &b, &h).unwrap().write_seq);
    }
    for seq in seqs {
        s.wait_durable(seq).await.unwrap();
    }
}

#[tokio::test]
async fn timestamps_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
    let p = &t.partitions[0];
    for ts in [100, 200, 300] {
        let b = encode_uncompressed(
            &[(None, Some(b"x")), (None, Some(b"y"))],
            ts,
            ProducerFields::NONE,
        );
        let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
        s.append(p, &b, &h).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(s.offset_for_timestamp(p, 150).unwrap(), Some((2, 200)));
    assert_eq!(s.offset_for_timestamp(p, 301).unwrap(), None);
    // The batch holding the largest timestamp (its base offset): ListOffsets looks inside it.
    assert_eq!(s.max_timestamp(p).unwrap(), Some((4, 300)));
    // A reader that has only passed offset 3 holds retention at the segment ending at 2.
    assert_eq!(s.expire_before(p, 250, 3).unwrap(), 2);
    assert_eq!(s.offsets(p).log_start, 2);
    // Segments older than 250 go whole.
    assert_eq!(s.expire_before(p, 250, i64::MAX).unwrap(), 2);
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 4,
            log_end: 6
        }
    );
    let mut out = BytesMut::new();
    assert!(s.read(p, 0, 100, true, &mut out).unwrap().is_none());
    // Everything is older than 1000: the newest segment goes too, the log end stays, and the
    // next append goes on from it.
    assert_eq!(s.expire_before(p, 1000, i64::MAX).unwrap(), 2);
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 6,
            log_end: 6
        }
    );
    let (b, h) = batch(1, ProducerFields::NONE);
    assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 6);
    s.close().unwrap();
    drop(t);
    drop(s);
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let p = &s.topic("t").unwrap().partitions[0];
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 6,
            log_end: 7
        }
    );
}

#[tokio::test]
async fn large_batches_are_chunked_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let big = vec![0xabu8; 5 * CHUNK_BYTES + 123];
    let b = encode_uncompressed(&[(Some(b"k"), Some(&big))], 1_000, ProducerFields::NONE);
    let h = validate_produce_batch(&b, 1 << 24, None).unwrap();
    assert_eq!(chunk_count(b.len()), 6);
    {
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.create_topic("big", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        let (small, sh) = batch(2, ProducerFields::NONE);
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 0);
        assert_eq!(s.append(p, &small, &sh).unwrap().base_offset, 1);
        let late = encode_uncompressed(&[(Some(b"k"), Some(&big))], 9_000, ProducerFields::NONE);
        let lh = validate_produce_batch(&late, 1 << 24, None).unwrap();
        assert_eq!(s.append(p, &late, &lh).unwrap().base_offset, 3);
        s.flush().unwrap();
        let mut out = BytesMut::new();
        s.read(p, 0, 1 << 24, true, &mut out).unwrap().unwrap();
        let got: Vec<(i64, usize)> = batch::split_batches(&out)
            .map(|r| r.map(|(h, bytes)| (h.base_offset, bytes.len())).unwrap())
            .collect();
        assert_eq!(got, vec![(0, b.len()), (1, small.len()), (3, b.len())]);
        assert_eq!(
            &out[21..b.len()],
            &b[21..],
            "chunks reassemble the client's bytes"
        );
        // A limit below the first batch: only with oversized_first.
        out.clear();
        s.read(p, 0, 100, false, &mut out).unwrap().unwrap();
        assert!(out.is_empty());
        s.read(p, 3, 100, true, &mut out).unwrap().unwrap();
        assert_eq!(out.len(), b.len());
        assert_eq!(batch::parse_header(&out).unwrap().base_offset, 3);
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let t = s.topic("big").unwrap();
    let p = &t.partitions[0];
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 0,
            log_end: 4
        }
    );
    // Expiring the first two batches removes their segments whole.
    assert_eq!(s.expire_before(p, 2_000, i64::MAX).unwrap(), 3);
    assert_eq!(s.offsets(p).log_start, 3);
    let left = std::fs::read_dir(dir.path().join("segments").join(p.id.to_string()))
        .unwrap()
        .count();
    assert_eq!(left, 1, "only the last batch's segment remains");
    let mut out = BytesMut::new();
    s.read(p, 3, 1 << 24, true, &mut out).unwrap().unwrap();
    assert_eq!(out.len(), b.len());
}

#[tokio::test]
async fn idle_producers_expire_and_stay_expired_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    {
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        let p = &t.partitions[0];
        for _ in 0..3 {
            let pid = s.new_producer_id(b"User:ANONYMOUS").unwrap();
            let (b, h) = batch(
                1,
                ProducerFields {
                    producer_id: pid,
                    producer_epoch: 0,
                    base_sequence: 0,
                },
            );
            s.append(p, &b, &h).unwrap();
        }
        assert_eq!(s.producer_count(p), 3);
        assert_eq!(
            s.expire_producers(p, 0).unwrap(),
            0,
            "nothing is older than the epoch"
        );
        assert_eq!(s.expire_producers(p, i64::MAX).unwrap(), 3);
        assert_eq!(s.producer_count(p), 0);
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let t = s.topic("t").unwrap();
    assert_eq!(s.producer_count(&t.partitions[0]), 0, "expiry is persisted");
}

#[tokio::test]
async fn consumer_offsets_persist_beside_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    {
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.create_topic("t", 2, BTreeMap::new()).unwrap();
        let (b, h) = batch(3, ProducerFields::NONE);
        s.append(&t.partitions[0], &b, &h).unwrap();
        assert_eq!(s.consumer_offset(&t.partitions[0], "profile").unwrap(), 0);
        let seq = s
            .commit_consumer_offset(&t.partitions[0], "profile", 3)
            .unwrap();
        s.wait_durable(seq).await.unwrap();
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let t = s.topic("t").unwrap();
    assert_eq!(s.consumer_offset(&t.partitions[0], "profile").unwrap(), 3);
    assert_eq!(s.consumer_offset(&t.partitions[1], "profile").unwrap(), 0);
    assert_eq!(s.consumer_offset(&t.partitions[0], "webhook").unwrap(), 0);
    // The offset key does not disturb the log: offsets and reads are unchanged.
    assert_eq!(
        s.offsets(&t.partitions[0]),
        Offsets {
            log_start: 0,
            log_end: 3
        }
    );
    let mut out = BytesMut::new();
    s.read(&t.partitions[0], 0, 1 << 20, true, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(batch::split_batches(&out).count(), 1);
}

#[tokio::test]
async fn appliance_state_commits_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    {
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.create_topic("t", 1, BTreeMap::new()).unwrap();
        let state = vec![
            (b"profile/a".to_vec(), b"1".to_vec()),
            (b"profile/b".to_vec(), b"2".to_vec()),
        ];
        let seq = s
            .commit_with_state(&t.partitions[0], &["profile"], 7, &state)
            .unwrap();
        s.wait_durable(seq).await.unwrap();
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let t = s.topic("t").unwrap();
    assert_eq!(s.consumer_offset(&t.partitions[0], "profile").unwrap(), 7);
    assert_eq!(s.state(b"profile/a").unwrap(), Some(b"1".to_vec()));
    let all = s.state_prefix(b"profile/", 10).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], (b"profile/b".to_vec(), b"2".to_vec()));
    // The state keys never look like a partition's log.
    assert_eq!(
        s.offsets(&t.partitions[0]),
        Offsets {
            log_start: 0,
            log_end: 0
        }
    );
}

#[test]
fn a_data_dir_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(StoreConfig::new(dir.path())).unwrap();
    let second = Store::open(StoreConfig::new(dir.path()));
    assert!(matches!(second, Err(StoreError::InUse(_))), "{second:?}");
    first.close().unwrap();
}

#[tokio::test]
async fn delete_records_inside_a_batch_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(StoreConfig::new(dir.path())).unwrap();
        let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        for ts in [100, 200, 300] {
            let b = encode_uncompressed(
                &[(None, Some(b"x")), (None, Some(b"y"))],
                ts,
                ProducerFields::NONE,
            );
            let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
            s.append(p, &b, &h).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.delete_records_before(p, 3).unwrap(), 3);
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 3,
                log_end: 6
            }
        );
        // The batch holding offset 3 is still read whole; the one before it is gone.
        let mut out = BytesMut::new();
        assert!(s.read(p, 2, 100, true, &mut out).unwrap().is_none());
        assert!(s.read(p, 3, 1 << 20, true, &mut out).unwrap().is_some());
        assert_eq!(s.partition_size(p).unwrap() as usize, out.len());
        s.close().unwrap();
    }
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let p = s.topic("t").unwrap().partitions[0].clone();
    assert_eq!(
        s.offsets(&p),
        Offsets {
            log_start: 3,
            log_end: 6
        }
    );
    // Deleting everything keeps the log end across a restart.
    assert_eq!(s.delete_records_before(&p, 6).unwrap(), 6);
    s.close().unwrap();
    drop(s);
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let p = s.topic("t").unwrap().partitions[0].clone();
    assert_eq!(
        s.offsets(&p),
        Offsets {
            log_start: 6,
            log_end: 6
        }
    );
}

#[tokio::test]
async fn committed_offsets_groups_partitions_and_topic_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let t = s.create_topic("t", 2, BTreeMap::new()).unwrap();
    let c = CommittedOffset {
        offset: 7,
        leader_epoch: 0,
        commit_ms: 42,
        metadata: "m".into(),
    };
    s.commit_offsets("group:g", &[(&t.partitions[0], c.clone())])
        .unwrap();
    assert_eq!(
        s.committed_offset(&t.partitions[0], "group:g").unwrap(),
        Some(c)
    );
    assert_eq!(
        s.committed_offset(&t.partitions[1], "group:g").unwrap(),
        None
    );
    // A pipeline stage's 8-byte commit reads back too.
    s.commit_consumer_offset(&t.partitions[1], "stage", 3)
        .unwrap();
    assert_eq!(
        s.committed_offset(&t.partitions[1], "stage")
            .unwrap()
            .map(|c| c.offset),
        Some(3)
    );
    assert_eq!(s.consumer_offset(&t.partitions[0], "group:g").unwrap(), 7);
    s.put_group_record("g", b"{}").unwrap();
    assert_eq!(
        s.group_records().unwrap(),
        vec![("g".to_string(), b"{}".to_vec())]
    );

    let grown = s.add_partitions("t", 4).unwrap();
    assert_eq!(grown.partitions.len(), 4);
    assert_eq!(grown.partitions[3].index, 3);
    s.delete_topic("t").unwrap();
    assert!(s.topic("t").is_none());
    assert!(matches!(
        s.delete_topic("t"),
        Err(StoreError::UnknownTopic(_))
    ));
    // A new topic of the same name starts empty: its partitions have new ids.
    let t2 = s.create_topic("t", 1, BTreeMap::new()).unwrap();
    assert_eq!(
        s.committed_offset(&t2.partitions[0], "group:g").unwrap(),
        None
    );
    assert_eq!(
        s.offsets(&t2.partitions[0]),
        Offsets {
            log_start: 0,
            log_end: 0
        }
    );
}

#[tokio::test]
async fn size_retention_keeps_the_newest_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
    let p = &t.partitions[0];
    let b = encode_uncompressed(&[(None, Some(&[7u8; 1000][..]))], 1, ProducerFields::NONE);
    let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
    for _ in 0..10 {
        s.append(p, &b, &h).unwrap();
    }
    s.flush().unwrap();
    let one = b.len() as u64;
    // Held at offset 5, size retention stops there.
    assert_eq!(s.expire_over_size(p, 3 * one, 5).unwrap(), 5);
    assert_eq!(s.expire_over_size(p, 3 * one, i64::MAX).unwrap(), 2);
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 7,
            log_end: 10
        }
    );
    assert_eq!(s.partition_size(p).unwrap(), 3 * one);
    // Even a limit below one batch keeps the newest segment.
    assert_eq!(s.expire_over_size(p, 0, i64::MAX).unwrap(), 2);
    assert_eq!(s.offsets(p).log_start, 9);
}

fn seq_batch(n: usize, producer_id: i64, base_sequence: i32) -> (Vec<u8>, BatchHeader) {
    batch(
        n,
        ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        },
    )
}

/// Every batch and the bases of the batches read from `from` on.
fn read_all(s: &Store, p: &Partition, from: i64) -> Vec<i64> {
    let mut out = BytesMut::new();
    s.read(p, from, 1 << 24, true, &mut out).unwrap().unwrap();
    batch::split_batches(&out)
        .map(|r| r.unwrap().0.base_offset)
        .collect()
}

#[tokio::test]
async fn segments_roll_by_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let (probe, _) = batch(3, ProducerFields::NONE);
    // Two batches of 3 records fit a segment; the third rolls a new one.
    let configs = BTreeMap::from([("segment.bytes".to_string(), (2 * probe.len()).to_string())]);
    let producer;
    let part_id;
    {
        let s = Store::open(cfg.clone()).unwrap();
        producer = s.new_producer_id(b"User:ANONYMOUS").unwrap();
        let t = s.create_topic("t", 1, configs).unwrap();
        let p = &t.partitions[0];
        part_id = p.id;
        for i in 0..10 {
            let (b, h) = seq_batch(3, producer, i * 3);
            assert_eq!(b.len(), probe.len());
            assert_eq!(s.append(p, &b, &h).unwrap().base_offset, i64::from(i) * 3);
        }
        s.flush().unwrap();
        let bases: Vec<i64> = (0..10).map(|i| i * 3).collect();
        assert_eq!(read_all(&s, p, 0), bases);
        assert_eq!(read_all(&s, p, 7), bases[2..].to_vec());
        assert_eq!(s.partition_size(p).unwrap(), 10 * probe.len() as u64);
        s.close().unwrap();
    }
    let segs = segment::list_segments(dir.path(), part_id).unwrap();
    assert_eq!(segs, vec![(0, 0), (6, 0), (12, 0), (18, 0), (24, 0)]);
    let s = Store::open(cfg).unwrap();
    assert_eq!(s.open_segments(), 0, "opening the store opens no segment");
    let t = s.topic("t").unwrap();
    let p = &t.partitions[0];
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 0,
            log_end: 30
        }
    );
    // Producer state came from the newest segment: a retry of the last batch is a duplicate,
    // the next sequence appends.
    let (b, h) = seq_batch(3, producer, 27);
    let dup = s.append(p, &b, &h).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 27);
    let (b, h) = seq_batch(3, producer, 30);
    assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 30);
    s.flush().unwrap();
    assert_eq!(read_all(&s, p, 25), vec![24, 27, 30]);
    // Timestamp lookups and size retention by whole segments.
    assert_eq!(s.offset_for_timestamp(p, 0).unwrap(), Some((0, 1_000)));
    assert_eq!(
        s.expire_over_size(p, 3 * probe.len() as u64, i64::MAX)
            .unwrap(),
        24
    );
    assert_eq!(s.offsets(p).log_start, 24);
    assert_eq!(read_all(&s, p, 24), vec![24, 27, 30]);
}

#[tokio::test]
async fn open_segment_databases_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.max_open_segments = 3;
    let s = Store::open(cfg).unwrap();
    let t = s.create_topic("t", 1, segment_per_batch()).unwrap();
    let p = &t.partitions[0];
    for i in 0..12 {
        let (b, h) = batch(1, ProducerFields::NONE);
        assert_eq!(s.append(p, &b, &h).unwrap().base_offset, i);
    }
    s.flush().unwrap();
    for i in 0..12 {
        assert_eq!(read_all(&s, p, i).len(), 12 - i as usize);
        assert!(s.open_segments() <= 3, "{} open", s.open_segments());
    }
}

#[tokio::test]
async fn a_dead_letter_writer_position_survives_rolls_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    {
        let s = Store::open(cfg.clone()).unwrap();
        let src = s.create_topic("src", 1, BTreeMap::new()).unwrap();
        let dlq = s.create_topic("dlq", 1, segment_per_batch()).unwrap();
        let (sp, dp) = (&src.partitions[0], &dlq.partitions[0]);
        assert_eq!(s.writer_position(dp, sp, "contract").unwrap(), None);
        for end in [5, 9] {
            let (b, h) = batch(1, ProducerFields::NONE);
            s.append_and_commit(
                dp,
                &b,
                &h,
                ConsumerCommit {
                    source: sp,
                    names: &["contract"],
                    next_offset: end,
                    state: &[(b"k".to_vec(), end.to_string().into_bytes())],
                },
            )
            .unwrap();
        }
        assert_eq!(s.writer_position(dp, sp, "contract").unwrap(), Some(9));
        assert_eq!(s.consumer_offset(sp, "contract").unwrap(), 9);
        // Another batch rolls the dead-letter partition again: the position moves along.
        let (b, h) = batch(1, ProducerFields::NONE);
        s.append(dp, &b, &h).unwrap();
        s.close().unwrap();
    }
    let s = Store::open(cfg).unwrap();
    let (src, dlq) = (s.topic("src").unwrap(), s.topic("dlq").unwrap());
    assert_eq!(
        s.writer_position(&dlq.partitions[0], &src.partitions[0], "contract")
            .unwrap(),
        Some(9)
    );
    assert_eq!(s.state(b"k").unwrap(), Some(b"9".to_vec()));
}

#[tokio::test]
async fn a_data_dir_of_the_single_database_layout_is_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let producer;
    {
        // What kafkabox wrote before segments: batches and producer state in the meta log tree.
        let s = Store::open(cfg.clone()).unwrap();
        producer = s.new_producer_id(b"User:ANONYMOUS").unwrap();
        let t = s.create_topic("old", 1, BTreeMap::new()).unwrap();
        let pid = t.partitions[0].id;
        let mut entry = ProducerEntry::default();
        for i in 0..4i64 {
            let (b, h) = seq_batch(2, producer, (i * 2) as i32);
            let mut w = sled::Batch::default();
            chunk_writes(&mut w, pid, i * 2, &b).unwrap();
            entry.record(
                0,
                BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    base_offset: i * 2,
                    last_offset_delta: h.last_offset_delta,
                },
                now_ms(),
            );
            w.insert(&producer_key(pid, producer)[..], entry.encode());
            s.inner.log.apply_batch(w).unwrap();
        }
        s.close().unwrap();
    }
    let s = Store::open(cfg.clone()).unwrap();
    let t = s.topic("old").unwrap();
    let p = &t.partitions[0];
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 0,
            log_end: 8
        }
    );
    assert_eq!(read_all(&s, p, 3), vec![2, 4, 6]);
    // The legacy producer state still detects a retry; new batches go to a segment.
    let (b, h) = seq_batch(2, producer, 6);
    assert!(s.append(p, &b, &h).unwrap().duplicate);
    let (b, h) = seq_batch(2, producer, 8);
    assert_eq!(s.append(p, &b, &h).unwrap().base_offset, 8);
    s.flush().unwrap();
    assert_eq!(read_all(&s, p, 5), vec![4, 6, 8]);
    assert_eq!(
        segment::list_segments(dir.path(), p.id).unwrap(),
        vec![(8, 0)]
    );
    assert_eq!(s.max_timestamp(p).unwrap(), Some((0, 1_000)));
    // DeleteRecords goes through the legacy batches, then drops them.
    assert_eq!(s.delete_records_before(p, 5).unwrap(), 5);
    assert_eq!(read_all(&s, p, 5), vec![4, 6, 8]);
    assert_eq!(s.delete_records_before(p, 9).unwrap(), 9);
    assert_eq!(read_all(&s, p, 9), vec![8]);
    s.close().unwrap();
    drop(t);
    drop(s);
    let s = Store::open(cfg).unwrap();
    let t = s.topic("old").unwrap();
    let p = &t.partitions[0];
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 9,
            log_end: 10
        }
    );
    // A retry of the batch written after the upgrade is still a duplicate.
    let (b, h) = seq_batch(2, producer, 8);
    assert!(s.append(p, &b, &h).unwrap().duplicate);
}

/// (offset, key, value) of every record from `from` on.
fn records(s: &Store, p: &Partition, from: i64) -> Vec<(i64, String, Option<String>)> {
    let mut out = BytesMut::new();
    s.read(p, from, 1 << 24, true, &mut out).unwrap().unwrap();
    let text =
        |b: &Option<bytes::Bytes>| b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
    batch::split_batches(&out)
        .flat_map(|r| {
            let (_, bytes) = r.unwrap();
            batch::decode_batch(bytes, 1 << 20).unwrap().1
        })
        .map(|r| (r.offset, text(&r.key).unwrap_or_default(), text(&r.value)))
        .collect()
}

#[tokio::test]
async fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let part_id;
    {
        let s = Store::open(cfg.clone()).unwrap();
        let t = s.create_topic("c", 1, segment_per_batch()).unwrap();
        let p = &t.partitions[0];
        part_id = p.id;
        let batches: [&[batch::KeyValue<'_>]; 5] = [
            &[(Some(b"k1"), Some(b"a")), (Some(b"k2"), Some(b"b"))],
            &[(Some(b"k1"), Some(b"c"))],
            &[(Some(b"k3"), Some(b"x")), (Some(b"k2"), Some(b"d"))],
            &[(Some(b"k2"), None)],
            &[(Some(b"k4"), Some(b"y")), (Some(b"k1"), Some(b"e"))],
        ];
        for (i, recs) in batches.iter().enumerate() {
            let b = encode_uncompressed(recs, 1_000 + i as i64, ProducerFields::NONE);
            let h = validate_produce_batch(&b, 1 << 20, None).unwrap();
            s.append(p, &b, &h).unwrap();
        }
        s.flush().unwrap();
        // Tombstones younger than the cutoff stay; k1's old values go, though its latest is in
        // the newest segment, which is not compacted.
        let done = s.compact(p, 0).unwrap();
        assert_eq!(done.records_removed, 4, "{done:?}");
        let some = |v: &str| Some(v.to_string());
        assert_eq!(
            records(&s, p, 0),
            vec![
                (3, "k3".into(), some("x")),
                (5, "k2".into(), None),
                (6, "k4".into(), some("y")),
                (7, "k1".into(), some("e")),
            ]
        );
        // Reading from an offset that compaction removed starts at the next record.
        assert_eq!(records(&s, p, 1)[0].0, 3);
        assert_eq!(
            s.offsets(p),
            Offsets {
                log_start: 0,
                log_end: 8
            }
        );
        // Old enough tombstones go too; a second pass finds nothing more.
        let done = s.compact(p, i64::MAX).unwrap();
        assert_eq!(done.records_removed, 1);
        assert_eq!(s.compact(p, i64::MAX).unwrap(), Compacted::default());
        assert_eq!(
            records(&s, p, 0),
            vec![
                (3, "k3".into(), some("x")),
                (6, "k4".into(), some("y")),
                (7, "k1".into(), some("e")),
            ]
        );
        s.close().unwrap();
    }
    // One generation per segment is left, and a reopened store reads the compacted log.
    let segs = segment::list_segments(dir.path(), part_id).unwrap();
    let bases: Vec<i64> = segs.iter().map(|(b, _)| *b).collect();
    assert_eq!(bases, vec![0, 2, 3, 5, 6]);
    assert_eq!(segs.iter().filter(|(_, g)| *g == 1).count(), 4, "{segs:?}");
    // A generation left by a crash before its summary named it is removed at load.
    std::fs::create_dir_all(segment::segment_dir(dir.path(), part_id, 3, 9)).unwrap();
    let s = Store::open(cfg).unwrap();
    let t = s.topic("c").unwrap();
    let p = &t.partitions[0];
    assert_eq!(records(&s, p, 0).len(), 3);
    assert!(!segment::segment_dir(dir.path(), part_id, 3, 9).exists());
    assert_eq!(
        s.offsets(p),
        Offsets {
            log_start: 0,
            log_end: 8
        }
    );
}

#[test]
fn producer_ids_are_unguessable_and_bound_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path());
    let (a1, a2, b1);
    {
        let s = Store::open(cfg.clone()).unwrap();
        a1 = s.new_producer_id(b"User:alice").unwrap();
        a2 = s.new_producer_id(b"User:alice").unwrap();
        b1 = s.new_producer_id(b"User:bob").unwrap();
        assert!(a1 > 0 && a2 > 0 && b1 > 0);
        // Not a counter: the next id is not the previous one plus one.
        assert_ne!(a2, a1 + 1);
        assert!(s.producer_id_owned_by(a1, b"User:alice"));
        assert!(s.producer_id_owned_by(b1, b"User:bob"));
        assert!(!s.producer_id_owned_by(a1, b"User:bob"));
        assert!(!s.producer_id_owned_by(b1, b"User:alice"));
        // Ids never issued: a neighbour of a real one, a future sequence number, negatives.
        assert!(!s.producer_id_owned_by(a1 + 1, b"User:alice"));
        assert!(!s.producer_id_owned_by(a1 ^ 1, b"User:alice"));
        assert!(!s.producer_id_owned_by(1 << 40, b"User:alice"));
        assert!(!s.producer_id_owned_by(-1, b"User:alice"));
        s.close().unwrap();
    }
    // The key is the data dir's: the binding holds after a restart.
    let s = Store::open(cfg).unwrap();
    assert!(s.producer_id_owned_by(a2, b"User:alice"));
    assert!(!s.producer_id_owned_by(a2, b"User:bob"));
    let next = s.new_producer_id(b"User:alice").unwrap();
    assert!(![a1, a2, b1].contains(&next));
}
