//! The request and answer types of the route handlers: [`Req`] (path parameters, [`Query`],
//! the body read up to `http.max.body.bytes`), [`ApiError`] answered as JSON
//! `{"error": "..."}` with its status, JSON answers, and [`blocking`] for store work.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};

use crate::services::Error;

/// A response.
pub type Resp = Response<Full<Bytes>>;

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

pub(super) fn respond(status: StatusCode, ctype: &str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn error_response(e: &ApiError) -> Resp {
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
    pub(super) fn parse(q: Option<&str>) -> Query {
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

/// The body of `req`, at most `max_body` bytes: a larger one, by its Content-Length or as it
/// arrives, is refused (413).
pub(super) async fn bounded_body(
    req: Request<hyper::body::Incoming>,
    max_body: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large(max_body));
    }
    match Limited::new(req.into_body(), max_body).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(max_body))
        }
        Err(e) => Err(ApiError::bad_request(format!("reading the body: {e}"))),
    }
}

fn too_large(max_body: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over http.max.body.bytes ({max_body} bytes)"),
    )
}
