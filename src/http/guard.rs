//! The checks every request passes before routing, which keep web pages of other sites out
//! (the API has no cookies, but a browser on the operator's machine reaches 127.0.0.1): its
//! Host must be a name of this listener (DNS rebinding; `http.allowed.hosts`), a
//! state-changing request from a page of another origin is refused unless
//! `http.cors.allowed.origins` lists it (CORS preflights answered here), and every body is
//! JSON (`Content-Type`), which no HTML form can send. Also the bearer token check
//! (`http.token`). tests/http_origin.rs drives them end to end.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use super::{ApiError, ApiResult, Resp, Server};

/// Media types a request body may have: JSON, and the REST Proxy's name for it (produce).
const JSON_TYPES: &[&str] = &["application/json", "application/vnd.kafka.json.v2+json"];

/// The methods a CORS preflight may ask for: every method of [`super::ROUTES`].
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
/// by [`super::route`]).
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
    pub(super) async fn answer(
        &self,
        req: Request<hyper::body::Incoming>,
        cors: &mut bool,
    ) -> ApiResult {
        self.check_host(&req)?;
        *cors = self.check_origin(&req)?;
        if *cors && changes_state(&req) && *req.method() == Method::OPTIONS {
            return Ok(preflight());
        }
        check_content_type(&req)?;
        self.handle(req).await
    }

    /// Whether the request carries `http.token` as its bearer token (always true without one).
    pub(super) fn authorized(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }
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
