//! The consume loop of `kafkabox handle`: records in batches grouped by partition, each
//! partition's events to its chain or (re-keyed events) to the profiles, and up to
//! `MAX_IN_FLIGHT` batches pipelined: a batch's writes (re-keyed events, changelog records,
//! dead letters) are awaited while the next batch is handled, and the offsets are stored batch
//! by batch, in order, once all its writes are acknowledged. With `exactly_once_v2`, each
//! batch is one transaction instead: its writes and offsets commit together before the next
//! batch, and a batch whose transaction is aborted is read again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::cache_key;
use super::{
    InFlight, Runner, BATCH_RECORDS, BATCH_WAIT, IN_FLIGHT_IDLE, MAX_IN_FLIGHT, TXN_TIMEOUT,
};

/// `exactly_once_v2`: how long without records before the offsets passed markers are
/// committed.
const IDLE_COMMIT: Duration = Duration::from_millis(500);
use crate::pipeline::Event;

/// A consumed record as the handlers take it.
fn event_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Event {
    Event {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(bytes::Bytes::copy_from_slice),
        value: m.payload().map(bytes::Bytes::copy_from_slice),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            bytes::Bytes::copy_from_slice(h.key.as_bytes()),
                            h.value.map(bytes::Bytes::copy_from_slice),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        decode_error: None,
    }
}

impl Runner {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits for the oldest batch in flight: its writes acknowledged, its profiles into the
    /// local cache, its offsets stored.
    async fn complete_oldest(&mut self, consumer: &StreamConsumer) -> Result<()> {
        let Some(b) = self.inflight.pop_front() else {
            return Ok(());
        };
        acknowledged(b.deliveries, "a re-keyed, changelog or dead-letter write").await?;
        self.cache_profiles(b.seq, &b.profiles).await?;
        // Only once every re-keyed, changelog and dead-letter record of the batch (and of
        // every batch before it) is acknowledged.
        if let Err(e) = consumer.store_offsets(&b.commit) {
            // A rebalance took the partitions: their next owner handles the events again
            // and the profiles' applied offsets keep it from counting them twice.
            tracing::warn!(error = %e, "cannot store the batch's offsets (a rebalance?)");
        }
        Ok(())
    }

    /// The changelog has a batch's profiles: now the local cache.
    async fn cache_profiles(&mut self, seq: u64, profiles: &[(String, Vec<u8>)]) -> Result<()> {
        if profiles.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (customer, json) in profiles {
            batch.insert(cache_key(customer), json.as_slice());
        }
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || cache.apply_batch(batch))
            .await
            .context("cache task")??;
        for (customer, _) in profiles {
            if self
                .unacknowledged
                .get(customer)
                .is_some_and(|(s, _)| *s == seq)
            {
                self.unacknowledged.remove(customer);
            }
        }
        Ok(())
    }

    /// `exactly_once_v2`, idle: the offsets of partitions whose position moved past the last
    /// committed one, committed (asynchronously, outside a transaction: nothing is pending).
    /// Everything delivered is handled and committed by then, so what the position passed is
    /// only markers: a transaction's marker that came after its records' batch would otherwise
    /// stay as lag 1 on the group.
    fn commit_passed_markers(&mut self, consumer: &StreamConsumer) {
        use rdkafka::consumer::CommitMode;
        let Ok(position) = consumer.position() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in position.elements() {
            let Offset::Offset(at) = e.offset() else {
                continue;
            };
            let key = (e.topic().to_string(), e.partition());
            if self.committed.get(&key).is_some_and(|c| at > *c)
                && tpl
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(at))
                    .is_ok()
            {
                self.committed.insert(key, at);
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "committing past markers");
            }
        }
    }

    /// `exactly_once_v2`: commits the batch's transaction with its offsets. When the
    /// transaction must be aborted (a rebalance fenced this member's generation, a write was
    /// refused), it is, the profiles it changed are forgotten here and its partitions are
    /// read again from `rewind`; a fatal error (this process fenced by a newer instance) ends
    /// the process.
    async fn commit_batch(
        &mut self,
        consumer: &StreamConsumer,
        b: InFlight,
        rewind: TopicPartitionList,
        metadata: rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<()> {
        use rdkafka::producer::Producer;
        // Past the batch's last record, and past the markers after it that the consumer has
        // passed (read_committed returns a transaction's records with its marker): committed
        // there, the group's lag reaches 0 on a transactional topic.
        let offsets = b.commit.clone();
        if let Ok(position) = consumer.position() {
            for e in position.elements() {
                let (Offset::Offset(at), Some(mut c)) =
                    (e.offset(), offsets.find_partition(e.topic(), e.partition()))
                else {
                    continue;
                };
                if matches!(c.offset(), Offset::Offset(o) if at > o) {
                    c.set_offset(Offset::Offset(at)).context("commit offsets")?;
                }
            }
        }
        let producer = self.producer.clone();
        let done: Vec<((String, i32), i64)> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect();
        // Delivered first: the producer serves its delivery reports on its own thread, and a
        // commit left to flush them itself waits in that thread's 100 ms poll steps.
        let delivered =
            acknowledged(b.deliveries, "a re-keyed, changelog or dead-letter write").await;
        let abort_why = match delivered {
            Err(e) => Some(e.to_string()),
            Ok(()) => {
                let committed = tokio::task::spawn_blocking(move || {
                    producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)?;
                    producer.commit_transaction(TXN_TIMEOUT)
                })
                .await
                .context("transaction task")?;
                match committed {
                    Ok(()) => None,
                    Err(rdkafka::error::KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                        Some(e.to_string())
                    }
                    Err(e) => bail!(
                        "the batch's transaction failed: {e} (another process with this data dir's transactional id fenced this one, or the cluster refuses its transactions)"
                    ),
                }
            }
        };
        let Some(why) = abort_why else {
            self.committed.extend(done);
            return self.cache_profiles(b.seq, &b.profiles).await;
        };
        tracing::warn!(error = %why, "the batch's transaction is aborted; its events are handled again");
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.abort_transaction(TXN_TIMEOUT))
            .await
            .context("transaction task")?
            .context("aborting the batch's transaction")?;
        for (customer, _) in &b.profiles {
            self.unacknowledged.remove(customer);
        }
        self.hot.retain(|_| false);
        // Partitions this member lost meanwhile cannot be rewound: their new owner reads them
        // from the committed offsets. One still assigned that cannot be would be committed
        // past records never handled: the process stops instead.
        let assigned: HashSet<(String, i32)> = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let sought = consumer
            .seek_partitions(rewind, Duration::ZERO)
            .context("rewinding the aborted batch's partitions")?;
        for e in sought.elements() {
            if let Err(err) = e.error() {
                if assigned.contains(&(e.topic().to_string(), e.partition())) {
                    bail!(
                        "cannot rewind {}/{} after the batch's transaction was aborted: {err}; stopping, so that its records are not skipped",
                        e.topic(),
                        e.partition()
                    );
                }
            }
        }
        Ok(())
    }

    /// Completes every batch in flight.
    async fn drain(&mut self, consumer: &StreamConsumer) -> Result<()> {
        while !self.inflight.is_empty() {
            self.complete_oldest(consumer).await?;
        }
        Ok(())
    }

    /// Consumes until shutdown, then completes what is in flight.
    pub(super) async fn run(&mut self, consumer: &StreamConsumer) -> Result<()> {
        let r = self.batches(consumer).await;
        // What is in flight is finished (and its offsets stored) before the consumer leaves.
        let drained = self.drain(consumer).await;
        r.and(drained)
    }

    async fn batches(&mut self, consumer: &StreamConsumer) -> Result<()> {
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.stopping() {
                return Ok(());
            }
            if self.inflight.len() >= MAX_IN_FLIGHT {
                self.complete_oldest(consumer).await?;
            }
            // The assignment may have changed since the last batch: partitions not assigned
            // now are restored again when they come back.
            if let Ok(a) = consumer.assignment() {
                let now: HashSet<(String, i32)> = a
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.restored.retain(|k| now.contains(k));
            }
            let first = if self.inflight.is_empty() && self.exactly_once {
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    m = tokio::time::timeout(IDLE_COMMIT, consumer.recv()) => match m {
                        Ok(m) => m,
                        Err(_) => {
                            self.commit_passed_markers(consumer);
                            continue;
                        }
                    },
                }
            } else if self.inflight.is_empty() {
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    m = consumer.recv() => m,
                }
            } else {
                // Nothing new for a moment: finish what is in flight meanwhile.
                match tokio::time::timeout(IN_FLIGHT_IDLE, consumer.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.complete_oldest(consumer).await?;
                        continue;
                    }
                }
            };
            let mut batch = Vec::new();
            // exactly_once_v2: the group generation the batch is read under, taken before the
            // rest of it is (receiving may apply a rebalance): if partitions move meanwhile,
            // the commit is refused and the batch aborted, never committed for another owner.
            let mut metadata = None;
            match first {
                Ok(m) => {
                    batch.push(event_of(&m));
                    if self.exactly_once {
                        metadata = Some(
                            consumer
                                .group_metadata()
                                .context("the consumer has no group metadata")?,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH_RECORDS {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(event_of(&m)),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut by_partition: BTreeMap<(String, i32), Vec<Event>> = BTreeMap::new();
            for e in batch {
                by_partition
                    .entry((e.topic.clone(), e.partition))
                    .or_default()
                    .push(e);
            }
            // Re-keyed partitions just given to this process get their profiles first, before
            // any event of the batch is applied (and outside its transaction: a long restore
            // must not run down the transaction's timeout).
            for (topic, partition) in by_partition.keys() {
                if self.repartitions.contains_key(topic)
                    && !self.restored.contains(&(topic.clone(), *partition))
                {
                    // This process may have written that changelog partition before.
                    self.drain(consumer).await?;
                    self.restore(*partition).await?;
                    self.restored.insert((topic.clone(), *partition));
                }
            }
            let mut commit = TopicPartitionList::new();
            // Where each partition's events start: an aborted batch is read again from there.
            let mut rewind = TopicPartitionList::new();
            if self.exactly_once {
                use rdkafka::producer::Producer;
                self.producer
                    .begin_transaction()
                    .context("begin_transaction")?;
                for ((topic, partition), events) in &by_partition {
                    if let Some(first) = events.first() {
                        rewind
                            .add_partition_offset(topic, *partition, Offset::Offset(first.offset))
                            .context("rewind offsets")?;
                    }
                }
            }
            tracing::debug!(partitions = by_partition.len(), "batch");
            // Every partition's writes go out before the batch waits for their
            // acknowledgements, once.
            let mut deliveries = Vec::new();
            let mut cached: Vec<(String, Vec<u8>)> = Vec::new();
            for ((topic, partition), events) in by_partition {
                tracing::debug!(%topic, partition, events = events.len(), first = events.first().map(|e| e.offset), "handling");
                let next = events.last().map_or(0, |e| e.offset + 1);
                if self.repartitions.contains_key(&topic) {
                    let (sent, writes) = self.profile(partition, events)?;
                    deliveries.extend(sent);
                    cached.extend(writes);
                } else {
                    deliveries.extend(self.handle(&topic, partition, events).await?);
                }
                commit
                    .add_partition_offset(&topic, partition, Offset::Offset(next))
                    .context("commit offsets")?;
            }
            // The next batches are handled while this one's acknowledgements come back;
            // offsets are stored batch by batch, in order.
            self.seq += 1;
            for (customer, json) in &cached {
                self.unacknowledged
                    .insert(customer.clone(), (self.seq, json.clone()));
            }
            let batch = InFlight {
                seq: self.seq,
                deliveries,
                profiles: cached,
                commit,
            };
            if let Some(metadata) = metadata {
                self.commit_batch(consumer, batch, rewind, metadata).await?;
            } else {
                self.inflight.push_back(batch);
            }
        }
    }
}

/// Waits for every acknowledgement; the first failure is the error.
async fn acknowledged(
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    what: &str,
) -> Result<()> {
    for mut f in deliveries {
        let r = loop {
            match tokio::time::timeout(Duration::from_secs(10), &mut f).await {
                Ok(r) => break r,
                Err(_) => {
                    tracing::warn!("{what}: no acknowledgement from the cluster for 10 s; waiting")
                }
            }
        };
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("{what} failed: {e}"),
            Err(_) => bail!("{what} was cancelled"),
        }
    }
    Ok(())
}
