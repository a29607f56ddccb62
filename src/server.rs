//! The server: what `kafkabox serve` (through the appliance) and an embedding program start. It
//! opens the store, builds TLS, binds every Kafka listener, starts the domain services and
//! hands the bound listeners to the transport ([`crate::listener::serve`]), which knows no
//! more than connections and frames.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use kafkabox_storage::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::info;

use crate::config::{Config, SecurityProtocol};
use crate::listener::{open_to_the_network, BoundListener};
use crate::services::Services;

/// A running broker.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<BoundListener>,
    store: Store,
    services: Arc<Services>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Server> {
        let mut reject = std::collections::HashMap::new();
        // Without an appliance only customer-events has a contract (the configured one).
        for topic in crate::contract::reject_topics(config.reject_invalid, &[]) {
            reject.insert(topic, Arc::new(config.customer_contract()?));
        }
        Server::start_with(config, reject).await
    }

    /// Like [`Server::start`], with the topics whose produce requests are refused with
    /// INVALID_RECORD when a record breaks the topic's contract (the `reject` policy).
    pub async fn start_with(
        config: Config,
        reject_contracts: std::collections::HashMap<String, Arc<crate::contract::Contract>>,
    ) -> Result<Server> {
        let mut sc = StoreConfig::new(&config.data_dir);
        sc.cache_capacity_bytes = config.cache_bytes;
        sc.flush_interval = config.flush_interval;
        sc.segment_bytes = config.segment_bytes;
        sc.segment_ms = config.segment_ms;
        sc.max_open_segments = config.max_open_segments;
        sc.max_partitions = config.max_partitions;
        sc.min_free_bytes = config.min_free_bytes;
        let data_dir = config.data_dir.clone();
        let started = std::time::Instant::now();
        let store = tokio::task::spawn_blocking(move || Store::open(sc))
            .await
            .context("store open task")?
            .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
        info!(
            data_dir = %config.data_dir.display(),
            cluster_id = store.cluster_id(),
            topics = store.topics().len(),
            open_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let tls = if config
            .listeners
            .iter()
            .any(|l| config.protocol_of(&l.name).is_ok_and(SecurityProtocol::tls))
        {
            Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                &config,
                &[],
            )?))
        } else {
            None
        };
        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        for (l, protocol, addr) in config.resolved_listeners()? {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr} (listener {}; is another broker running there?)",
                    l.name
                )
            })?;
            let addr = listener.local_addr()?;
            info!(%addr, listener = %l.name, protocol = protocol.name(), "Kafka listener ready");
            let authenticates = protocol.sasl()
                || (protocol.tls()
                    && config.ssl_client_auth == crate::config::ClientAuth::Required);
            if open_to_the_network(addr) && !authenticates {
                tracing::warn!(
                    %addr,
                    listener = %l.name,
                    "the Kafka listener {} accepts anyone who can reach {addr} without authentication: any client there can produce, consume, create and delete topics; use a SASL_SSL listener (--set listeners=SASL_SSL://...), listen on 127.0.0.1, or firewall the port",
                    l.name
                );
            }
            bound.push(BoundListener {
                name: l.name.as_str().into(),
                protocol,
                addr,
            });
            sockets.push(listener);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let request_bytes = Arc::new(Semaphore::new(config.queued_max_request_bytes));
        let services = Services::start(
            store.clone(),
            Arc::new(config),
            reject_contracts,
            shutdown_rx,
        )
        .await
        .context("starting the broker's services")?;
        let apis = Arc::new(
            crate::api::emulate::Advertised::from_config(services.config.emulate_kafka.as_deref())
                .map_err(|e| anyhow::anyhow!("emulate.kafka: {e}"))?,
        );
        if let Some(release) = &apis.release {
            info!(
                release = %release,
                apis = apis.iter().count(),
                "emulating Apache Kafka {release}: ApiVersions advertises its API versions (those kafkabox answers) and other versions are refused"
            );
        }
        let task = tokio::spawn(crate::listener::serve(
            sockets.into_iter().zip(bound.iter().cloned()).collect(),
            tls,
            services.clone(),
            request_bytes,
            apis,
        ));
        // Partitions load when first used; this loads the rest in the background, so start-up
        // does not wait for them and the first requests mostly do not either.
        let loading = store.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match loading.load_all() {
                Ok(()) => info!(
                    load_ms = started.elapsed().as_millis() as u64,
                    "every partition loaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "a partition cannot be loaded; requests for it fail with this error")
                }
            }
        });
        Ok(Server {
            listeners: bound,
            store,
            services,
            shutdown_tx,
            task,
        })
    }

    /// The first Kafka listener's bound address (useful with port 0).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Every Kafka listener, bound, in the order of `listeners`.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The domain services (topics, groups ...) the Kafka API, the HTTP API and the appliance
    /// share.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Stops accepting, lets every connection answer what it has read, flushes the store.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        let _ = self.task.await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .context("store close task")?
            .context("final flush")?;
        info!("shut down cleanly");
        Ok(())
    }
}
