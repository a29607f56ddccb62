//! The HTTP listener (hyper, routes by `matchit`), localhost by default (`http.listen`). Every
//! path is documented in docs/openapi.json, which a test checks the server against:
//!
//! - `/health`, `/ready`, `/metrics` (Prometheus), `/` (the dashboard, [`dashboard`]);
//! - `/api/topics[/{topic}[/records]]` ([`topics`], [`records`]): list, describe, create,
//!   delete, browse and produce;
//! - `/api/sources` and `/api/groups` ([`status`]): ingest per source, groups and stages with
//!   their lag;
//! - `/api/customers[/{id}[/events]]` ([`customers`]);
//! - `/api/dlq`, `/api/dlq/replay`, `/api/dlq/skip` ([`dlq`]);
//! - `/api/faults[/{id}]` ([`faults`]): fault injection; `/api/forward` ([`status`]): the edge
//!   forwarder.
//!
//! Handlers call the domain services; store work runs on blocking threads. Errors are JSON
//! `{"error": "..."}` with a 4xx/5xx status; bodies are capped at `http.max.body.bytes` and
//! every list at a documented maximum. With `http.token` set, all but `/health` and the
//! dashboard page need `Authorization: Bearer <token>` (`/metrics` too, unless
//! `http.metrics.public`).
//!
//! Before routing, every request passes the checks that keep web pages of other sites out
//! (`guard.rs`).
//!
//! - `mod.rs`: the routes, the server (token, dispatch to the route handlers), the listener.
//! - `body.rs`: the request and answer types ([`Req`], [`Query`], [`ApiError`] as JSON), the
//!   bounded body, [`blocking`].
//! - `guard.rs`: the Host, Origin (CORS), Content-Type and token checks.
//! - `render.rs`: record bytes in JSON (as JSON, UTF-8 or base64).
//! - `topics.rs`, `records.rs`, `status.rs`, `customers.rs`, `dlq.rs`, `faults.rs`,
//!   `metrics.rs`, `dashboard.rs` (+ `dashboard.html`): the route handlers, one file per area.

mod body;
pub mod customers;
pub mod dashboard;
pub mod dlq;
pub mod faults;
mod guard;
pub mod metrics;
pub mod records;
mod render;
pub mod status;
pub mod topics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use kafkabox_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::dead_letters::DeadLetters;
use crate::pipeline::{IngestStats, Lag};
use crate::services::Services;

pub use body::{blocking, json, ok, ApiError, ApiResult, Query, Req, Resp};
use body::{bounded_body, error_response, respond};
pub use guard::{media_type, normalize_origin};
pub use render::{header_json, shown, shown_key, utf8_or_base64};

/// What the HTTP listener reports on and steers.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: Store,
    pub lag: Lag,
    pub health: crate::pipeline::Health,
    pub stats: IngestStats,
    pub services: Arc<Services>,
    pub dead_letters: Arc<DeadLetters>,
}

/// Most HTTP connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Most topics, groups or partitions one JSON answer lists.
pub const MAX_ITEMS: usize = 10_000;

/// The routes. Which of them need the token is decided in `Server::handle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Dashboard,
    Topics,
    Topic,
    Records,
    Sources,
    Groups,
    Transactions,
    Customers,
    Customer,
    CustomerEvents,
    Dlq,
    DlqReplay,
    DlqSkip,
    Faults,
    Fault,
    Forward,
}

/// Each route's path pattern and the methods it answers.
const ROUTES: &[(&str, Route, &[Method])] = &[
    ("/health", Route::Health, &[Method::GET]),
    ("/ready", Route::Ready, &[Method::GET]),
    ("/metrics", Route::Metrics, &[Method::GET]),
    ("/", Route::Dashboard, &[Method::GET]),
    ("/api/topics", Route::Topics, &[Method::GET, Method::POST]),
    (
        "/api/topics/{topic}",
        Route::Topic,
        &[Method::GET, Method::DELETE],
    ),
    (
        "/api/topics/{topic}/records",
        Route::Records,
        &[Method::GET, Method::POST],
    ),
    ("/api/sources", Route::Sources, &[Method::GET]),
    ("/api/groups", Route::Groups, &[Method::GET]),
    ("/api/transactions", Route::Transactions, &[Method::GET]),
    ("/api/customers", Route::Customers, &[Method::GET]),
    (
        "/api/customers/{customer_id}",
        Route::Customer,
        &[Method::GET],
    ),
    (
        "/api/customers/{customer_id}/events",
        Route::CustomerEvents,
        &[Method::GET],
    ),
    ("/api/dlq", Route::Dlq, &[Method::GET]),
    ("/api/dlq/replay", Route::DlqReplay, &[Method::POST]),
    ("/api/dlq/skip", Route::DlqSkip, &[Method::POST]),
    (
        "/api/faults",
        Route::Faults,
        &[Method::GET, Method::POST, Method::DELETE],
    ),
    ("/api/faults/{id}", Route::Fault, &[Method::DELETE]),
    ("/api/forward", Route::Forward, &[Method::GET]),
];

/// The listener's routes and the settings its checks use.
struct Server {
    sources: Sources,
    router: matchit::Router<usize>,
    token: Option<String>,
    max_body: usize,
    /// `http.metrics.public`: /metrics answers without the token.
    metrics_public: bool,
    /// Host names answered besides localhost and IP addresses (`http.allowed.hosts` and the
    /// name in `http.listen`), lower case; `None`: any (`*`).
    hosts: Option<Vec<String>>,
    /// Origins of other sites whose pages may call the API (`http.cors.allowed.origins`), as
    /// [`normalize_origin`] writes them; `None`: any (`*`).
    origins: Option<Vec<String>>,
    /// `http` or `https`: the scheme of this listener's own origin.
    scheme: &'static str,
}

impl Server {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> ApiResult {
        let path = req.uri().path().to_string();
        let Ok(m) = self.router.at(&path) else {
            return Err(ApiError::not_found(format!(
                "no such path: {path} (see docs/openapi.json)"
            )));
        };
        let (_, route, methods) = ROUTES[*m.value];
        let params: Vec<(String, String)> = m
            .params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
            .collect();
        let method = req.method().clone();
        let allowed =
            methods.contains(&method) || (method == Method::HEAD && methods.contains(&Method::GET));
        if !allowed {
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut r = error_response(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on {path}; allowed: {}",
                    allow.join(", ")
                ),
            ));
            if let Ok(v) = allow.join(", ").parse() {
                r.headers_mut().insert(hyper::header::ALLOW, v);
            }
            return Ok(r);
        }
        let open = match route {
            Route::Health | Route::Dashboard => true,
            Route::Metrics => self.metrics_public,
            _ => false,
        };
        if !open && !self.authorized(&req) {
            let hint = if route == Route::Metrics {
                " (or set http.metrics.public=true to let scrapers in without it)"
            } else {
                ""
            };
            let mut r = error_response(&ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("this kafkabox needs a bearer token (http.token): send Authorization: Bearer <token>{hint}"),
            ));
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"kafkabox\""),
            );
            return Ok(r);
        }
        let query = Query::parse(req.uri().query());
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = bounded_body(req, self.max_body).await?;
        let r = Req {
            method: if method == Method::HEAD {
                Method::GET
            } else {
                method
            },
            params,
            query,
            body,
            content_type,
        };
        let s = &self.sources;
        match route {
            Route::Health => {
                r.query.only(&[])?;
                Ok(respond(StatusCode::OK, "text/plain", "ok\n".into()))
            }
            Route::Ready => status::ready(s, &r),
            Route::Metrics => {
                r.query.only(&[])?;
                let s2 = s.clone();
                let body = blocking(move || Ok(metrics::render(&s2))).await?;
                Ok(respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body.into(),
                ))
            }
            Route::Dashboard => Ok(respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(dashboard::PAGE.as_bytes()),
            )),
            Route::Topics => topics::topics(s, r).await,
            Route::Topic => topics::topic(s, r).await,
            Route::Records => records::records(s, r).await,
            Route::Sources => status::sources(s, &r),
            Route::Groups => status::groups(s, r).await,
            Route::Transactions => status::transactions(s, r).await,
            Route::Customers => customers::list(s, r).await,
            Route::Customer => customers::profile(s, r).await,
            Route::CustomerEvents => customers::events(s, r).await,
            Route::Dlq => dlq::list(s, r).await,
            Route::DlqReplay => dlq::replay(s, r).await,
            Route::DlqSkip => dlq::skip(s, r).await,
            Route::Faults => faults::faults(s, r),
            Route::Fault => faults::fault(s, r),
            Route::Forward => status::forward(s, &r),
        }
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    server: Arc<Server>,
) -> Result<Resp, Infallible> {
    let method = req.method().to_string();
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let mut cors = false;
    let mut r = match server.answer(req, &mut cors).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(origin) = origin {
        // The answer depends on the Origin: caches must not hand one origin's to another.
        r.headers_mut().append(
            hyper::header::VARY,
            hyper::header::HeaderValue::from_static("Origin"),
        );
        if cors {
            r.headers_mut()
                .insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }
    server
        .sources
        .services
        .metrics
        .http_requests
        .get_or_create(&crate::services::metrics::HttpLabels {
            method,
            status: r.status().as_u16(),
        })
        .inc();
    Ok(r)
}

/// Binds `addr` and serves until `shutdown` flips. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let config = sources.services.config.clone();
    // https:// in http.listen: TLS with the Kafka listeners' certificate (ssl.keystore.location).
    let tls = if config.http_tls {
        Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &config,
            &[b"http/1.1"],
        )?))
    } else {
        None
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let mut router = matchit::Router::new();
    for (i, (path, _, _)) in ROUTES.iter().enumerate() {
        router
            .insert(*path, i)
            .map_err(|e| anyhow::anyhow!("route {path}: {e}"))?;
    }
    // The names this listener answers to besides localhost and IP addresses: the host of
    // http.listen when it is a name, and http.allowed.hosts.
    let hosts = if config.http_allowed_hosts.iter().any(|h| h == "*") {
        None
    } else {
        let mut names = config.http_allowed_hosts.clone();
        if let Some(l) = &config.http_listen {
            if let Ok((host, _)) = crate::config::parse_host_port(l) {
                names.push(host.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Some(names)
    };
    let origins = if config.http_cors_allowed_origins.iter().any(|o| o == "*") {
        None
    } else {
        Some(
            config
                .http_cors_allowed_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
        )
    };
    let server = Arc::new(Server {
        sources,
        router,
        token: config.http_token.as_ref().map(|t| t.0.clone()),
        max_body: config.http_max_body_bytes,
        metrics_public: config.http_metrics_public,
        hosts,
        origins,
        scheme: if tls.is_some() { "https" } else { "http" },
    });
    let scheme = server.scheme;
    tracing::info!(
        addr = %bound,
        token = server.token.is_some(),
        "HTTP listener ready: dashboard at {scheme}://{bound}/, API under /api, /health, /ready, /metrics"
    );
    if server.token.is_none() && config.authenticates() {
        tracing::warn!(
            addr = %bound,
            "the Kafka listeners authenticate clients but the HTTP API has no http.token: whoever reaches {bound} can read records and profiles, produce and replay dead letters; set http.token"
        );
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            // At most MAX_CONNECTIONS at once: the next accept waits for one to close.
            let permit = tokio::select! {
                _ = shutdown.changed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let server = server.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_one(stream, server).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        );
                        if let Ok(Ok(stream)) = handshake.await {
                            serve_one(stream, server).await
                        }
                    }
                }
                drop(permit);
            });
        }
    });
    Ok((bound, task))
}

/// One HTTP/1.1 connection, plain or TLS, for at most 120 s.
async fn serve_one<S>(stream: S, server: Arc<Server>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| route(req, server.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(120), conn).await;
}
