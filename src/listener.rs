//! The Kafka transport: given the listeners the server bound ([`serve`]), accepts connections,
//! makes TLS handshakes, reads size-prefixed frames, hands each frame to the Kafka API layer
//! (`crate::api::dispatch`) with the connection's [`Session`] and writes the responses back in
//! request order. It knows no Kafka API.
//!
//! Limits: `max.connections` (a permit taken before accept), `socket.request.max.bytes` (a larger
//! frame closes the connection before anything is buffered), `queued.max.request.bytes` (request
//! bytes held across all connections), `max.inflight.requests.per.connection` (pending responses
//! per connection before the broker stops reading from it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use crate::api::{self, Auth, Pending, Reply, Session};
use crate::config::{Config, SecurityProtocol};
use crate::services::acl::ANONYMOUS;
use crate::services::sasl::Admission;
use crate::services::Services;

/// One bound Kafka listener.
#[derive(Debug, Clone)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
}

/// The next connection on any of `listeners`, with the index of its listener. The listener
/// polled first turns with `turn`, so a flood on one cannot starve the others.
async fn accept_any(
    listeners: &[(TcpListener, BoundListener)],
    turn: usize,
) -> (usize, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (turn + k) % n;
            if let std::task::Poll::Ready(r) = listeners[i].0.poll_accept(cx) {
                return std::task::Poll::Ready((i, r));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Serves the bound `listeners` (the server binds them): the accept loop, one task per
/// connection. Returns once shutdown is signalled and every connection has finished.
pub async fn serve(
    listeners: Vec<(TcpListener, BoundListener)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: Arc<Services>,
    request_bytes: Arc<Semaphore>,
    apis: Arc<api::emulate::Advertised>,
) {
    let conn_permits = Arc::new(Semaphore::new(services.config.max_connections));
    let mut shutdown = services.shutdown.clone();
    let mut conns = JoinSet::new();
    let background = tokio::spawn(services.clone().run_background());
    let mut refused_log = crate::services::log_limit::RateLimitedLog::default();
    let mut accept_errors = crate::services::log_limit::RateLimitedLog::default();
    let mut turn = 0usize;
    loop {
        turn = turn.wrapping_add(1);
        let (which, accepted) = tokio::select! {
            _ = shutdown.changed() => break,
            a = accept_any(&listeners, turn) => a,
        };
        let bound = &listeners[which].1;
        // Reap finished connections so the set stays bounded by max.connections.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) if services.faults.refusing() => {
                // An injected fault: the client sees its connection closed at once.
                debug!(%peer, "connection refused by an injected fault");
                drop(stream);
            }
            Ok((stream, peer)) => {
                // At max.connections a new client is closed at once (it sees the connection
                // end and retries), never left waiting in the backlog.
                let Ok(permit) = conn_permits.clone().try_acquire_owned() else {
                    services.metrics.connections_refused.inc();
                    drop(stream);
                    if let Some(suppressed) = refused_log.allow() {
                        warn!(%peer, max_connections = services.config.max_connections, suppressed, "max.connections reached: closing a new connection");
                    }
                    continue;
                };
                let local = match stream.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(%peer, error = %e, "connection without a local address; dropped");
                        continue;
                    }
                };
                let session = Session {
                    services: services.clone(),
                    listener: bound.name.clone(),
                    protocol: bound.protocol,
                    local,
                    peer,
                    principal: ANONYMOUS.to_string(),
                    auth: if bound.protocol.sasl() {
                        Auth::Handshake
                    } else {
                        Auth::Done
                    },
                    close_after: false,
                    client_id: String::new(),
                    requests: 0,
                    apis: apis.clone(),
                };
                let request_bytes = request_bytes.clone();
                let tls = bound.protocol.tls().then(|| tls.clone()).flatten();
                let span = tracing::info_span!("conn", %peer, listener = %bound.name);
                let metrics = services.metrics.clone();
                metrics.connections_accepted.inc();
                metrics.connections.inc();
                conns.spawn(
                    async move {
                        debug!("connected");
                        match tls {
                            None => serve_connection(stream, session, request_bytes).await,
                            Some(acceptor) => {
                                if let Some((stream, session)) =
                                    tls_handshake(acceptor, stream, session).await
                                {
                                    serve_connection(stream, session, request_bytes).await
                                }
                            }
                        }
                        debug!("disconnected");
                        metrics.connections.dec();
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning, and log
                // once per interval, not once per attempt.
                if let Some(suppressed) = accept_errors.allow() {
                    warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listeners);
    let _ = background.await;
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
    #[error("frame size {size} is negative or over {max} bytes (socket.request.max.bytes; before SASL authentication, Kafka's sasl.server.max.receive.size of 512 KiB)")]
    TooLarge { size: i64, max: usize },
    #[error("a frame of {size} bytes did not arrive within {secs} s")]
    Slow { size: usize, secs: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How long a frame may take to arrive once its size has been read. A client that announces a
/// frame and trickles it holds only the bytes it has sent, and only this long.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a frame read (and reserved from `queued.max.request.bytes`) at a time.
const FRAME_CHUNK: usize = 256 * 1024;

/// Reads one frame. `Ok(None)` is a clean end of stream. Memory is reserved from
/// `request_bytes` as the frame's bytes arrive (reads of at most [`FRAME_CHUNK`]), never for
/// what a client only announces: a slow or stalled client holds no more than it has sent, for at most
/// [`FRAME_READ_TIMEOUT`], and small requests of other clients never queue behind its claim.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    config: &Config,
    max: usize,
    request_bytes: &Arc<Semaphore>,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, FrameError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len);
    if size < 0 || size as usize > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let size = size as usize;
    match tokio::time::timeout(
        FRAME_READ_TIMEOUT,
        read_body(rd, size, config.queued_max_request_bytes, request_bytes),
    )
    .await
    {
        Ok(r) => r.map(Some),
        Err(_) => Err(FrameError::Slow {
            size,
            secs: FRAME_READ_TIMEOUT.as_secs(),
        }),
    }
}

/// Reads `size` bytes, reserving from `request_bytes` what has arrived after each read (at most
/// `pool` in all, so a frame larger than the pool can still be read).
async fn read_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    size: usize,
    pool: usize,
    request_bytes: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), FrameError> {
    let acquire = |n: usize| {
        let sem = request_bytes.clone();
        async move {
            sem.acquire_many_owned(n as u32)
                .await
                .map_err(|_| std::io::Error::other("broker shutting down"))
        }
    };
    // Every frame holds at least one permit, even an empty one.
    let mut permit = acquire(1).await?;
    let mut reserved = 1usize;
    let mut buf = BytesMut::with_capacity(size.min(FRAME_CHUNK));
    while buf.len() < size {
        let chunk = (size - buf.len()).min(FRAME_CHUNK);
        // Capacity is only address space until bytes land in it; what arrived is reserved
        // right after, within the pool.
        buf.reserve(chunk);
        let n = (&mut *rd).take(chunk as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let target = buf.len().min(pool);
        if target > reserved {
            permit.merge(acquire(target - reserved).await?);
            reserved = target;
        }
    }
    Ok((buf.freeze(), permit))
}

/// A client connection's stream: plain TCP, split into owned halves with no lock between
/// them (the hot path), or TLS, split with tokio's shared halves.
pub trait Connection: Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Sets TCP_NODELAY and splits the stream for the reading loop and the writer task.
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl Connection for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        let _ = self.set_nodelay(true);
        self.into_split()
    }
}

impl Connection for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        let _ = self.get_ref().0.set_nodelay(true);
        tokio::io::split(self)
    }
}

/// Whether a listener bound to `addr` is reachable from other machines (anything but
/// loopback), which without authentication deserves a warning at start-up.
pub fn open_to_the_network(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// How long a connection stays open after an answer that ends it (failed authentication).
const CLOSE_AFTER_DELAY: Duration = Duration::from_millis(100);

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's `sasl.server.max.receive.size`: the largest frame a connection may send before it
/// has authenticated.
const SASL_MAX_RECEIVE: usize = 524_288;

/// The TLS handshake of an SSL or SASL_SSL connection; a client certificate (mutual TLS)
/// becomes the session's principal. `None` (logged) when the handshake fails.
async fn tls_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    mut session: Session,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Session)> {
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                match crate::tls::certificate_principal(cert) {
                    Some(p) if !session.protocol.sasl() => session.principal = p,
                    Some(_) => {}
                    None => {
                        debug!("client certificate subject unreadable; closing");
                        return None;
                    }
                }
            }
            Some((tls, session))
        }
        Ok(Err(e)) => {
            session.services.metrics.tls_handshake_failures.inc();
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            session.services.metrics.tls_handshake_failures.inc();
            debug!("TLS handshake did not finish within 10 s");
            None
        }
    }
}

async fn serve_connection<S>(stream: S, mut session: Session, request_bytes: Arc<Semaphore>)
where
    S: Connection,
{
    let (mut rd, mut wr) = stream.into_halves();
    let config = session.services.config.clone();
    let (tx, mut rx) = mpsc::channel::<Pending>(config.max_inflight_per_connection);
    let writer = tokio::spawn(
        async move {
            while let Some(pending) = rx.recv().await {
                match pending.await {
                    Reply::Frame(b, _) => {
                        if let Err(e) = wr.write_all(&b).await {
                            debug!(error = %e, "write failed; closing");
                            break;
                        }
                    }
                    Reply::Nothing => {}
                    Reply::Close => break,
                }
            }
            // The client sees the end of the stream (FIN, or TLS close_notify) now, even while
            // the read half is still held by the reading loop.
            let _ = wr.shutdown().await;
        }
        .in_current_span(),
    );
    let mut shutdown = session.services.shutdown.clone();
    let mut admitted = false;
    loop {
        if !admitted && matches!(session.auth, Auth::Exchange(_)) {
            // The per-address slow-down: once the SASL exchange is chosen and before the
            // credentials are read, an address with recent failed authentications waits its
            // turn here, on the connection's task (no thread held, no request bytes reserved).
            admitted = true;
            match session.services.sasl_slowdown.admit(session.peer.ip()) {
                Admission::Now => {}
                Admission::After(wait) => {
                    debug!(
                        wait_ms = wait.as_millis() as u64,
                        "recent failed authentications from this address; waiting before reading its credentials"
                    );
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Admission::Refused => {
                    debug!("too many authentication attempts waiting from this address; closing");
                    break;
                }
            }
        }
        let idle = config.connections_max_idle;
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            f = tokio::time::timeout(idle, read_frame(
                &mut rd,
                &config,
                if session.authenticated() { config.socket_request_max_bytes } else { SASL_MAX_RECEIVE },
                &request_bytes,
            )) => match f {
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
        // The synchronous part of a handler may touch sled (appends, lazy partition loads,
        // group records), so it runs on the blocking pool, never on a runtime worker; this
        // connection waits for it, which keeps its requests in order and bounds the queue
        // there to one request per connection (at most `max.connections`).
        let span = tracing::Span::current();
        let ran = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let out = api::dispatch(&mut session, frame);
            (out, session)
        })
        .await;
        let ((pending, close), back) = match ran {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "request handler failed; closing the connection");
                break;
            }
        };
        session = back;
        drop(permit);
        if tx.send(pending).await.is_err() || close {
            break;
        }
        if session.close_after {
            // The answer goes out now; the connection closes a little later, as Kafka's
            // connection.failed.authentication.delay.ms does (a client that closed at once
            // could miss the answer, and a password guesser is slowed down).
            tokio::time::sleep(CLOSE_AFTER_DELAY).await;
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::open_to_the_network;

    #[test]
    fn only_loopback_listeners_go_without_the_warning() {
        for (addr, open) in [
            ("0.0.0.0:9092", true),
            ("[::]:9092", true),
            ("192.168.1.20:9092", true),
            ("127.0.0.1:9092", false),
            ("[::1]:9092", false),
        ] {
            assert_eq!(open_to_the_network(addr.parse().unwrap()), open, "{addr}");
        }
    }
}
