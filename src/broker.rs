//! The Kafka listener: accepts connections, reads size-prefixed frames, hands each request to
//! its API module (`crate::api`) and writes the responses back in request order.
//!
//! Limits: `max.connections` (a permit taken before accept), `socket.request.max.bytes` (a larger
//! frame closes the connection before anything is buffered), `queued.max.request.bytes` (request
//! bytes held across all connections), `max.inflight.requests.per.connection` (pending responses
//! per connection before the broker stops reading from it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use kafkabox_protocol::{DecodeError, Decoded, Request, RequestPrefix};
use kafkabox_storage::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::api;
use crate::config::Config;

/// What a request turns into once handled.
#[derive(Debug)]
pub enum Reply {
    /// A response frame, size prefix included.
    Frame(BytesMut),
    /// No response (acks=0 produce).
    Nothing,
    /// Close the connection (Kafka's answer to what it cannot parse, and to a failed acks=0
    /// produce).
    Close,
}

/// A response still being worked on (waiting for a flush, a long poll ...). The writer awaits
/// them in request order.
pub type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Wraps a finished reply.
pub fn ready(r: Reply) -> Pending {
    Box::pin(std::future::ready(r))
}

/// Encodes a response; an encoding failure is a bug, logged, and closes the connection.
pub fn respond<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, body: &R) -> Reply {
    match kafkabox_protocol::encode_response(correlation_id, version, body) {
        Ok(b) => Reply::Frame(b),
        Err(e) => {
            tracing::error!(error = %e, "could not encode a response; closing the connection");
            Reply::Close
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Broker {
    pub store: Store,
    pub config: Arc<Config>,
    /// Topics whose produce requests are checked record by record against a contract
    /// (`customer.events.on.invalid = reject`): an invalid record fails the batch.
    pub reject_contracts: std::collections::HashMap<String, Arc<crate::contract::Contract>>,
    request_bytes: Arc<Semaphore>,
    /// Flips to true at shutdown; long polls end early on it.
    pub shutdown: watch::Receiver<bool>,
}

/// Per-connection context handed to the API modules.
#[derive(Debug)]
pub struct ConnCtx {
    pub broker: Arc<Broker>,
    /// The local address the client reached: advertised when `advertised.listener` is unset.
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl ConnCtx {
    /// The host and port Metadata gives for node 0.
    pub fn advertised(&self) -> (String, u16) {
        match &self.broker.config.advertised_listener {
            Some((h, p)) => (h.clone(), *p),
            None => (self.local.ip().to_string(), self.local.port()),
        }
    }
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    store: Store,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Server> {
        let mut reject = std::collections::HashMap::new();
        if config.reject_invalid {
            reject.insert(
                crate::appliance::CUSTOMER_EVENTS.to_string(),
                Arc::new(config.customer_contract()?),
            );
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
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another broker running there?)")
        })?;
        let addr = listener.local_addr()?;
        info!(%addr, "Kafka listener ready");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let broker = Arc::new(Broker {
            store: store.clone(),
            reject_contracts,
            request_bytes: Arc::new(Semaphore::new(config.queued_max_request_bytes)),
            config: Arc::new(config),
            shutdown: shutdown_rx,
        });
        let task = tokio::spawn(run(listener, broker));
        Ok(Server {
            addr,
            store,
            shutdown_tx,
            task,
        })
    }

    /// The bound Kafka listener address (useful with port 0).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Store {
        &self.store
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

/// Accept loop; returns once shutdown is signalled and every connection has finished.
async fn run(listener: TcpListener, broker: Arc<Broker>) {
    let conn_permits = Arc::new(Semaphore::new(broker.config.max_connections));
    let mut shutdown = broker.shutdown.clone();
    let mut conns = JoinSet::new();
    let retention = tokio::spawn(api::retention::run(broker.clone()));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = conn_permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        // Reap finished connections so the set stays bounded by max.connections.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let local = match stream.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(%peer, error = %e, "connection without a local address; dropped");
                        continue;
                    }
                };
                let ctx = Arc::new(ConnCtx {
                    broker: broker.clone(),
                    local,
                    peer,
                });
                let span = tracing::info_span!("conn", %peer);
                conns.spawn(
                    async move {
                        debug!("connected");
                        serve_connection(stream, ctx).await;
                        debug!("disconnected");
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = retention.await;
    // Connections stop reading at shutdown and finish what they have read; bound the wait.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("connections still busy after 10 s at shutdown; closing them");
        conns.abort_all();
    }
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame size {size} is negative or over socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream.
async fn read_frame(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    broker: &Broker,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, FrameError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len);
    let max = broker.config.socket_request_max_bytes;
    if size < 0 || size as usize > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let size = size as usize;
    // Never ask for more permits than exist, or a large frame would wait forever.
    let want = size.clamp(1, broker.config.queued_max_request_bytes) as u32;
    let permit = broker
        .request_bytes
        .clone()
        .acquire_many_owned(want)
        .await
        .map_err(|_| std::io::Error::other("broker shutting down"))?;
    // Grow the buffer as bytes arrive rather than trusting the size up front.
    let mut buf = BytesMut::with_capacity(size.min(64 * 1024));
    while buf.len() < size {
        buf.reserve((size - buf.len()).min(1 << 20));
        let want = size - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some((buf.freeze(), permit)))
}

async fn serve_connection(stream: TcpStream, ctx: Arc<ConnCtx>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(ctx.broker.config.max_inflight_per_connection);
    let writer = tokio::spawn(
        async move {
            while let Some(pending) = rx.recv().await {
                match pending.await {
                    Reply::Frame(b) => {
                        if let Err(e) = wr.write_all(&b).await {
                            debug!(error = %e, "write failed; closing");
                            return;
                        }
                    }
                    Reply::Nothing => {}
                    Reply::Close => return,
                }
            }
        }
        .in_current_span(),
    );
    let mut shutdown = ctx.broker.shutdown.clone();
    loop {
        let idle = ctx.broker.config.connections_max_idle;
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            f = tokio::time::timeout(idle, read_frame(&mut rd, &ctx.broker)) => match f {
                Ok(f) => f,
                Err(_) => {
                    debug!(idle_ms = idle.as_millis() as u64, "no complete request within connections.max.idle.ms; closing");
                    break;
                }
            },
        };
        let (frame, permit) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                debug!(error = %e, "read failed; closing");
                break;
            }
            Err(e) => {
                warn!(error = %e, "refusing frame; closing the connection");
                break;
            }
        };
        let (pending, close) = dispatch(&ctx, frame);
        drop(permit);
        if tx.send(pending).await.is_err() || close {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Decodes a frame and runs the synchronous part of its handler, in arrival order. Returns the
/// pending response and whether to close the connection after it.
fn dispatch(ctx: &Arc<ConnCtx>, frame: Bytes) -> (Pending, bool) {
    let prefix = RequestPrefix::parse(&frame);
    match kafkabox_protocol::decode_request(frame) {
        Ok(decoded) => {
            let span = tracing::debug_span!(
                "request",
                api_key = ?decoded.api_key,
                api_version = decoded.prefix.api_version,
                correlation_id = decoded.prefix.correlation_id,
                client_id = decoded.client_id.as_deref().unwrap_or("")
            );
            let _enter = span.enter();
            let pending = handle(ctx, decoded);
            (Box::pin(pending.instrument(span.clone())), false)
        }
        Err(DecodeError::UnsupportedVersion {
            key: ApiKey::ApiVersions,
            version,
            ..
        }) => {
            let correlation_id = prefix.map(|p| p.correlation_id).unwrap_or(0);
            debug!(
                version,
                "ApiVersions at an unsupported version; answering v0 UNSUPPORTED_VERSION"
            );
            (
                ready(Reply::Frame(kafkabox_protocol::api_versions_fallback(
                    correlation_id,
                ))),
                false,
            )
        }
        Err(e) => {
            warn!(
                api_key = prefix.map(|p| p.api_key),
                api_version = prefix.map(|p| p.api_version),
                correlation_id = prefix.map(|p| p.correlation_id),
                error = %e,
                "cannot handle request; closing the connection as Kafka does"
            );
            (ready(Reply::Close), true)
        }
    }
}

fn handle(ctx: &Arc<ConnCtx>, d: Decoded) -> Pending {
    let v = d.prefix.api_version;
    let c = d.prefix.correlation_id;
    match d.request {
        Request::ApiVersions(r) => api::api_versions::handle(c, v, &r),
        Request::Metadata(r) => api::metadata::handle(ctx, c, v, r),
        Request::Produce(r) => api::produce::handle(ctx, c, v, r),
        Request::InitProducerId(r) => api::init_producer_id::handle(ctx, c, v, r),
        Request::CreateTopics(r) => api::create_topics::handle(ctx, c, v, r),
        Request::Fetch(r) => api::fetch::handle(ctx, c, v, r),
        Request::ListOffsets(r) => api::list_offsets::handle(ctx, c, v, r),
        Request::FindCoordinator(r) => api::find_coordinator::handle(c, v, &r),
    }
}
