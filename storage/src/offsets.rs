//! Consumer offsets: Kafka groups' commits and the in-process stages' positions (both under
//! consumer keys of the meta `log` tree), commits that carry appliance state, and the
//! dead-letter stage's append-and-commit with its writer positions.

use std::sync::atomic::Ordering;

use kafkabox_protocol::batch::BatchHeader;

use crate::keys::{app_key, consumer_key, read_u64, writer_key, writer_name};
use crate::{AppendError, Appended, Partition, StateEntry, Store, StoreError};

/// A consumer's committed position on a partition, as stored: the next offset to read, the
/// leader epoch of the record before it, when it was committed and the client's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_ms: i64,
    pub metadata: String,
}

impl CommittedOffset {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20 + self.metadata.len());
        v.extend_from_slice(&(self.offset as u64).to_be_bytes());
        v.extend_from_slice(&self.leader_epoch.to_be_bytes());
        v.extend_from_slice(&self.commit_ms.to_be_bytes());
        v.extend_from_slice(self.metadata.as_bytes());
        v
    }

    /// Reads a stored position: 8 bytes (the pipeline's own commits) or the full form.
    fn decode(v: &[u8]) -> Result<CommittedOffset, StoreError> {
        if v.len() < 8 {
            return Err(StoreError::Corrupt(format!(
                "committed offset of {} bytes",
                v.len()
            )));
        }
        let offset = read_u64(&v[..8])? as i64;
        if v.len() < 20 {
            return Ok(CommittedOffset {
                offset,
                leader_epoch: -1,
                commit_ms: 0,
                metadata: String::new(),
            });
        }
        Ok(CommittedOffset {
            offset,
            leader_epoch: i32::from_be_bytes([v[8], v[9], v[10], v[11]]),
            commit_ms: read_u64(&v[12..20])? as i64,
            metadata: String::from_utf8_lossy(&v[20..]).into_owned(),
        })
    }
}

/// An in-process consumer's offset commit, with the appliance state written alongside it.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerCommit<'a> {
    /// The partition the consumer reads.
    pub source: &'a Partition,
    /// Every consumer name that commits `next_offset` (stages that run as one).
    pub names: &'a [&'a str],
    pub next_offset: i64,
    pub state: &'a [StateEntry],
}

impl Store {
    /// The next offset in-process consumer `name` will handle on `part`: what it last
    /// committed, or 0.
    pub fn consumer_offset(&self, part: &Partition, name: &str) -> Result<i64, StoreError> {
        match self.inner.state.get(consumer_key(part.id, name))? {
            Some(v) => Ok(CommittedOffset::decode(&v)?.offset),
            None => Ok(0),
        }
    }

    /// What consumer (group) `name` last committed on `part`, if anything.
    pub fn committed_offset(
        &self,
        part: &Partition,
        name: &str,
    ) -> Result<Option<CommittedOffset>, StoreError> {
        match self.inner.state.get(consumer_key(part.id, name))? {
            Some(v) => Ok(Some(CommittedOffset::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Commits positions of consumer (group) `name` on several partitions in one atomic
    /// write. Returns the write sequence number for [`Store::wait_durable`].
    pub fn commit_offsets(
        &self,
        name: &str,
        entries: &[(&Partition, CommittedOffset)],
    ) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (part, c) in entries {
            b.insert(consumer_key(part.id, name), c.encode());
        }
        self.inner.state.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Forgets the positions of consumer (group) `name` on `parts`, atomically.
    pub fn delete_offsets(&self, name: &str, parts: &[&Partition]) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for part in parts {
            b.remove(consumer_key(part.id, name));
        }
        self.inner.state.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Commits `next_offset` for in-process consumer `name` on `part`. Durable with the next
    /// flush; returns the write sequence number for [`Store::wait_durable`].
    pub fn commit_consumer_offset(
        &self,
        part: &Partition,
        name: &str,
        next_offset: i64,
    ) -> Result<u64, StoreError> {
        self.inner.state.insert(
            consumer_key(part.id, name),
            &(next_offset as u64).to_be_bytes(),
        )?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Appends a broker-made batch (not idempotent: no producer id) to `part`, then commits
    /// `next_offset` for consumers `names` on `source` and writes the appliance `state` entries
    /// in one atomic write. The batch is stored with the writer position (`source`, first
    /// name) -> `next_offset` and flushed before the commit is written, so after a crash
    /// either both are there, or the batch is and [`Store::writer_position`] tells the re-run
    /// pass which of its records are already stored: the dead-letter stage never writes a
    /// record twice or forgets one.
    pub fn append_and_commit(
        &self,
        part: &Partition,
        bytes: &[u8],
        h: &BatchHeader,
        commit: ConsumerCommit<'_>,
    ) -> Result<Appended, AppendError> {
        let ConsumerCommit {
            source,
            names,
            next_offset,
            state,
        } = commit;
        if h.is_idempotent() {
            return Err(StoreError::Corrupt(
                "append_and_commit takes non-idempotent batches".into(),
            )
            .into());
        }
        let writer = writer_name(source.id, names.first().copied().unwrap_or_default());
        let mut st = self.part_state(part)?;
        let base_offset = st.next_offset;
        let position = vec![(
            writer_key(part.id, &writer),
            (next_offset as u64).to_be_bytes().to_vec(),
        )];
        self.write_batch(part, &mut st, bytes, h, &position)?;
        st.writers.insert(writer, next_offset);
        let seg = st.segments.last().cloned();
        // The log end moves on first: a failed flush below must not leave the next append
        // at the same base offset (the batch is stored; its pass is retried and skips what
        // the writer position covers).
        let appended = self.appended(st, base_offset, h);
        // The dead letters are durable before the commit that skips their source records.
        if let Some(seg) = seg {
            self.inner.open_segments.get(&seg)?.flush()?;
        }
        self.commit_with_state(source, names, next_offset, state)?;
        Ok(appended)
    }

    /// Where writer (`source`, `stage`) stands in `part`: the source offset up to which its
    /// appends are stored, if it ever appended.
    pub fn writer_position(
        &self,
        part: &Partition,
        source: &Partition,
        stage: &str,
    ) -> Result<Option<i64>, StoreError> {
        let st = self.part_state(part)?;
        Ok(st.writers.get(&writer_name(source.id, stage)).copied())
    }

    /// Commits `next_offset` for consumers `names` on `part` together with appliance-state
    /// writes (`key`, `value`), in one atomic write: a crash keeps all or none.
    pub fn commit_with_state(
        &self,
        part: &Partition,
        names: &[&str],
        next_offset: i64,
        state: &[StateEntry],
    ) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in state {
            b.insert(app_key(k), v.as_slice());
        }
        for name in names {
            b.insert(
                consumer_key(part.id, name),
                &(next_offset as u64).to_be_bytes(),
            );
        }
        self.inner.state.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::BytesMut;
    use kafkabox_protocol::batch::{self, ProducerFields};

    use super::*;
    use crate::test_support::{batch, segment_per_batch};
    use crate::{Offsets, StoreConfig};

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
}
