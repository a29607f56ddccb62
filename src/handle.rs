//! `kafkabox handle`: the handler chain of `serve` (the customer-events contract with its
//! dead-letter topic, profiles, webhook, exec, log and embedded [`Handler`]s) as a consumer
//! group on an external Kafka cluster, through librdkafka. More `kafkabox handle` processes
//! with the same group share the partitions.
//!
//! Profiles follow their partition the way Kafka Streams' state stores do: every profile
//! change is written to the compacted changelog topic `<group>-profiles-changelog`, to the
//! partition of the event that changed it; a partition's profiles are restored from it before
//! its first event is handled (the local sled copy is a cache, read from its checkpoint on).
//! Each profile keeps the last offset it applied per source partition, and changelog records
//! are acknowledged before the group's offsets are committed, so an event replayed after a
//! kill -9 or a rebalance counts once: the changelog holds it or the event is handled again.
//! A restore skips a changelog record that is behind the profile it already holds (a late
//! write of a process that had lost the partition), so such a write never moves it back.
//! Dead letters go to the cluster's `<topic>.dlq` with an idempotent producer (at least once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::contract::Contract;
use crate::pipeline::{Event, Handler, HandlerError};
use crate::profile::{Profile, Valid};
use crate::Config;

/// Most records handled per batch (one commit each).
const BATCH_RECORDS: usize = 2000;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Batches whose writes may be awaiting acknowledgement while the next is handled.
const MAX_IN_FLIGHT: usize = 4;
/// With batches in flight, how long to wait for a new record before finishing them.
const IN_FLIGHT_IDLE: Duration = Duration::from_millis(2);
/// Retry backoff of a handler's transient failures: first and cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The changelog topic of `group`'s profiles.
pub fn changelog_topic(group: &str) -> String {
    format!("{group}-profiles-changelog")
}

/// The topic `group` re-keys `topic`'s valid events into by customer id, so that one
/// customer's events reach one partition (and one process) whatever key their producer used.
pub fn repartition_topic(group: &str, topic: &str) -> String {
    format!("{group}-{topic}-repartition")
}

/// Headers of a re-keyed event: where it was first stored.
const SOURCE_TOPIC: &str = "kafkabox.source.topic";
const SOURCE_PARTITION: &str = "kafkabox.source.partition";
const SOURCE_OFFSET: &str = "kafkabox.source.offset";

/// What runs over one topic.
struct Chain {
    contract: Option<Arc<Contract>>,
    profiles: bool,
    handlers: Vec<Arc<dyn Handler>>,
}

/// Builds and runs a handler process.
pub struct HandleBuilder {
    config: Config,
    bootstrap: String,
    group: String,
    data_dir: Option<PathBuf>,
    handlers: Vec<(String, Arc<dyn Handler>)>,
}

impl HandleBuilder {
    /// The handlers of `config` (`customer.events.handlers`, `handlers.<topic>`, the contract)
    /// over the cluster at `bootstrap`, as consumer group `group`.
    pub fn new(config: Config, bootstrap: &str, group: &str) -> HandleBuilder {
        HandleBuilder {
            config,
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            data_dir: None,
            handlers: Vec::new(),
        }
    }

    /// Where the local profile cache lives (default `data.dir`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// An embedded handler over `topic`'s (valid) records.
    pub fn handler(mut self, topic: &str, handler: impl Handler) -> Self {
        self.handlers.push((topic.to_string(), Arc::new(handler)));
        self
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.config.kafka_client {
            c.set(k, v);
        }
        c
    }

    fn chains(&self) -> Result<BTreeMap<String, Chain>> {
        let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
        if self.config.customer_contract_on {
            let contract = Arc::new(self.config.customer_contract()?);
            chains.insert(
                crate::appliance::CUSTOMER_EVENTS.to_string(),
                Chain {
                    contract: Some(contract),
                    profiles: false,
                    handlers: Vec::new(),
                },
            );
        }
        for (topic, names) in &self.config.handlers {
            for name in names {
                let chain = chains.entry(topic.clone()).or_insert_with(|| Chain {
                    contract: None,
                    profiles: false,
                    handlers: Vec::new(),
                });
                match name.as_str() {
                    "profile" => chain.profiles = true,
                    "webhook" => {
                        let url = self.config.webhook_url.as_deref().with_context(|| {
                            format!("handlers for {topic} name webhook but webhook.url is not set")
                        })?;
                        chain
                            .handlers
                            .push(Arc::new(crate::handlers::webhook::Webhook::new(
                                "webhook", url,
                            )?));
                    }
                    "exec" => {
                        let cmd = self.config.exec_command.as_deref().with_context(|| {
                            format!("handlers for {topic} name exec but exec.command is not set")
                        })?;
                        let argv = vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
                        chain
                            .handlers
                            .push(Arc::new(crate::handlers::exec::Exec::new("exec", argv)?));
                    }
                    "log" => chain
                        .handlers
                        .push(Arc::new(crate::handlers::log::Log::new("log"))),
                    other => bail!("unknown handler '{other}'"),
                }
            }
        }
        for (topic, h) in &self.handlers {
            chains
                .entry(topic.clone())
                .or_insert_with(|| Chain {
                    contract: None,
                    profiles: false,
                    handlers: Vec::new(),
                })
                .handlers
                .push(h.clone());
        }
        Ok(chains)
    }

    /// Runs until `shutdown` flips: the batch in hand is finished and committed, then the
    /// consumer leaves the group.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let chains = self.chains()?;
        let topics: Vec<String> = chains.keys().cloned().collect();
        let repartitions: HashMap<String, String> = chains
            .iter()
            .filter(|(_, c)| c.profiles)
            .map(|(t, _)| (repartition_topic(&self.group, t), t.clone()))
            .collect();
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.clone());
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let cache = tokio::task::spawn_blocking({
            let path = data_dir.join("handle-cache");
            move || sled::open(&path).with_context(|| format!("cannot open {}", path.display()))
        })
        .await??;
        let changelog = changelog_topic(&self.group);
        let partitions = self
            .prepare_topics(&topics, &chains, &repartitions, &changelog)
            .await?;
        let producer: FutureProducer = self
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .context("Kafka producer")?;
        let consumer: StreamConsumer = self
            .client()
            .set("group.id", &self.group)
            // Offsets are stored once a batch's records are acknowledged, and librdkafka commits
            // the stored ones every second, before a rebalance takes partitions away, and at
            // close (a synchronous commit on the polling task could wait on a rebalance that
            // waits on the poll).
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .context("Kafka consumer")?;
        let names: Vec<&str> = topics
            .iter()
            .chain(repartitions.keys())
            .map(String::as_str)
            .collect();
        consumer.subscribe(&names).context("subscribe")?;
        tracing::info!(
            bootstrap = %self.bootstrap,
            group = %self.group,
            topics = ?topics,
            changelog = %changelog,
            "kafkabox handle: consuming"
        );
        let mut runner = Runner {
            builder: self,
            chains,
            cache,
            changelog,
            repartitions,
            partitions,
            producer,
            restored: HashSet::new(),
            shutdown,
            handled: 0,
            inflight: std::collections::VecDeque::new(),
            unacknowledged: HashMap::new(),
            seq: 0,
            hot: HotProfiles::default(),
        };
        let r = runner.run(&consumer).await;
        // Leaves the group and commits the stored offsets, within a bound and off the
        // runtime's threads (rdkafka's own drop waits for the close without a deadline).
        consumer.unsubscribe();
        crate::clients::close_async(consumer, "group consumer", crate::clients::CLOSE_BOUND).await;
        let handled = runner.handled;
        crate::clients::close_async(runner, "producer", crate::clients::CLOSE_BOUND).await;
        r?;
        tracing::info!(handled, "kafkabox handle: stopped");
        Ok(())
    }

    /// Creates what is missing: the source topics (num.partitions), their `.dlq` topics and
    /// the compacted changelog. Returns each source topic's partition count.
    async fn prepare_topics(
        &self,
        topics: &[String],
        chains: &BTreeMap<String, Chain>,
        repartitions: &HashMap<String, String>,
        changelog: &str,
    ) -> Result<HashMap<String, i32>> {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().context("Kafka admin client")?;
        let client = self.client();
        let bootstrap = self.bootstrap.clone();
        let existing = tokio::task::spawn_blocking(move || -> Result<HashMap<String, i32>> {
            let c: BaseConsumer = client.create().context("Kafka client")?;
            let md = c
                .fetch_metadata(None, Duration::from_secs(30))
                .with_context(|| format!("cannot reach {bootstrap}"))?;
            Ok(md
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                .collect())
        })
        .await??;
        let mut wanted: Vec<(String, i32, bool)> = Vec::new();
        let mut source: HashMap<String, i32> = HashMap::new();
        for t in topics {
            let n = existing
                .get(t)
                .copied()
                .unwrap_or(self.config.num_partitions as i32);
            source.insert(t.clone(), n);
            if !existing.contains_key(t) {
                wanted.push((t.clone(), n, false));
            }
            let dlq = crate::appliance::dead_letter_topic(t);
            let needs_dlq = chains[t].contract.is_some() || !chains[t].handlers.is_empty();
            if needs_dlq && !existing.contains_key(&dlq) {
                wanted.push((dlq, n, false));
            }
        }
        // Re-keyed events and the changelog: as many partitions as the largest handled topic.
        let changelog_partitions = source.values().copied().max().unwrap_or(1);
        for r in repartitions.keys() {
            match existing.get(r) {
                Some(n) => {
                    source.insert(r.clone(), *n);
                }
                None => {
                    source.insert(r.clone(), changelog_partitions);
                    wanted.push((r.clone(), changelog_partitions, false));
                }
            }
        }
        let changelog_partitions = repartitions
            .keys()
            .filter_map(|r| source.get(r))
            .copied()
            .max()
            .unwrap_or(changelog_partitions);
        match existing.get(changelog) {
            Some(n) if *n < changelog_partitions => bail!(
                "{changelog} has {n} partitions, fewer than the {changelog_partitions} of the re-keyed events it keeps profiles of: add partitions to it"
            ),
            Some(_) => {}
            None => wanted.push((changelog.to_string(), changelog_partitions, true)),
        }
        if !wanted.is_empty() {
            let new: Vec<NewTopic<'_>> = wanted
                .iter()
                .map(|(name, n, compact)| {
                    let t = NewTopic::new(name, *n, TopicReplication::Fixed(-1));
                    if *compact {
                        t.set("cleanup.policy", "compact")
                    } else {
                        t
                    }
                })
                .collect();
            let results = admin
                .create_topics(&new, &AdminOptions::new())
                .await
                .context("CreateTopics")?;
            for r in results {
                match r {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %name, "created meanwhile")
                    }
                    Err((name, e)) => bail!("cannot create topic {name}: {e}"),
                }
            }
        }
        Ok(source)
    }
}

/// The running process.
struct Runner {
    builder: HandleBuilder,
    chains: BTreeMap<String, Chain>,
    cache: sled::Db,
    changelog: String,
    /// Repartition topic -> the topic whose events it re-keys.
    repartitions: HashMap<String, String>,
    partitions: HashMap<String, i32>,
    producer: FutureProducer,
    /// Partitions whose profiles were restored since they were last assigned.
    restored: HashSet<(String, i32)>,
    shutdown: watch::Receiver<bool>,
    handled: u64,
    /// Batches whose writes are sent, oldest first (at most [`MAX_IN_FLIGHT`]).
    inflight: std::collections::VecDeque<InFlight>,
    /// Profiles changed by batches in flight (batch number, JSON): newer than the cache.
    unacknowledged: HashMap<String, (u64, Vec<u8>)>,
    /// Number of the last batch sent.
    seq: u64,
    /// The profiles last changed here, typed (the changelog and cache hold JSON).
    hot: HotProfiles,
}

/// Most bytes (of their JSON) of profiles kept typed in memory.
const HOT_BYTES: usize = 32 * 1024 * 1024;

/// Profiles kept typed in memory, so a batch does not read back and parse the JSON of every
/// profile it changes. Bounded by [`HOT_BYTES`]; a profile dropped is read from the cache
/// (or the changes in flight) again.
#[derive(Default)]
struct HotProfiles {
    /// customer -> (re-keyed partition, profile, bytes of its JSON)
    map: HashMap<String, (i32, Profile, usize)>,
    bytes: usize,
}

impl HotProfiles {
    fn take(&mut self, customer: &str) -> Option<Profile> {
        let (_, p, size) = self.map.remove(customer)?;
        self.bytes = self.bytes.saturating_sub(size);
        Some(p)
    }

    fn put(&mut self, customer: &str, partition: i32, p: Profile, size: usize) {
        if let Some((_, _, old)) = self.map.insert(customer.to_string(), (partition, p, size)) {
            self.bytes = self.bytes.saturating_sub(old);
        }
        self.bytes += size;
    }

    /// Drops half when over the bound.
    fn bound(&mut self) {
        if self.bytes <= HOT_BYTES {
            return;
        }
        let victims: Vec<String> = self
            .map
            .keys()
            .take(self.map.len() / 2 + 1)
            .cloned()
            .collect();
        for v in victims {
            self.take(&v);
            if self.bytes <= HOT_BYTES / 2 {
                break;
            }
        }
    }

    fn forget_partition(&mut self, partition: i32) {
        self.map.retain(|_, (p, ..)| *p != partition);
        self.bytes = self.map.values().map(|(.., s)| *s).sum();
    }
}

/// A batch whose writes are sent and not yet all acknowledged.
struct InFlight {
    seq: u64,
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    /// (customer, profile JSON) for the local cache once the changelog has them.
    profiles: Vec<(String, Vec<u8>)>,
    /// The offsets to store then.
    commit: TopicPartitionList,
}

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

/// Changelog deliveries, and (customer, profile JSON) for the local cache once they are
/// acknowledged.
type ProfileWrites = (
    Vec<rdkafka::producer::DeliveryFuture>,
    Vec<(String, Vec<u8>)>,
);

/// Whether changelog value `incoming` is an older state of the profile `current`: every
/// source offset it applied is at or before `current`'s, and they differ. Successive states
/// of a profile only move its offsets forward, so such a record is a late write of a process
/// that lost the partition (a "zombie": its send was in flight when another took over) and
/// must not move the profile back.
fn behind(incoming: &[u8], current: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Applied {
        #[serde(default)]
        applied: BTreeMap<String, i64>,
    }
    let (Ok(i), Ok(c)) = (
        serde_json::from_slice::<Applied>(incoming),
        serde_json::from_slice::<Applied>(current),
    ) else {
        return false;
    };
    i.applied != c.applied
        && i.applied
            .iter()
            .all(|(k, o)| c.applied.get(k).is_some_and(|co| co >= o))
}

/// The headers of `e` for a record produced from it (dead letters, forwarded records).
pub(crate) fn event_headers(e: &Event) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &e.headers {
        headers = headers.insert(Header {
            key: &String::from_utf8_lossy(k),
            value: v.as_deref(),
        });
    }
    headers
}

/// Key of a profile in the local cache.
fn profile_key(customer: &str) -> Vec<u8> {
    format!("p/{customer}").into_bytes()
}

/// Key of a changelog partition's checkpoint (the next changelog offset to restore).
fn checkpoint_key(partition: i32) -> Vec<u8> {
    format!("c/{partition}").into_bytes()
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
        // The changelog has the profiles: now the local cache.
        if !b.profiles.is_empty() {
            let mut batch = sled::Batch::default();
            for (customer, json) in &b.profiles {
                batch.insert(profile_key(customer), json.as_slice());
            }
            let cache = self.cache.clone();
            tokio::task::spawn_blocking(move || cache.apply_batch(batch))
                .await
                .context("cache task")??;
            for (customer, _) in &b.profiles {
                if self
                    .unacknowledged
                    .get(customer)
                    .is_some_and(|(seq, _)| *seq == b.seq)
                {
                    self.unacknowledged.remove(customer);
                }
            }
        }
        // Only once every re-keyed, changelog and dead-letter record of the batch (and of
        // every batch before it) is acknowledged.
        if let Err(e) = consumer.store_offsets(&b.commit) {
            // A rebalance took the partitions: their next owner handles the events again
            // and the profiles' applied offsets keep it from counting them twice.
            tracing::warn!(error = %e, "cannot store the batch's offsets (a rebalance?)");
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

    async fn run(&mut self, consumer: &StreamConsumer) -> Result<()> {
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
            let first = if self.inflight.is_empty() {
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
            match first {
                Ok(m) => batch.push(event_of(&m)),
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
            let mut commit = TopicPartitionList::new();
            tracing::debug!(partitions = by_partition.len(), "batch");
            // Every partition's writes go out before the batch waits for their
            // acknowledgements, once.
            let mut deliveries = Vec::new();
            let mut cached: Vec<(String, Vec<u8>)> = Vec::new();
            for ((topic, partition), events) in by_partition {
                tracing::debug!(%topic, partition, events = events.len(), first = events.first().map(|e| e.offset), "handling");
                let next = events.last().map_or(0, |e| e.offset + 1);
                if self.repartitions.contains_key(&topic) {
                    if !self.restored.contains(&(topic.clone(), partition)) {
                        // This process may have written that changelog partition before.
                        self.drain(consumer).await?;
                        self.restore(partition).await?;
                        self.restored.insert((topic.clone(), partition));
                    }
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
            self.inflight.push_back(InFlight {
                seq: self.seq,
                deliveries,
                profiles: cached,
                commit,
            });
        }
    }

    /// Reads changelog partition `partition` from the local checkpoint to its end into the
    /// local cache.
    async fn restore(&mut self, partition: i32) -> Result<()> {
        tracing::debug!(partition, "restoring");
        // Another process may have changed them while this one did not own the partition.
        self.hot.forget_partition(partition);
        let started = std::time::Instant::now();
        let cache = self.cache.clone();
        let client = self.builder.client();
        let changelog = self.changelog.clone();
        let restored = tokio::task::spawn_blocking(move || -> Result<u64> {
            let from = cache
                .get(checkpoint_key(partition))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(i64::from_be_bytes)
                .unwrap_or(0);
            let consumer: BaseConsumer = client
                .clone()
                .set("group.id", "kafkabox-handle-restore")
                .set("enable.auto.commit", "false")
                .create()
                .context("changelog consumer")?;
            let consumer = crate::clients::Closing::new(consumer, "changelog consumer");
            let (low, high) = consumer
                .fetch_watermarks(&changelog, partition, Duration::from_secs(30))
                .with_context(|| format!("{changelog}/{partition}: watermarks"))?;
            let start = from.max(low);
            let mut n = 0u64;
            let mut stale = 0u64;
            if start < high {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&changelog, partition, Offset::Offset(start))?;
                consumer.assign(&tpl)?;
                let mut at = start;
                let mut quiet = std::time::Instant::now();
                let deadline = std::time::Instant::now() + Duration::from_secs(600);
                while at < high {
                    if std::time::Instant::now() > deadline {
                        bail!("{changelog}/{partition}: restore did not reach offset {high} within 10 minutes");
                    }
                    let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                        if quiet.elapsed() > Duration::from_secs(10) {
                            tracing::warn!(partition, at, high, "restoring profiles: nothing read from the changelog for 10 s");
                            quiet = std::time::Instant::now();
                        }
                        continue;
                    };
                    quiet = std::time::Instant::now();
                    let m = m.with_context(|| format!("reading {changelog}/{partition}"))?;
                    let mut batch = sled::Batch::default();
                    if let Some(key) = m.key() {
                        let key = profile_key(&String::from_utf8_lossy(key));
                        match m.payload() {
                            Some(v) => {
                                let current = cache.get(&key)?;
                                if current.as_deref().is_some_and(|c| behind(v, c)) {
                                    // A late write of a process that had lost the partition.
                                    stale += 1;
                                } else {
                                    batch.insert(key, v);
                                }
                            }
                            None => batch.remove(key),
                        }
                    }
                    at = m.offset() + 1;
                    batch.insert(checkpoint_key(partition), &at.to_be_bytes());
                    cache.apply_batch(batch)?;
                    n += 1;
                }
            }
            if stale > 0 {
                tracing::warn!(partition, stale, "changelog records older than the profile restored before them were skipped (late writes of a process that had lost the partition)");
            }
            Ok(n)
        })
        .await??;
        tracing::info!(
            partition,
            changelog = %self.changelog,
            records = restored,
            ms = started.elapsed().as_millis() as u64,
            "profiles restored from the changelog"
        );
        Ok(())
    }

    /// One partition's events: contract, handlers, then the re-keyed events and dead letters
    /// sent; returns their deliveries.
    async fn handle(
        &mut self,
        topic: &str,
        partition: i32,
        events: Vec<Event>,
    ) -> Result<Vec<rdkafka::producer::DeliveryFuture>> {
        let chain = &self.chains[topic];
        let mut rejected: Vec<(&Event, String, Option<String>, &str)> = Vec::new();
        let mut valid: Vec<(serde_json::Value, &Event)> = Vec::new();
        for e in &events {
            match &chain.contract {
                Some(contract) => match contract.check(e.value.as_deref()) {
                    Ok(v) => valid.push((v, e)),
                    Err(r) => {
                        rejected.push((e, r.reason, r.source, crate::pipeline::DEAD_LETTER_STAGE))
                    }
                },
                None => {
                    let v = e
                        .value
                        .as_deref()
                        .and_then(|b| serde_json::from_slice(b).ok())
                        .unwrap_or(serde_json::Value::Null);
                    valid.push((v, e));
                }
            }
        }
        // Valid events with a customer id go to the repartition topic, keyed by it: the
        // profile stage reads them there, one customer on one partition.
        let mut rekeyed: Vec<(String, &Event)> = Vec::new();
        if chain.profiles {
            for (v, e) in &valid {
                if let Some(customer) = v.get("customer_id").and_then(|c| c.as_str()) {
                    rekeyed.push((customer.to_string(), e));
                }
            }
        }
        // Handlers see the valid events (all of them on a topic without a contract).
        let valid_events: Vec<Event> = valid.iter().map(|(_, e)| (*e).clone()).collect();
        let mut refused: Vec<(Event, String, String)> = Vec::new();
        for h in &chain.handlers {
            if valid_events.is_empty() {
                break;
            }
            let mut backoff = BACKOFF_FIRST;
            loop {
                match h.handle(&valid_events).await {
                    Ok(()) => break,
                    Err(HandlerError::Permanent(reason)) => {
                        for e in &valid_events {
                            refused.push((
                                e.clone(),
                                format!("handler {}: {reason}", h.name()),
                                h.name().to_string(),
                            ));
                        }
                        break;
                    }
                    Err(HandlerError::Transient(reason)) => {
                        tracing::warn!(handler = h.name(), %reason, backoff_ms = backoff.as_millis() as u64, "handler failed; retrying");
                        let mut shutdown = self.shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => bail!("stopped while handler {} was failing: the events are handled again at the next start", h.name()),
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        for (e, reason, stage) in &refused {
            rejected.push((e, reason.clone(), None, stage.as_str()));
        }
        // Re-keyed events and dead letters, then wait for every acknowledgement.
        let mut deliveries = Vec::new();
        let repartition = repartition_topic(&self.builder.group, topic);
        for (customer, e) in &rekeyed {
            let (p, o) = (e.partition.to_string(), e.offset.to_string());
            let mut headers = OwnedHeaders::new();
            for (k, v) in [
                (SOURCE_TOPIC, topic),
                (SOURCE_PARTITION, p.as_str()),
                (SOURCE_OFFSET, o.as_str()),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&repartition)
                .key(customer.as_bytes())
                .headers(headers)
                .timestamp(e.timestamp);
            if let Some(v) = &e.value {
                r = r.payload(v.as_ref());
            }
            let f = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| anyhow::anyhow!("repartition: {e}"))?;
            deliveries.push(f);
        }
        let dlq = crate::appliance::dead_letter_topic(topic);
        let dlq_partitions = self.partitions.get(topic).copied().unwrap_or(1).max(1);
        for (e, reason, source, stage) in &rejected {
            let source = source.clone().unwrap_or_else(|| "unknown".into());
            let (p, o, t) = (
                partition.to_string(),
                e.offset.to_string(),
                e.timestamp.to_string(),
            );
            let mut headers = event_headers(e);
            for (k, v) in [
                ("kafkabox.dlq.reason", reason.as_str()),
                ("kafkabox.dlq.source", source.as_str()),
                ("kafkabox.dlq.stage", stage),
                ("kafkabox.dlq.topic", topic),
                ("kafkabox.dlq.partition", p.as_str()),
                ("kafkabox.dlq.offset", o.as_str()),
                ("kafkabox.dlq.timestamp", t.as_str()),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq)
                .partition(partition % dlq_partitions)
                .headers(headers);
            if let Some(k) = &e.key {
                r = r.key(k.as_ref());
            }
            if let Some(v) = &e.value {
                r = r.payload(v.as_ref());
            }
            let f = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| anyhow::anyhow!("dead letter: {e}"))?;
            deliveries.push(f);
            tracing::warn!(topic, partition, offset = e.offset, %reason, "event sent to the dead-letter topic");
        }
        self.handled += events.len() as u64;
        Ok(deliveries)
    }

    /// Re-keyed events of repartition partition `partition`: the profiles they change are
    /// sent to the changelog (same partition); returns the deliveries and the profiles for the
    /// local cache, written once those are acknowledged. A profile skips an event it has
    /// applied already (by its original topic, partition and offset).
    fn profile(&mut self, partition: i32, events: Vec<Event>) -> Result<ProfileWrites> {
        let mut changed: BTreeMap<String, Profile> = BTreeMap::new();
        for e in &events {
            let header = |name: &str| {
                e.headers
                    .iter()
                    .find(|(k, _)| k.as_ref() == name.as_bytes())
                    .and_then(|(_, v)| v.as_deref())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let (Some(topic), Some(p), Some(o)) = (
                header(SOURCE_TOPIC),
                header(SOURCE_PARTITION).and_then(|p| p.parse::<i32>().ok()),
                header(SOURCE_OFFSET).and_then(|o| o.parse::<i64>().ok()),
            ) else {
                tracing::warn!(
                    partition,
                    offset = e.offset,
                    "a re-keyed event without its source headers; skipped"
                );
                continue;
            };
            let Some(v) = e
                .value
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            else {
                continue;
            };
            let Some(customer) = v.get("customer_id").and_then(|c| c.as_str()) else {
                continue;
            };
            if !changed.contains_key(customer) {
                let profile = match self.hot.take(customer) {
                    Some(p) => p,
                    None => {
                        // A change still in flight is newer than the cache.
                        let stored = match self.unacknowledged.get(customer) {
                            Some((_, json)) => Some(sled::IVec::from(json.as_slice())),
                            None => self.cache.get(profile_key(customer))?,
                        };
                        stored
                            .and_then(|b| serde_json::from_slice::<Profile>(&b).ok())
                            .unwrap_or_default()
                    }
                };
                changed.insert(customer.to_string(), profile);
            }
            let valid = Valid {
                event: &v,
                raw: e.value.as_deref().unwrap_or_default(),
                partition: p,
                offset: o,
            };
            if let Some(profile) = changed.get_mut(customer) {
                profile.apply_once(&topic, &valid);
            }
        }
        let mut writes = Vec::with_capacity(changed.len());
        for (customer, p) in changed {
            let json = serde_json::to_vec(&p)?;
            self.hot.put(&customer, partition, p, json.len());
            writes.push((customer, json));
        }
        self.hot.bound();
        let mut deliveries = Vec::with_capacity(writes.len());
        for (customer, json) in &writes {
            let f = self
                .producer
                .send_result(
                    FutureRecord::to(&self.changelog)
                        .key(customer.as_bytes())
                        .payload(json.as_slice())
                        .partition(partition),
                )
                .map_err(|(e, _)| anyhow::anyhow!("changelog: {e}"))?;
            deliveries.push(f);
        }
        self.handled += events.len() as u64;
        Ok((deliveries, writes))
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

#[cfg(test)]
mod tests {
    use super::behind;

    #[test]
    fn an_older_state_is_behind() {
        let v1 = br#"{"events":1,"applied":{"e/0":5}}"#;
        let v2 = br#"{"events":3,"applied":{"e/0":9,"e/1":2}}"#;
        assert!(behind(v1, v2));
        assert!(!behind(v2, v1));
        assert!(!behind(v2, v2), "the same state is not behind");
        // Apart on two partitions: neither is behind (not a history of one profile).
        let v3 = br#"{"events":2,"applied":{"e/0":10}}"#;
        assert!(!behind(v3, v2));
        assert!(!behind(v2, v3));
        assert!(!behind(b"not json", v2));
    }
}
