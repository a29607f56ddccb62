//! A small HTTP listener (hyper): `GET /health` and `GET /metrics` (Prometheus text format:
//! handler lag per stage/topic/partition, ingest counters per source, log offsets per
//! partition). Binds to localhost by default (`http.listen`). The rest of DESIGN.md's HTTP API
//! is not built yet.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kafkabox_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::{IngestStats, Lag};

/// What the HTTP listener reports on.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: Store,
    pub lag: Lag,
    pub stats: IngestStats,
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus exposition of `s`.
pub fn metrics(s: &Sources) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kafkabox_handler_lag Records of a partition not yet handled by a stage."
    );
    let _ = writeln!(out, "# TYPE kafkabox_handler_lag gauge");
    for (stage, topic, partition, lag) in s.lag.snapshot() {
        let _ = writeln!(
            out,
            "kafkabox_handler_lag{{stage=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
            label(&stage),
            label(&topic)
        );
    }
    let _ = writeln!(
        out,
        "# HELP kafkabox_partition_log_end_offset Next offset of a partition."
    );
    let _ = writeln!(out, "# TYPE kafkabox_partition_log_end_offset gauge");
    for t in s.store.topics() {
        for p in &t.partitions {
            let o = s.store.offsets(p);
            let _ = writeln!(
                out,
                "kafkabox_partition_log_end_offset{{topic=\"{}\",partition=\"{}\"}} {}",
                label(&t.meta.name),
                p.index,
                o.log_end
            );
        }
    }
    if let Ok(sources) = s.stats.snapshot() {
        for (name, help, get) in [
            (
                "received",
                "Events received per source.",
                (|x: &crate::pipeline::SourceStatus| x.received)
                    as fn(&crate::pipeline::SourceStatus) -> u64,
            ),
            ("valid", "Valid events per source.", |x| x.valid),
            (
                "rejected",
                "Invalid events per source (sent to the dead-letter topic).",
                |x| x.rejected,
            ),
        ] {
            let _ = writeln!(out, "# HELP kafkabox_ingest_{name}_total {help}");
            let _ = writeln!(out, "# TYPE kafkabox_ingest_{name}_total counter");
            for (source, status) in &sources {
                let _ = writeln!(
                    out,
                    "kafkabox_ingest_{name}_total{{source=\"{}\"}} {}",
                    label(source),
                    get(status)
                );
            }
        }
    }
    out
}

async fn route(
    req: Request<hyper::body::Incoming>,
    s: Arc<Sources>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/metrics") => {
            let s2 = s.clone();
            let body = tokio::task::spawn_blocking(move || metrics(&s2))
                .await
                .unwrap_or_default();
            reply(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /health or /metrics\n".into(),
        ),
    })
}

/// Binds `addr` and serves until `shutdown` flips. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "HTTP listener ready (/health, /metrics)");
    let sources = Arc::new(sources);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let s = sources.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| route(req, s.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok((bound, task))
}
