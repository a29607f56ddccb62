//! Embedding kafkabox: a broker plus in-process handlers, started from a builder.
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use kafkabox_storage::Store;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pipeline::{self, Handler, Lag};
use crate::{Config, Server};

/// Entry point of the embedding API.
#[derive(Debug)]
pub struct Appliance;

impl Appliance {
    pub fn builder() -> ApplianceBuilder {
        ApplianceBuilder {
            config: Config::default(),
            settings: Vec::new(),
            handlers: Vec::new(),
        }
    }
}

/// Collects the settings and handlers of an [`Appliance`].
pub struct ApplianceBuilder {
    config: Config,
    settings: Vec<(String, String)>,
    handlers: Vec<(String, Arc<dyn Handler>)>,
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

    pub async fn start(self) -> Result<ApplianceHandle> {
        let mut config = self.config;
        for (k, v) in &self.settings {
            config.set(k, v).with_context(|| format!("setting {k}"))?;
        }
        let partitions = config.num_partitions;
        let server = Server::start(config).await?;
        let store = server.store().clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let lag = Lag::default();
        let mut tasks = JoinSet::new();
        for (topic, handler) in self.handlers {
            let t = match store.topic(&topic) {
                Some(t) => t,
                None => {
                    let s = store.clone();
                    let name = topic.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::api::create_topics::create(&s, &name, partitions, BTreeMap::new())
                    })
                    .await
                    .context("topic creation task")?
                    .map_err(|(code, msg)| {
                        anyhow::anyhow!("cannot create topic {topic}: {msg} ({code:?})")
                    })?
                }
            };
            pipeline::spawn(&mut tasks, &store, &t, handler, &lag, &shutdown_rx);
        }
        Ok(ApplianceHandle {
            server,
            lag,
            tasks,
            shutdown_tx,
        })
    }
}

/// A running appliance.
#[derive(Debug)]
pub struct ApplianceHandle {
    server: Server,
    lag: Lag,
    tasks: JoinSet<()>,
    shutdown_tx: watch::Sender<bool>,
}

impl ApplianceHandle {
    /// The bound Kafka address (`bootstrap.servers`).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.server.kafka_addr()
    }

    pub fn store(&self) -> &Store {
        self.server.store()
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
        self.server.shutdown().await
    }
}
