//! The HTTP listener (hyper, routes by `matchit`), localhost by default (`http.listen`). Every
//! path is documented in docs/openapi.json, which a test checks the server against:
//!
//! - `/health`, `/ready`, `/metrics` (Prometheus), `/` (the dashboard, [`dashboard`]);
//! - `/api/topics[/{topic}[/records]]` ([`topics`], [`records`]): list, describe, create,
//!   delete, browse and produce;
//! - `/api/sources` and `/api/groups` ([`status`]): ingest per source, groups and stages with
//!   their lag;
//! - `/api/customers[/{id}[/events]]` ([`customers`]);
//! - `/api/dlq`, `/api/dlq/replay`, `/api/dlq/skip` ([`dlq`]).
//!
//! Handlers call the domain services; store work runs on blocking threads. Errors are JSON
//! `{"error": "..."}` with a 4xx/5xx status; bodies are capped at `http.max.body.bytes` and
//! every list at a documented maximum. With `http.token` set, all but `/health`, `/metrics` and
//! the dashboard page need `Authorization: Bearer <token>`.

pub mod customers;
pub mod dashboard;
pub mod dlq;
pub mod faults;
pub mod metrics;
pub mod records;
pub mod status;
pub mod topics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kafkabox_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::{IngestStats, Lag};
use crate::services::dead_letters::DeadLetters;
use crate::services::{Error, Services};

/// What the HTTP listener reports on and steers.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: Store,
    pub lag: Lag,
    pub stats: IngestStats,
    pub services: Arc<Services>,
    pub dead_letters: Arc<DeadLetters>,
}

/// A response.
pub type Resp = Response<Full<Bytes>>;

/// Most HTTP connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Most topics, groups or partitions one JSON answer lists.
pub const MAX_ITEMS: usize = 10_000;

/// A request refused or failed: a status and a message, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::UnknownTopic(_)
            | Error::UnknownTopicOrPartition(_)
            | Error::GroupIdNotFound(_)
            | Error::OffsetOutOfRange(_) => StatusCode::NOT_FOUND,
            Error::TopicExists(_) | Error::NonEmptyGroup(_) => StatusCode::CONFLICT,
            Error::GroupAuthorization(_) | Error::PolicyViolation(_) => StatusCode::FORBIDDEN,
            Error::Storage(s) => {
                tracing::error!(error = %s, "storage failure answering an HTTP request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<kafkabox_storage::StoreError> for ApiError {
    fn from(e: kafkabox_storage::StoreError) -> ApiError {
        ApiError::from(Error::Storage(e))
    }
}

pub type ApiResult = Result<Resp, ApiError>;

/// A JSON answer.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    respond(status, "application/json", v.to_string().into())
}

/// `200 OK` with `v`.
pub fn ok(v: serde_json::Value) -> ApiResult {
    Ok(json(StatusCode::OK, &v))
}

fn respond(status: StatusCode, ctype: &str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error_response(e: &ApiError) -> Resp {
    json(e.status, &serde_json::json!({ "error": e.message }))
}

/// Runs store work on a blocking thread.
pub async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")))?
}

/// The query parameters of a request, percent-decoded. Unknown names are refused, so a typo
/// is a 400 and not a silently ignored filter.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Refuses parameters other than `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) if known.is_empty() => Err(ApiError::bad_request(format!(
                "unknown query parameter '{k}': this path takes none"
            ))),
            Some((k, _)) => Err(ApiError::bad_request(format!(
                "unknown query parameter '{k}'; known: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                Ok(n) => Err(ApiError::bad_request(format!(
                    "{name}={n}: must be between {min} and {max}"
                ))),
                Err(_) => Err(ApiError::bad_request(format!(
                    "{name}='{v}': expected an integer"
                ))),
            },
        }
    }

    /// An optional integer parameter within `min..=max`.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.int(name, 0, min, max).map(Some),
        }
    }
}

/// A request as the route handlers see it.
pub struct Req {
    pub method: Method,
    pub params: Vec<(String, String)>,
    pub query: Query,
    pub body: Bytes,
    pub content_type: String,
}

impl Req {
    /// A path parameter, percent-decoded.
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("expected a JSON body"));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))
    }
}

/// The routes: path pattern, the methods it answers, whether it needs the token.
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

struct Server {
    sources: Sources,
    router: matchit::Router<usize>,
    token: Option<String>,
    max_body: usize,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Server {
    fn authorized(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }

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
        let open = matches!(route, Route::Health | Route::Metrics | Route::Dashboard);
        if !open && !self.authorized(&req) {
            let mut r = error_response(&ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this kafkabox needs a bearer token (http.token): send Authorization: Bearer <token>",
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
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(self.too_large());
        }
        let body = match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(self.too_large())
            }
            Err(e) => return Err(ApiError::bad_request(format!("reading the body: {e}"))),
        };
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

    fn too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over http.max.body.bytes ({} bytes)",
                self.max_body
            ),
        )
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    server: Arc<Server>,
) -> Result<Resp, Infallible> {
    let method = req.method().to_string();
    let r = match server.handle(req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
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
    let server = Arc::new(Server {
        sources,
        router,
        token: config.http_token.as_ref().map(|t| t.0.clone()),
        max_body: config.http_max_body_bytes,
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
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

/// Bytes shown in JSON: the JSON value itself when they are JSON, else a UTF-8 string, else
/// base64; with the encoding used (`json`, `utf8`, `base64`, or null for null).
pub fn shown(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    match bytes {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(b) => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                (v, "json".into())
            } else if let Ok(s) = std::str::from_utf8(b) {
                (s.into(), "utf8".into())
            } else {
                (
                    base64::engine::general_purpose::STANDARD.encode(b).into(),
                    "base64".into(),
                )
            }
        }
    }
}

/// A record key in JSON: a JSON object or array as itself, else as [`shown`] but never as a
/// JSON number or string (a key `42` is the text "42").
pub fn shown_key(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    match bytes {
        Some(b) if !matches!(b.first(), Some(b'{' | b'[')) => match std::str::from_utf8(b) {
            Ok(s) => (s.into(), "utf8".into()),
            Err(_) => shown(Some(b)),
        },
        other => shown(other),
    }
}

/// Bytes as exact text: a UTF-8 string when they are UTF-8, else base64; with the encoding
/// used (`utf8`, `base64`, or null for null).
pub fn utf8_or_base64(bytes: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    match bytes {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.into(), "utf8".into()),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(b).into(),
                "base64".into(),
            ),
        },
    }
}

/// A header value as text: UTF-8 when it is, else base64 (`value_encoding` says which).
pub fn header_json(k: &[u8], v: Option<&[u8]>) -> serde_json::Value {
    let (value, enc) = utf8_or_base64(v);
    serde_json::json!({
        "key": String::from_utf8_lossy(k),
        "value": value,
        "value_encoding": enc,
    })
}
