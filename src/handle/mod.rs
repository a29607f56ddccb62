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
//!
//! With `processing.guarantee=exactly_once_v2` (Kafka Streams' setting and design, KIP-447),
//! each batch is one Kafka transaction: its re-keyed events, changelog records, dead letters
//! and the consumed offsets commit together or not at all; the consumer reads committed
//! records only, and a process that lost its partitions (a "zombie") can no longer commit
//! (the group generation fences it), so its late changelog writes are aborted and no restore
//! sees them. Webhook and exec calls stay at least once (they are outside Kafka).
//!
//! - `mod.rs`: [`HandleBuilder`] and its `run`, the topic names, the running process's state.
//! - `setup.rs`: the chain of each topic from the configuration, and the topics created on
//!   the cluster before consuming.
//! - `batches.rs`: the consume loop: batches by partition, pipelined (their writes awaiting
//!   acknowledgement while the next is handled), offsets stored in order once acknowledged.
//! - `chain.rs`: one partition's events through its chain: contract, handlers, re-keyed events
//!   and dead letters.
//! - `changelog.rs`: the profiles of the re-keyed events, their changelog, the local cache and
//!   its restore per partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio::sync::watch;

use crate::contract::Contract;
use crate::pipeline::Handler;
use crate::Config;

mod batches;
mod chain;
mod changelog;
mod setup;

use changelog::{HotProfiles, HOT_BYTES};

/// Most records handled per batch (one commit each).
const BATCH_RECORDS: usize = 2000;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Batches whose writes may be awaiting acknowledgement while the next is handled.
const MAX_IN_FLIGHT: usize = 4;
/// With batches in flight, how long to wait for a new record before finishing them.
const IN_FLIGHT_IDLE: Duration = Duration::from_millis(2);
/// How long the transaction calls of `exactly_once_v2` may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// The transactional id of the process whose local cache is `cache`: `<group>-handle-<uuid>`,
/// the uuid made once and kept in the cache.
fn transactional_id(cache: &sled::Db, group: &str) -> Result<String> {
    const KEY: &[u8] = b"transactional.id";
    let id = match cache.get(KEY)? {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            cache.insert(KEY, id.as_bytes())?;
            cache.flush()?;
            id
        }
    };
    Ok(format!("{group}-handle-{id}"))
}

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
        let exactly_once = self.config.handle_exactly_once;
        let mut producer = self.client();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        if exactly_once {
            // One id per data dir (a second process cannot open the same cache): stable across
            // restarts, so that a restarted process fences its previous instance and aborts
            // the transaction that one left open at once.
            let id = transactional_id(&cache, &self.group)?;
            tracing::info!(transactional_id = %id, "exactly_once_v2: each batch is one transaction");
            producer.set("transactional.id", id);
            // Kafka Streams' default under exactly-once: a process killed mid-transaction holds
            // its partitions' last stable offset (read_committed readers wait) this long.
            if !self
                .config
                .kafka_client
                .contains_key("transaction.timeout.ms")
            {
                producer.set("transaction.timeout.ms", "10000");
            }
        }
        let producer: FutureProducer = producer.create().context("Kafka producer")?;
        if exactly_once {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || {
                use rdkafka::producer::Producer;
                p.init_transactions(TXN_TIMEOUT)
            })
            .await
            .context("init_transactions task")?
            .context("the cluster refused the handler's transactions (init_transactions)")?;
        }
        let mut consumer = self.client();
        consumer
            .set("group.id", &self.group)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        if exactly_once {
            // The offsets go with each batch's transaction; read only committed records (the
            // repartition topic is written in transactions too).
            consumer
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed");
        } else {
            // Offsets are stored once a batch's records are acknowledged, and librdkafka commits
            // the stored ones every second, before a rebalance takes partitions away, and at
            // close (a synchronous commit on the polling task could wait on a rebalance that
            // waits on the poll).
            consumer
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false")
                .set("auto.commit.interval.ms", "1000");
        }
        let consumer: StreamConsumer = consumer.create().context("Kafka consumer")?;
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
            hot: HotProfiles::new(HOT_BYTES),
            exactly_once,
            committed: HashMap::new(),
        };
        let r = runner.run(&consumer).await;
        if r.is_err() && runner.exactly_once {
            // A transaction left open would hold its partitions' last stable offset until it
            // times out: aborted now if it can be (an error here means none was open).
            let p = runner.producer.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::task::spawn_blocking(move || {
                    use rdkafka::producer::Producer;
                    p.abort_transaction(Duration::from_secs(5))
                }),
            )
            .await;
        }
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
    /// `processing.guarantee=exactly_once_v2`: each batch is one transaction.
    exactly_once: bool,
    /// `exactly_once_v2`: the offsets this process committed last, per partition.
    committed: HashMap<(String, i32), i64>,
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
