//! The HTTP listener (hyper), localhost by default (`http.listen`): `GET /health`, `GET /ready`,
//! `GET /metrics` (Prometheus text: handler lag per stage/topic/partition, ingest counters per
//! source, log offsets per partition), and read-only JSON: `/api/topics`, `/api/topics/{topic}`,
//! `/api/groups`, `/api/sources`, `/api/customers/{customer_id}`. The JSON handlers read the
//! domain services the Kafka API uses; the rest of issue 7's API is not built yet.

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
    pub services: Arc<crate::services::Services>,
}

/// Most topics, groups or partitions one JSON answer lists.
const MAX_ITEMS: usize = 10_000;

fn json_topic(s: &Sources, t: &kafkabox_storage::Topic, detail: bool) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = t
        .partitions
        .iter()
        .take(MAX_ITEMS)
        .map(|p| {
            let o = s.store.offsets(p);
            let mut v = serde_json::json!({
                "partition": p.index,
                "log_start_offset": o.log_start,
                "log_end_offset": o.log_end,
            });
            if detail {
                v["size_bytes"] = serde_json::json!(s.store.partition_size(p).ok());
            }
            v
        })
        .collect();
    let mut v = serde_json::json!({
        "name": t.meta.name,
        "topic_id": uuid::Uuid::from_bytes(t.meta.id).to_string(),
        "partitions": partitions,
    });
    if detail {
        let configs: serde_json::Map<String, serde_json::Value> = s
            .services
            .topics
            .describe_configs(t, None)
            .into_iter()
            .map(|c| (c.name, serde_json::Value::String(c.value)))
            .collect();
        v["configs"] = serde_json::Value::Object(configs);
    }
    v
}

fn json_groups(s: &Sources) -> serde_json::Value {
    let groups = s.services.groups.list();
    let out: Vec<serde_json::Value> = groups
        .iter()
        .take(MAX_ITEMS)
        .map(|g| {
            let committed = s
                .services
                .groups
                .fetch_offsets(&g.group_id, None)
                .unwrap_or_default();
            let partitions: Vec<serde_json::Value> = committed
                .iter()
                .map(|(topic, p, c)| {
                    let end = s
                        .store
                        .topic(topic)
                        .and_then(|t| t.partition(*p).map(|part| s.store.offsets(part).log_end));
                    let offset = c.as_ref().map(|c| c.offset).unwrap_or(-1);
                    serde_json::json!({
                        "topic": topic,
                        "partition": p,
                        "committed_offset": offset,
                        "log_end_offset": end,
                        "lag": end.map(|e| (e - offset.max(0)).max(0)),
                    })
                })
                .collect();
            serde_json::json!({
                "group_id": g.group_id,
                "state": g.state,
                "type": g.group_type,
                "protocol_type": g.protocol_type,
                "offsets": partitions,
            })
        })
        .collect();
    serde_json::json!(out)
}

/// The JSON answer to a GET under /api, or None for an unknown path.
fn api_get(s: &Sources, path: &str) -> Option<(StatusCode, serde_json::Value)> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let not_found = |what: String| (StatusCode::NOT_FOUND, serde_json::json!({ "error": what }));
    Some(match parts.as_slice() {
        ["topics"] => {
            let topics: Vec<serde_json::Value> = s
                .services
                .topics
                .list()
                .iter()
                .take(MAX_ITEMS)
                .map(|t| json_topic(s, t, false))
                .collect();
            (StatusCode::OK, serde_json::json!(topics))
        }
        ["topics", name] => match s.services.topics.get(name) {
            Some(t) => (StatusCode::OK, json_topic(s, &t, true)),
            None => not_found(format!("no topic '{name}'")),
        },
        ["groups"] => (StatusCode::OK, json_groups(s)),
        ["sources"] => match s.stats.snapshot() {
            Ok(m) => (StatusCode::OK, serde_json::json!(m)),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": e.to_string() }),
            ),
        },
        ["customers", id] => match s.store.state(&crate::profile::profile_key(id)) {
            Ok(Some(bytes)) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) => (StatusCode::OK, v),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": format!("stored profile: {e}") }),
                ),
            },
            Ok(None) => not_found(format!("no customer '{id}'")),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": e.to_string() }),
            ),
        },
        _ => return None,
    })
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
        // Ready: the store is open and the Kafka listener bound (both before this listener
        // starts), and the broker is not shutting down.
        (&Method::GET, "/ready") => {
            if *s.services.shutdown.borrow() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    r#"{"ready":false,"reason":"shutting down"}"#.into(),
                )
            } else {
                reply(
                    StatusCode::OK,
                    "application/json",
                    r#"{"ready":true}"#.into(),
                )
            }
        }
        (&Method::GET, path) if path.starts_with("/api/") => {
            // Percent-decoding is left out: topic names and customer ids are sent as they are.
            let s2 = s.clone();
            let p = path.to_string();
            match tokio::task::spawn_blocking(move || api_get(&s2, &p)).await {
                Ok(Some((status, v))) => reply(status, "application/json", v.to_string()),
                Ok(None) => reply(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    serde_json::json!({ "error": format!("no such path: {path}") }).to_string(),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    serde_json::json!({ "error": e.to_string() }).to_string(),
                ),
            }
        }
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
            "not found: try /health, /ready, /metrics or /api/topics\n".into(),
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
    tracing::info!(addr = %bound, "HTTP listener ready (/health, /ready, /metrics, /api)");
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
