//! The HTTP listener against web pages of other sites (issue 20): a page any site serves can make
//! the browser of whoever runs kafkabox call 127.0.0.1. Checked over raw HTTP against the real
//! `kafkabox serve`: bodies must be JSON (415), state-changing requests from other origins are
//! refused (403) unless `http.cors.allowed.origins` lists them (then CORS answers), a `Host`
//! that is not a name of the listener is refused (403; DNS rebinding, `http.allowed.hosts`),
//! and `/metrics` needs `http.token` unless `http.metrics.public`. Then in a real browser
//! (Debian's chromium driven by playwright-core, tests/js/cross_origin.js): a page on another
//! port of 127.0.0.1 (another origin) changes nothing, a page of a listed origin can call the API.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http, http_with, BrokerProcess};

const NEW_TOPIC: &str = r#"{"name": "evil", "partitions": 1}"#;

/// The names of every topic.
fn topic_names(addr: std::net::SocketAddr) -> Vec<String> {
    let a = http(addr, "GET", "/api/topics", None, None);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
        .as_array()
        .expect("a list of topics")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

/// `kafkabox_http_requests_total` of `method` answered `status`.
fn requests(metrics: &str, method: &str, status: u16) -> u64 {
    let needle =
        format!("kafkabox_http_requests_total{{method=\"{method}\",status=\"{status}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn other_origins_hosts_and_non_json_bodies_are_refused() {
    let _watchdog = common::watchdog("other_origins_hosts_and_non_json_bodies_are_refused");
    let dir = tempfile::tempdir().unwrap();
    let app = "http://app.example:3000";
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            &format!("http.cors.allowed.origins={app}"),
            "--set",
            "http.allowed.hosts=kafkabox.test",
        ],
    );
    let addr = broker.http_addr();
    let json_ct = ("Content-Type", "application/json");

    // Bodies must be JSON, on every path alike (what an HTML form or a "simple" fetch sends is
    // not).
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        Some(NEW_TOPIC),
    );
    assert_eq!(a.status, 415, "{}", a.body);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    let a = http_with(addr, "POST", "/api/topics", &[], Some(NEW_TOPIC));
    assert_eq!(a.status, 415, "no Content-Type: {}", a.body);
    let a = http_with(
        addr,
        "POST",
        "/api/topics/customer-events/records",
        &[("Content-Type", "text/plain")],
        Some(r#"{"records": [{"value": 1}]}"#),
    );
    assert_eq!(a.status, 415, "{}", a.body);
    let a = http_with(
        addr,
        "POST",
        "/api/dlq/skip",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("reason=contract"),
    );
    assert_eq!(a.status, 415, "{}", a.body);
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[("Content-Type", "application/json; charset=utf-8")],
        Some(r#"{"name": "json-with-charset", "partitions": 1}"#),
    );
    assert_eq!(a.status, 201, "parameters are allowed: {}", a.body);

    // A page of another origin may change nothing: 403, no topic, no CORS headers.
    let evil = ("Origin", "http://evil.example");
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[json_ct, evil],
        Some(NEW_TOPIC),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("http.cors.allowed.origins"),
        "{}",
        a.body
    );
    assert_eq!(a.header("access-control-allow-origin"), None);
    let a = http_with(
        addr,
        "DELETE",
        "/api/topics/json-with-charset",
        &[evil],
        None,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // Without an Origin, the browser's Sec-Fetch-Site says where the request comes from.
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[json_ct, ("Sec-Fetch-Site", "cross-site")],
        Some(NEW_TOPIC),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // Its preflight is refused too.
    let a = http_with(
        addr,
        "OPTIONS",
        "/api/topics",
        &[
            evil,
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        None,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);
    // A read is served, but without CORS headers: the browser hides the answer from the page.
    let a = http_with(addr, "GET", "/api/topics", &[evil], None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("vary"), Some("Origin"));
    let names = topic_names(addr);
    assert!(!names.iter().any(|n| n == "evil"), "{names:?}");
    assert!(names.iter().any(|n| n == "json-with-charset"), "{names:?}");

    // The listener's own origin (the dashboard's) passes.
    let own = format!("http://{addr}");
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[json_ct, ("Origin", own.as_str())],
        Some(r#"{"name": "from-dashboard", "partitions": 1}"#),
    );
    assert_eq!(a.status, 201, "{}", a.body);

    // A listed origin: its preflight is answered, then its request, both with CORS headers.
    let a = http_with(
        addr,
        "OPTIONS",
        "/api/topics",
        &[
            ("Origin", app),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, authorization",
            ),
        ],
        None,
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(app));
    assert!(a
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST") && m.contains("DELETE")));
    let allowed_headers = a.header("access-control-allow-headers").unwrap_or("");
    assert!(
        allowed_headers.contains("content-type") && allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert_eq!(a.header("vary"), Some("Origin"));
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[json_ct, ("Origin", app)],
        Some(r#"{"name": "from-app", "partitions": 1}"#),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(app));
    // Its non-JSON body is still refused, and it may read the refusal.
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[("Content-Type", "text/plain"), ("Origin", app)],
        Some(NEW_TOPIC),
    );
    assert_eq!(a.status, 415, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(app));

    // Host: a name this listener does not have is refused (DNS rebinding), reads included.
    let port = addr.port();
    for host in ["evil.example".to_string(), format!("evil.example:{port}")] {
        let a = http_with(addr, "GET", "/api/topics", &[("Host", host.as_str())], None);
        assert_eq!(a.status, 403, "Host {host}: {}", a.body);
        assert!(
            a.json()["error"]
                .as_str()
                .unwrap()
                .contains("http.allowed.hosts"),
            "{}",
            a.body
        );
    }
    let a = http_with(
        addr,
        "POST",
        "/api/topics",
        &[("Host", "evil.example"), json_ct],
        Some(NEW_TOPIC),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("kafkabox.test:{port}"),
        format!("KafkaBox.Test.:{port}"),
        format!("[::1]:{port}"),
        format!("10.1.2.3:{port}"),
    ] {
        let a = http_with(addr, "GET", "/api/topics", &[("Host", host.as_str())], None);
        assert_eq!(a.status, 200, "Host {host}: {}", a.body);
    }
    let names = topic_names(addr);
    assert!(!names.iter().any(|n| n == "evil"), "{names:?}");
    assert!(names.iter().any(|n| n == "from-app"), "{names:?}");
}

#[test]
fn metrics_need_the_token_unless_public() {
    let _watchdog = common::watchdog("metrics_need_the_token_unless_public");
    let dir = tempfile::tempdir().unwrap();
    let guarded =
        BrokerProcess::spawn(&dir.path().join("guarded"), &["--set", "http.token=secret"]);
    let addr = guarded.http_addr();
    let a = http(addr, "GET", "/metrics", None, None);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("http.metrics.public"), "{}", a.body);
    assert!(!a.body.contains("customer-events"), "{}", a.body);
    let a = http(addr, "GET", "/metrics", Some("wrong"), None);
    assert_eq!(a.status, 401, "{}", a.body);
    let a = http(addr, "GET", "/metrics", Some("secret"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("# EOF"), "{}", a.body);
    assert_eq!(http(addr, "GET", "/health", None, None).status, 200);
    drop(guarded);

    let public = BrokerProcess::spawn(
        &dir.path().join("public"),
        &[
            "--set",
            "http.token=secret",
            "--set",
            "http.metrics.public=true",
        ],
    );
    let addr = public.http_addr();
    let a = http(addr, "GET", "/metrics", None, None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("# EOF"), "{}", a.body);
    assert_eq!(http(addr, "GET", "/api/topics", None, None).status, 401);
}

/// The page the other origins serve: `attack(kb, name, offset)` tries to create topic `name`
/// and skip dead letter `offset` of customer-events.dlq on the kafkabox at `kb`, as a page of
/// any web site could, and says what the browser let it see.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>another origin</title></head>
<body>
<p>A page of another origin.</p>
<iframe name="sink" id="sink"></iframe>
<script>
// What one call gave the page: status and body when the browser let it read the answer, else
// the error fetch threw (a CORS refusal).
async function call(url, init) {
  try {
    const r = await fetch(url, init);
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { error: String(e) };
  }
}
window.attack = async function (kb, name, offset) {
  const topic = JSON.stringify({ name: name, partitions: 1 });
  const skip = JSON.stringify({ topic: "customer-events.dlq", partition: 0, offset: offset });
  const out = {};
  // "Simple" requests (text/plain, no preflight): the browser sends them at once.
  out.simple = await call(kb + "/api/topics", { method: "POST", body: topic });
  out.skip = await call(kb + "/api/dlq/skip", { method: "POST", body: skip });
  // JSON: the browser asks first (preflight) and sends only when allowed.
  out.json = await call(kb + "/api/topics", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: topic,
  });
  out.read = await call(kb + "/api/topics", {});
  // A form, posted into the iframe.
  const form = document.createElement("form");
  form.method = "POST";
  form.action = kb + "/api/dlq/skip";
  form.target = "sink";
  for (const [k, v] of [["topic", "customer-events.dlq"], ["partition", "0"], ["offset", String(offset)]]) {
    const input = document.createElement("input");
    input.name = k;
    input.value = v;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  const sink = document.getElementById("sink");
  out.form = await new Promise((resolve) => {
    sink.addEventListener("load", () => resolve("loaded"), { once: true });
    setTimeout(() => resolve("no load within 10 s"), 10000);
    form.submit();
  });
  return out;
};
</script>
</body>
</html>
"#;

/// Serves [`PAGE`] on a port of its own of 127.0.0.1 (an origin of its own), each connection on
/// a thread, every read and write bounded; returns the page's URL.
fn serve_page() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the page's server");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if head.starts_with(b"GET / ") {
                    ("200 OK", PAGE)
                } else {
                    ("404 Not Found", "")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{addr}/")
}

#[test]
fn pages_of_other_origins_change_nothing_in_chromium() {
    let _watchdog = common::watchdog("pages_of_other_origins_change_nothing_in_chromium");
    let (js, chromium) = common::browser();
    // Two pages on two other ports: two origins, only the second listed.
    let other_page = serve_page();
    let allowed_page = serve_page();
    let allowed_origin = allowed_page.trim_end_matches('/').to_string();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            &format!("http.cors.allowed.origins={allowed_origin}"),
        ],
    );
    let addr = broker.http_addr();

    // A dead letter for the pages to try to skip: an event the contract refuses.
    let a = http(
        addr,
        "POST",
        "/api/topics/customer-events/records",
        None,
        Some(r#"{"records": [{"value": {"source": "web"}}]}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    let offset = loop {
        let a = http(addr, "GET", "/api/dlq", None, None);
        if let Some(d) = a.json()["dead_letters"].as_array().and_then(|l| l.first()) {
            assert_eq!(d["status"], "pending", "{d}");
            break d["offset"].as_i64().expect("the dead letter's offset");
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter within 60 s: {}",
            a.body
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let run = Command::new("node")
        .current_dir(&js)
        .arg("cross_origin.js")
        .arg(format!("http://{addr}"))
        .arg(&other_page)
        .arg(&allowed_page)
        .arg(offset.to_string())
        .env("KB_CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "cross_origin.js failed: {}\n{stdout}\n{}\nbroker log:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr),
        broker.log_text()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .expect("cross_origin.js result");

    // The other origin's page could neither read nor change anything ...
    let other = &seen["other"];
    for call in ["simple", "skip", "json", "read"] {
        assert!(
            other[call]["error"].is_string(),
            "the other origin's {call} call was not refused by the browser: {other}"
        );
    }
    // ... because the box refused it (not only because the browser hid the answers): the
    // simple POSTs and the form got 403, the JSON POST's preflight too, so it was never sent.
    let metrics = http(addr, "GET", "/metrics", None, None).body;
    assert!(requests(&metrics, "POST", 403) >= 3, "{metrics}");
    assert!(requests(&metrics, "OPTIONS", 403) >= 1, "{metrics}");
    let names = topic_names(addr);
    assert!(!names.iter().any(|n| n == "evil"), "{names:?}");

    // The listed origin's page may call the API, with JSON only.
    let allowed = &seen["allowed"];
    assert_eq!(allowed["simple"]["status"], 415, "{allowed}");
    assert_eq!(allowed["skip"]["status"], 415, "{allowed}");
    assert_eq!(allowed["json"]["status"], 201, "{allowed}");
    assert_eq!(allowed["read"]["status"], 200, "{allowed}");
    assert!(
        allowed["read"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("from-page")),
        "{allowed}"
    );
    assert!(topic_names(addr).iter().any(|n| n == "from-page"));

    // Nobody skipped the dead letter (the form sent no JSON).
    let a = http(addr, "GET", "/api/dlq?status=skipped", None, None);
    assert_eq!(
        a.json()["dead_letters"],
        serde_json::json!([]),
        "{}",
        a.body
    );
    let a = http(addr, "GET", "/api/dlq", None, None);
    let letters = a.json()["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        letters
            .iter()
            .any(|d| d["offset"] == offset && d["status"] == "pending"),
        "{}",
        a.body
    );
}
