//! Embedding kafkabox: a broker plus in-process handlers, started from a builder. This file
//! assembles them: the [`Server`] (store, listeners, services), the pipeline's stages
//! ([`crate::pipeline::Stages`]: contracts, profiles, handlers, the edge forwarder), the
//! ingest counters' log line and the HTTP listener; [`ApplianceHandle`] is the running whole.
//!
//! ```no_run
//! # async fn demo(h: impl kafkabox::pipeline::Handler) -> anyhow::Result<()> {
//! let app = kafkabox::Appliance::builder()
//!     .data_dir("/tmp/kafkabox-demo")
//!     .listen("127.0.0.1:0")
//!     .handler("customer-events", h)
//!     .start()
//!     .await?;
//! println!("bootstrap.servers = {}", app.kafka_addr());
//! app.shutdown().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use kafkabox_storage::Store;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::contract::Contract;
use crate::handlers::BuiltIn;
use crate::pipeline::{
    self, ensure_topic, Handler, IngestStats, Lag, Over, StageKind, StageSpec, Stages,
};
use crate::services::Topics;
use crate::{Config, Server};

/// Entry point of the embedding API.
#[derive(Debug)]
pub struct Appliance;

impl Appliance {
    /// A builder with the customer-events contract on for `customer-events` (its invalid
    /// records go to `customer-events.dlq`), as the integration guide promises.
    pub fn builder() -> ApplianceBuilder {
        ApplianceBuilder {
            config: Config::default(),
            settings: Vec::new(),
            handlers: Vec::new(),
            contracts: vec![(CUSTOMER_EVENTS.to_string(), None)],
            profiles: Vec::new(),
            reject: Vec::new(),
            http: None,
        }
    }
}

/// The appliance `kafkabox serve` runs: the broker, the customer-events contract and the
/// built-in handlers named by `customer.events.handlers`.
pub fn from_config(config: Config) -> Result<ApplianceBuilder> {
    let chains = config.handlers.clone();
    let contract = config.customer_contract()?;
    let http = config.http_listen.clone();
    let contract_on = config.customer_contract_on;
    let mut builder = Appliance::builder()
        .config(config)
        .contract(CUSTOMER_EVENTS, contract);
    if !contract_on {
        builder = builder.without_contract(CUSTOMER_EVENTS);
    }
    // `http.listen` (default 127.0.0.1:8080; empty: off).
    if let Some(addr) = &http {
        builder = builder.http(addr);
    }
    for (topic, names) in &chains {
        for name in names {
            let named = crate::handlers::built_in(name, topic, &builder.config)?;
            builder = match named {
                BuiltIn::Profiles => builder.profiles(topic),
                BuiltIn::Handler(handler) => {
                    builder.handlers.push((topic.to_string(), handler));
                    builder
                }
            };
        }
    }
    Ok(builder)
}

/// `addr`, with the loopback address of its family in place of a wildcard one.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

pub use crate::contract::CUSTOMER_EVENTS;
pub use crate::services::dead_letters::{dead_letter_topic, DEAD_LETTER_SUFFIX};

/// Collects the settings and handlers of an [`Appliance`].
pub struct ApplianceBuilder {
    config: Config,
    settings: Vec<(String, String)>,
    handlers: Vec<(String, Arc<dyn Handler>)>,
    /// Topics with a contract; `None` means the shipped customer-events schema.
    contracts: Vec<(String, Option<Contract>)>,
    /// Topics whose valid events update customer profiles.
    profiles: Vec<String>,
    /// Topics with the `reject` policy: produce fails with INVALID_RECORD for invalid records.
    reject: Vec<String>,
    /// The HTTP listener's address, if any.
    http: Option<String>,
}

impl std::fmt::Debug for ApplianceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplianceBuilder")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|(t, h)| (t, h.name()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ApplianceBuilder {
    /// Starts from a whole configuration (defaults otherwise).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// The Kafka listener, e.g. `127.0.0.1:0` for a free port.
    pub fn listen(self, addr: &str) -> Self {
        self.set("listen", addr)
    }

    /// Any setting of the configuration reference, checked at [`ApplianceBuilder::start`].
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs `handler` over every record of `topic` (created at start if it does not exist).
    /// Several handlers on one topic each keep their own offsets.
    pub fn handler(mut self, topic: &str, handler: impl Handler) -> Self {
        self.handlers.push((topic.to_string(), Arc::new(handler)));
        self
    }

    /// Checks every record of `topic` against `contract`; invalid ones go to `<topic>.dlq` and
    /// handlers of `topic` see only valid ones. Replaces any contract set for `topic` before.
    pub fn contract(mut self, topic: &str, contract: Contract) -> Self {
        self.contracts.retain(|(t, _)| t != topic);
        self.contracts.push((topic.to_string(), Some(contract)));
        self
    }

    /// Keeps customer profiles ([`crate::profile`]) from the valid events of `topic`.
    pub fn profiles(mut self, topic: &str) -> Self {
        if !self.profiles.iter().any(|t| t == topic) {
            self.profiles.push(topic.to_string());
        }
        self
    }

    /// The `reject` policy for `topic`'s contract: a produce request with an invalid record
    /// fails with INVALID_RECORD instead of the record going to the dead-letter topic.
    pub fn reject_invalid(mut self, topic: &str) -> Self {
        if !self.reject.iter().any(|t| t == topic) {
            self.reject.push(topic.to_string());
        }
        self
    }

    /// A fresh temporary data directory, removed at shutdown (and fault injection allowed):
    /// for tests. Use with `listen("127.0.0.1:0")`.
    pub fn ephemeral(self) -> Self {
        self.set("data.ephemeral", "true")
    }

    /// Serves `/health` and `/metrics` over HTTP on `addr` (e.g. `127.0.0.1:0`).
    pub fn http(mut self, addr: &str) -> Self {
        self.http = Some(addr.to_string());
        self
    }

    /// No contract for `topic` (e.g. to turn off the default one for `customer-events`).
    pub fn without_contract(mut self, topic: &str) -> Self {
        self.contracts.retain(|(t, _)| t != topic);
        self
    }

    pub async fn start(mut self) -> Result<ApplianceHandle> {
        let mut config = self.config;
        for (k, v) in &self.settings {
            config.set(k, v).with_context(|| format!("setting {k}"))?;
        }
        let ephemeral = if config.ephemeral {
            let dir = ephemeral_dir()?;
            config.data_dir = dir.path().to_path_buf();
            Some(dir)
        } else {
            None
        };
        let partitions = config.num_partitions;
        self.reject = crate::contract::reject_topics(config.reject_invalid, &self.reject);
        // Compile every contract once: the dead-letter stage and the reject check share it.
        let mut compiled: Vec<(String, Arc<Contract>)> = Vec::new();
        for (topic, contract) in self.contracts {
            let contract = match contract {
                Some(c) => c,
                None => Contract::default_contract()?,
            };
            compiled.push((topic, Arc::new(contract)));
        }
        let mut reject_contracts = std::collections::HashMap::new();
        for topic in &self.reject {
            let c = compiled
                .iter()
                .find(|(t, _)| t == topic)
                .map(|(_, c)| c.clone())
                .with_context(|| format!("reject policy for {topic}, which has no contract"))?;
            reject_contracts.insert(topic.clone(), c);
        }
        let server = Server::start_with(config, reject_contracts).await?;
        let store = server.store().clone();
        let topics = server.services().topics.clone();
        let groups = server.services().groups.clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let lag = Lag::default();
        let health = pipeline::Health::default();
        let mut tasks = JoinSet::new();
        let stats = IngestStats::new(store.clone());
        let shared = pipeline::Shared {
            store: store.clone(),
            lag: lag.clone(),
            metrics: server.services().metrics.clone(),
            shutdown: shutdown_rx.clone(),
            verdicts: Arc::default(),
            health: health.clone(),
        };
        let mut contracts: std::collections::HashMap<String, Arc<Contract>> =
            std::collections::HashMap::new();
        // One profile cache for every topic with profiles; its lock serialises updates.
        let profiles: pipeline::SharedProfiles = Arc::new(std::sync::Mutex::new(
            crate::profile::Profiles::new(crate::profile::CACHE_BYTES),
        ));
        let mut specs = Vec::new();
        for (topic, contract) in compiled {
            ensure_topic(&topics, &topic, partitions).await?;
            // A topic with a contract and profiles: one stage checks each record once and
            // updates the profiles from the valid ones (offsets of both stages kept).
            let with_profiles = self.profiles.contains(&topic);
            specs.push(StageSpec {
                over: Over::Topic(topic.clone()),
                kind: StageKind::DeadLetter {
                    stats: stats.clone(),
                    profiles: with_profiles.then(|| profiles.clone()),
                },
                contract: Some(contract.clone()),
            });
            contracts.insert(topic, contract);
        }
        for topic in self.profiles {
            if contracts.contains_key(&topic) {
                continue;
            }
            ensure_topic(&topics, &topic, partitions).await?;
            specs.push(StageSpec {
                over: Over::Topic(topic),
                kind: StageKind::Profile {
                    profiles: profiles.clone(),
                },
                contract: None,
            });
        }
        let mut replayers: Vec<(String, String, Arc<dyn Handler>)> = Vec::new();
        for (topic, handler) in self.handlers {
            let t = ensure_topic(&topics, &topic, partitions).await?;
            replayers.push((
                handler.name().to_string(),
                t.meta.name.clone(),
                handler.clone(),
            ));
            specs.push(StageSpec {
                over: Over::Topic(topic.clone()),
                kind: StageKind::Handler { handler },
                contract: contracts.get(&topic).cloned(),
            });
        }
        if let Some(upstream) = server.services().config.upstream.clone() {
            specs.extend(start_forwarder(&upstream, &server, &topics, partitions).await?);
            #[cfg(feature = "client")]
            tasks.spawn(crate::handlers::forward::watch_outlook(
                server.services().clone(),
                lag.clone(),
                shutdown_rx.clone(),
            ));
        }
        // Every stage runs over every partition of its topics: those there now, and those
        // created, added or re-created later (a worker stops when its topic is deleted).
        Stages::new(specs, topics.clone(), groups.clone(), shared.clone())
            .start(&mut tasks)
            .await?;
        tasks.spawn(log_counts(stats.clone(), shutdown_rx.clone()));
        let mut http_addr = None;
        if let Some(addr) = &self.http {
            use std::net::ToSocketAddrs;
            let sock = addr
                .to_socket_addrs()
                .with_context(|| format!("http.listen '{addr}'"))?
                .next()
                .with_context(|| format!("http.listen '{addr}' resolves to nothing"))?;
            let sources = crate::http::Sources {
                store: store.clone(),
                lag: lag.clone(),
                health: health.clone(),
                stats: stats.clone(),
                services: server.services().clone(),
                dead_letters: Arc::new(crate::pipeline::dead_letters::DeadLetters::new(
                    server.services().clone(),
                    replayers,
                    contracts.clone(),
                )),
            };
            let (bound, task) = crate::http::serve(sock, sources, shutdown_rx.clone()).await?;
            http_addr = Some(bound);
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
        Ok(ApplianceHandle {
            server,
            lag,
            stats,
            tasks,
            shutdown_tx,
            http_addr,
            ephemeral,
        })
    }
}

/// The edge forwarder (`upstream.bootstrap`): a pipeline handler over each topic of
/// `upstream.topics` (`*`: every topic but the dead-letter ones, also those created later)
/// that sends every record (valid or not) to the central cluster.
#[cfg(feature = "client")]
async fn start_forwarder(
    upstream: &str,
    server: &Server,
    topics: &Topics,
    partitions: u32,
) -> Result<Vec<StageSpec>> {
    let config = &server.services().config;
    let all = config.upstream_topics.iter().any(|t| t == "*");
    let forward: Arc<dyn Handler> = Arc::new(crate::handlers::forward::Forward::new(
        upstream,
        &config.kafka_client,
        server.store().cluster_id(),
        server.services().clone(),
    )?);
    // Every record, valid or not: the cluster gets the stream as it arrived.
    let specs = if all {
        vec![StageSpec {
            over: Over::AllButDeadLetters,
            kind: StageKind::Handler { handler: forward },
            contract: None,
        }]
    } else {
        let mut specs = Vec::new();
        for name in &config.upstream_topics {
            ensure_topic(topics, name, partitions).await?;
            specs.push(StageSpec {
                over: Over::Topic(name.clone()),
                kind: StageKind::Handler {
                    handler: forward.clone(),
                },
                contract: None,
            });
        }
        specs
    };
    tracing::info!(%upstream, topics = ?config.upstream_topics, "forwarding every record upstream");
    Ok(specs)
}

#[cfg(not(feature = "client"))]
async fn start_forwarder(
    _upstream: &str,
    _server: &Server,
    _topics: &Topics,
    _partitions: u32,
) -> Result<Vec<StageSpec>> {
    anyhow::bail!("upstream.bootstrap: this build cannot forward (it has no Kafka client): build with cargo build --release --features client")
}

/// How often the count of handled events is logged at info level.
const COUNT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs valid and rejected events as counts per interval (each rejection also has its own
/// warning), not one line per event.
async fn log_counts(stats: IngestStats, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(COUNT_LOG_INTERVAL);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let (valid, rejected) = stats.take_interval();
        if valid + rejected > 0 {
            tracing::info!(
                valid,
                rejected,
                "events checked in the last {} s",
                COUNT_LOG_INTERVAL.as_secs()
            );
        }
        if stopping {
            return;
        }
    }
}

/// A running appliance.
#[derive(Debug)]
pub struct ApplianceHandle {
    server: Server,
    lag: Lag,
    stats: IngestStats,
    tasks: JoinSet<()>,
    shutdown_tx: watch::Sender<bool>,
    http_addr: Option<SocketAddr>,
    /// The data directory of an ephemeral appliance, removed when this is dropped.
    ephemeral: Option<tempfile::TempDir>,
}

/// Prefix of ephemeral data directories in the system's temporary directory.
const EPHEMERAL_PREFIX: &str = "kafkabox-ephemeral-";

/// A new ephemeral data directory, `kafkabox-ephemeral-<pid>-<random>` (mode 0700). Those of
/// processes that no longer run (killed before they could remove theirs) are removed first.
fn ephemeral_dir() -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(EPHEMERAL_PREFIX)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let proc_dir = std::path::Path::new("/proc");
            if proc_dir.exists() && !proc_dir.join(pid.to_string()).exists() {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => {
                        tracing::info!(dir = %e.path().display(), pid, "removed the ephemeral data directory of a kafkabox that no longer runs")
                    }
                    Err(err) => {
                        tracing::debug!(dir = %e.path().display(), error = %err, "cannot remove a stale ephemeral data directory")
                    }
                }
            }
        }
    }
    let prefix = format!("{EPHEMERAL_PREFIX}{}-", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Only this user reads what tests produce (the umask would leave it 0755).
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir_in(&tmp).with_context(|| {
        format!(
            "cannot create an ephemeral data directory in {}",
            tmp.display()
        )
    })
}

/// Adds, lists and clears injected faults ([`ApplianceHandle::faults`]).
#[derive(Debug, Clone)]
pub struct FaultControl {
    services: Arc<crate::services::Services>,
}

pub use crate::services::faults::{Fault, FaultRequest};

impl FaultControl {
    /// Injects a fault, e.g. `FaultRequest::error("Produce", "NOT_LEADER_OR_FOLLOWER").count(3)`.
    pub fn add(&self, fault: FaultRequest) -> Result<Fault> {
        let spec = crate::api::faults::resolve(&fault).map_err(|e| anyhow::anyhow!(e))?;
        Ok(self.services.faults.add(spec, fault)?)
    }

    /// The faults in effect, oldest first.
    pub fn list(&self) -> Vec<Fault> {
        self.services.faults.list()
    }

    /// Clears every fault; stalled answers go out. Returns how many there were.
    pub fn clear(&self) -> usize {
        self.services.faults.clear()
    }

    /// Clears one fault; false if there is none with `id`.
    pub fn remove(&self, id: u64) -> bool {
        self.services.faults.remove(id)
    }
}

impl ApplianceHandle {
    /// `bootstrap.servers` for a client on this machine: the first listener's address, with
    /// 127.0.0.1 for a wildcard one.
    pub fn bootstrap(&self) -> String {
        connectable(self.kafka_addr()).to_string()
    }

    /// Every Kafka listener: name, protocol and bound address.
    pub fn listeners(&self) -> &[crate::listener::BoundListener] {
        self.server.listeners()
    }

    /// The data directory (the temporary one of an ephemeral appliance).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.server.services().config.data_dir
    }

    /// Whether the data directory is removed at shutdown.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral.is_some()
    }

    /// Fault injection (an ephemeral appliance, or `faults.allow`).
    pub fn faults(&self) -> FaultControl {
        FaultControl {
            services: self.server.services().clone(),
        }
    }

    /// The one line `kafkabox serve` prints (and writes to `--ready-file`) when it is ready:
    /// where to connect, as JSON.
    pub fn ready_line(&self) -> String {
        let listeners: serde_json::Map<String, serde_json::Value> = self
            .listeners()
            .iter()
            .map(|l| {
                (
                    l.name.to_string(),
                    serde_json::json!({
                        "protocol": l.protocol.name(),
                        "address": connectable(l.addr).to_string(),
                    }),
                )
            })
            .collect();
        let http = self.http_addr.map(|a| {
            let scheme = if self.server.services().config.http_tls {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", connectable(a))
        });
        serde_json::json!({
            "ready": true,
            "bootstrap": self.bootstrap(),
            "listeners": listeners,
            "http": http,
            "data_dir": self.data_dir().display().to_string(),
            "ephemeral": self.is_ephemeral(),
            "faults": self.server.services().faults.allowed(),
            "emulate_kafka": self.server.services().config.emulate_kafka,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string()
    }

    /// The bound HTTP address, when the HTTP listener runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound Kafka address (`bootstrap.servers`).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.server.kafka_addr()
    }

    pub fn store(&self) -> &Store {
        self.server.store()
    }

    /// The profile of `customer_id`, if any event of theirs was handled.
    pub fn profile(&self, customer_id: &str) -> Result<Option<serde_json::Value>> {
        let raw = self
            .store()
            .state(&crate::profile::profile_key(customer_id))?;
        Ok(raw.map(|b| serde_json::from_slice(&b)).transpose()?)
    }

    /// Per-source ingest status of the topics with a contract.
    pub fn ingest_status(
        &self,
    ) -> Result<std::collections::BTreeMap<String, pipeline::SourceStatus>> {
        Ok(self.stats.snapshot()?)
    }

    /// Per-partition lag of the handlers.
    pub fn lag(&self) -> &Lag {
        &self.lag
    }

    /// Stops the handlers (a handler call in progress finishes; unhandled records stay for the
    /// next start), then the broker.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.server.shutdown().await?;
        if let Some(dir) = self.ephemeral.take() {
            let path = dir.path().display().to_string();
            dir.close()
                .with_context(|| format!("cannot remove the ephemeral data directory {path}"))?;
            tracing::info!(dir = %path, "ephemeral data directory removed");
        }
        Ok(())
    }
}
