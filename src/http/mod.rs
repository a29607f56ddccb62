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
//! every list at a documented maximum. With `http.token` set, all but `/health` and the
//! dashboard page need `Authorization: Bearer <token>` (`/metrics` too, unless
//! `http.metrics.public`).
//!
//! Before routing, every request passes the checks that keep web pages of other sites out
//! (the API has no cookies, but a browser on the operator's machine reaches 127.0.0.1): its
//! Host must be a name of this listener (DNS rebinding; `http.allowed.hosts`), a state-changing
//! request from a page of another origin is refused unless `http.cors.allowed.origins` lists
//! it, and every body is JSON (`Content-Type`), which no HTML form can send.

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

/// Media types a request body may have: JSON, and the REST Proxy's name for it (produce).
const JSON_TYPES: &[&str] = &["application/json", "application/vnd.kafka.json.v2+json"];

/// The methods a CORS preflight may ask for: every method of [`ROUTES`].
const CORS_METHODS: &str = "GET, HEAD, POST, DELETE";

/// The media type of a `Content-Type` value: lower case, without parameters (`; charset=...`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// An origin as compared: lower case, without a final `/` nor the scheme's default port
/// (browsers send `http://host`, never `http://host:80`).
pub fn normalize_origin(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let default_port = if o.starts_with("http://") {
        ":80"
    } else if o.starts_with("https://") {
        ":443"
    } else {
        return o;
    };
    match o.strip_suffix(default_port) {
        Some(rest) => rest.to_string(),
        None => o,
    }
}

/// The host of an authority (`name`, `1.2.3.4`, `[::1]`, each with or without `:port`): lower
/// case, without brackets nor a final dot.
fn host_part(authority: &str) -> String {
    let a = authority.trim();
    let host = match a.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => a.split(':').next().unwrap_or(""),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The authority a request was sent to: the absolute URI's, else the Host header; lower case.
/// `None` without either (HTTP/1.0 clients; browsers always send Host).
fn authority(req: &Request<hyper::body::Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        let a = a.as_str();
        let a = a.rsplit_once('@').map_or(a, |(_, host)| host);
        return Some(a.to_ascii_lowercase());
    }
    req.headers()
        .get(hyper::header::HOST)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
}

/// Whether a request asks to change something (or, as a CORS preflight, asks whether it may):
/// anything but GET, HEAD and a plain OPTIONS.
fn changes_state(req: &Request<hyper::body::Incoming>) -> bool {
    match *req.method() {
        Method::GET | Method::HEAD => false,
        Method::OPTIONS => req
            .headers()
            .contains_key(hyper::header::ACCESS_CONTROL_REQUEST_METHOD),
        _ => true,
    }
}

/// Refuses a state-changing request whose body is not JSON (415): POST always, other methods
/// when they carry a body. HTML forms and "simple" cross-site `fetch`es can send only
/// `text/plain`, `application/x-www-form-urlencoded` and `multipart/form-data`.
fn check_content_type(req: &Request<hyper::body::Incoming>) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = req.headers();
    let has_body = headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0));
    if *req.method() != Method::POST && !has_body {
        return Ok(());
    }
    let ct = media_type(
        headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    if JSON_TYPES.contains(&ct.as_str()) {
        return Ok(());
    }
    let given = if ct.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("content type '{ct}'")
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "{given}: {} bodies must be JSON, sent with Content-Type: application/json (or application/vnd.kafka.json.v2+json)",
            req.method()
        ),
    ))
}

/// The answer to an allowed origin's CORS preflight (its Access-Control-Allow-Origin is added
/// by [`route`]).
fn preflight() -> Resp {
    use hyper::header::{
        HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_MAX_AGE,
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Server {
    /// Refuses a Host that is not a name of this listener (403): a page whose own name was
    /// made to resolve to 127.0.0.1 (DNS rebinding) sends its own name. localhost and IP
    /// addresses always pass.
    fn check_host(&self, req: &Request<hyper::body::Incoming>) -> Result<(), ApiError> {
        let Some(authority) = authority(req) else {
            return Ok(());
        };
        let host = host_part(&authority);
        let known = host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || self
                .hosts
                .as_ref()
                .is_none_or(|names| names.contains(&host));
        if known {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host '{host}' is not a name of this kafkabox: list it in http.allowed.hosts (localhost, IP addresses and the host of http.listen always pass)"
            ),
        ))
    }

    /// Whether `origin` may call the API: this listener's own origin (the page it serves),
    /// or one `http.cors.allowed.origins` lists.
    fn origin_allowed(&self, origin: &str, authority: Option<&str>) -> bool {
        let o = normalize_origin(origin);
        authority.is_some_and(|a| normalize_origin(&format!("{}://{a}", self.scheme)) == o)
            || self.origins.as_ref().is_none_or(|list| list.contains(&o))
    }

    /// Refuses a state-changing request (or its preflight) from a page of another origin
    /// (403), unless `http.cors.allowed.origins` lists it. `Ok(true)`: the request comes from an
    /// allowed origin, whose name the answer carries in Access-Control-Allow-Origin.
    fn check_origin(&self, req: &Request<hyper::body::Incoming>) -> Result<bool, ApiError> {
        let writes = changes_state(req);
        let method = req.method();
        match req.headers().get(hyper::header::ORIGIN) {
            Some(v) => {
                let origin = v.to_str().unwrap_or("(not text)");
                if self.origin_allowed(origin, authority(req).as_deref()) {
                    Ok(true)
                } else if writes {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "{method} from a page of {origin} refused: another origin may only read; list it in http.cors.allowed.origins to let its pages call this API"
                        ),
                    ))
                } else {
                    // Served, without CORS headers: the browser hides the answer from the page.
                    Ok(false)
                }
            }
            None => {
                let cross_site = req
                    .headers()
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"));
                if writes && cross_site {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "cross-site {method} without an Origin refused; list the calling page's origin in http.cors.allowed.origins"
                        ),
                    ));
                }
                Ok(false)
            }
        }
    }

    /// The checks before routing, then the route. `cors` is set when the answer may name the
    /// request's origin in Access-Control-Allow-Origin.
    async fn answer(&self, req: Request<hyper::body::Incoming>, cors: &mut bool) -> ApiResult {
        self.check_host(&req)?;
        *cors = self.check_origin(&req)?;
        if *cors && changes_state(&req) && *req.method() == Method::OPTIONS {
            return Ok(preflight());
        }
        check_content_type(&req)?;
        self.handle(req).await
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_origins_and_media_types_are_compared_as_browsers_send_them() {
        assert_eq!(host_part("LocalHost:8080"), "localhost");
        assert_eq!(host_part("box.example.com."), "box.example.com");
        assert_eq!(host_part("[::1]:8080"), "::1");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert_eq!(
            normalize_origin("HTTP://App.Example:80/"),
            "http://app.example"
        );
        assert_eq!(
            normalize_origin("https://app.example:443"),
            "https://app.example"
        );
        assert_eq!(
            normalize_origin("http://app.example:8080"),
            "http://app.example:8080"
        );
        assert_eq!(normalize_origin("null"), "null");
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(media_type(""), "");
    }
}
