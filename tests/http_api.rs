//! The HTTP API of the real `kafkabox serve`, checked against docs/openapi.json: every
//! documented path and method is called, every answer's status must be documented for it and
//! its JSON body must match the documented schema; nothing answers that is not documented.
//! Events come from a real Kafka producer (rdkafka) and from HTTP produce; a Kafka consumer
//! reads what HTTP produced.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{http, BrokerProcess, HttpAnswer};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

struct Spec {
    doc: Value,
    exercised: BTreeSet<(String, String)>,
}

impl Spec {
    fn load() -> Spec {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
                .expect("docs/openapi.json");
        Spec {
            doc: serde_json::from_str(&text).expect("docs/openapi.json is JSON"),
            exercised: BTreeSet::new(),
        }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut cur = &self.doc;
                for part in r.trim_start_matches("#/").split('/') {
                    cur = &cur[part];
                }
                cur
            }
            None => v,
        }
    }

    /// Checks `a` (an answer to `method` on the documented `pattern`) against the spec.
    fn check(&mut self, method: &str, pattern: &str, a: &HttpAnswer) {
        self.exercised
            .insert((method.to_ascii_lowercase(), pattern.to_string()));
        let op = &self.doc["paths"][pattern][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {pattern} is not in docs/openapi.json"
        );
        let documented = &op["responses"][a.status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {pattern} answered {} which docs/openapi.json does not document: {}",
            a.status,
            a.body
        );
        let documented = self.resolve(documented);
        let content = &documented["content"];
        if let Some(schema) = content.as_object().and_then(|c| {
            c.iter()
                .find(|(k, _)| k.contains("json"))
                .map(|(_, v)| &v["schema"])
        }) {
            let mut root = schema.clone();
            root["components"] = self.doc["components"].clone();
            let validator = jsonschema::validator_for(&root)
                .unwrap_or_else(|e| panic!("schema of {method} {pattern} {}: {e}", a.status));
            let body = a.json();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {pattern} {}: the body does not match docs/openapi.json: {errors:?}\n{body}",
                a.status
            );
            let ctype = a.header("content-type").unwrap_or("");
            assert!(
                ctype.contains("json"),
                "{method} {pattern}: content-type {ctype}"
            );
        }
    }

    fn documented(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for m in ["get", "post", "put", "delete", "patch"] {
                if item.get(m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }
}

/// Calls and checks: `pattern` is the documented path, `path` the concrete one.
fn call(
    spec: &mut Spec,
    addr: std::net::SocketAddr,
    method: &str,
    pattern: &str,
    path: &str,
    body: Option<Value>,
) -> HttpAnswer {
    let body = body.map(|b| b.to_string());
    let a = http(addr, method, path, Some(TOKEN), body.as_deref());
    spec.check(method, pattern, &a);
    a
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn event(customer: &str, source: &str, i: usize) -> String {
    json!({
        "customer_id": customer,
        "event_type": "recharge",
        "timestamp": format!("2024-01-15T10:3{i}:00Z"),
        "source": source,
        "value": 10.0 * (i as f64 + 1.0),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_matches_openapi_and_works() {
    let _watchdog = common::watchdog("http_api_matches_openapi_and_works");
    let dir = tempfile::tempdir().unwrap();
    let common::FlakyDownstream {
        flag,
        out,
        command: exec,
    } = common::FlakyDownstream::new(dir.path());
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            &format!("http.token={TOKEN}"),
            "--set",
            "http.max.body.bytes=65536",
            "--set",
            "customer.events.handlers=profile,exec",
            "--set",
            &format!("exec.command={exec}"),
        ],
    );
    let addr = broker.http_addr();
    let mut spec = Spec::load();

    // The token: needed everywhere but /health and the page (/metrics too: it names every
    // topic; http.metrics.public is not set).
    let a = http(addr, "GET", "/api/topics", None, None);
    spec.check("GET", "/api/topics", &a);
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").is_some());
    let a = http(addr, "GET", "/api/topics", Some("wrong"), None);
    assert_eq!(a.status, 401);
    let a = http(addr, "GET", "/metrics", None, None);
    spec.check("GET", "/metrics", &a);
    assert_eq!(a.status, 401, "{}", a.body);
    for (pattern, path) in [("/health", "/health"), ("/", "/")] {
        let a = http(addr, "GET", path, None, None);
        spec.check("GET", pattern, &a);
        assert_eq!(a.status, 200, "{path}");
    }
    let a = http(addr, "GET", "/metrics", Some(TOKEN), None);
    spec.check("GET", "/metrics", &a);
    assert_eq!(a.status, 200);
    let a = call(&mut spec, addr, "GET", "/ready", "/ready", None);
    assert_eq!(a.status, 200);
    assert!(a.json()["stages"]
        .as_array()
        .unwrap()
        .contains(&json!("exec")));

    // Three valid events and one invalid from a real Kafka producer.
    let p = common::producer(broker.addr, &[]);
    for i in 0..3 {
        let e = event("C-1", "crm", i);
        p.send(
            rdkafka::producer::FutureRecord::to("customer-events")
                .key("C-1")
                .payload(&e),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    }
    p.send(
        rdkafka::producer::FutureRecord::<(), _>::to("customer-events")
            .payload(r#"{"source":"crm"}"#),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
    wait_for("the sources to count 4 events", || {
        let a = call(&mut spec, addr, "GET", "/api/sources", "/api/sources", None);
        a.json()["crm"]["received"] == 4
    });
    let sources = call(&mut spec, addr, "GET", "/api/sources", "/api/sources", None).json();
    assert_eq!(sources["crm"]["valid"], 3);
    assert_eq!(sources["crm"]["rejected"], 1);
    assert!(sources["crm"]["last_rejection"]
        .as_str()
        .unwrap()
        .contains("customer_id"));
    assert!(
        sources["crm"]["per_minute"][0]["received"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // Customers: search, profile, timeline.
    wait_for("the profile", || {
        let a = call(
            &mut spec,
            addr,
            "GET",
            "/api/customers/{customer_id}",
            "/api/customers/C-1",
            None,
        );
        a.status == 200 && a.json()["events"] == 3
    });
    let found = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers",
        "/api/customers?q=c-",
        None,
    )
    .json();
    assert_eq!(found["customers"][0]["customer_id"], "C-1");
    assert_eq!(found["customers"][0]["events"], 3);
    let none = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers",
        "/api/customers?q=zzz",
        None,
    )
    .json();
    assert_eq!(none["customers"], json!([]));
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers",
        "/api/customers?limit=0",
        None,
    );
    assert_eq!(a.status, 400);
    let timeline = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers/{customer_id}/events",
        "/api/customers/C-1/events",
        None,
    )
    .json();
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["event"]["value"], 30.0,
        "newest first: {timeline}"
    );
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers/{customer_id}/events",
        "/api/customers/C-1/events?limit=1",
        None,
    );
    assert_eq!(a.json()["events"].as_array().unwrap().len(), 1);
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers/{customer_id}/events",
        "/api/customers/nobody/events",
        None,
    );
    assert_eq!(a.status, 404);
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/customers/{customer_id}",
        "/api/customers/nobody",
        None,
    );
    assert_eq!(a.status, 404);

    // Dead letters: the contract's one and the exec handler's three.
    wait_for("the handler's dead letters", || {
        let a = call(
            &mut spec,
            addr,
            "GET",
            "/api/dlq",
            "/api/dlq?stage=exec",
            None,
        );
        a.json()["dead_letters"].as_array().unwrap().len() == 3
    });
    let all = call(&mut spec, addr, "GET", "/api/dlq", "/api/dlq", None).json();
    let all = all["dead_letters"].as_array().unwrap();
    assert_eq!(all.len(), 4);
    let contract: Vec<&Value> = all.iter().filter(|d| d["stage"] == "contract").collect();
    assert_eq!(contract.len(), 1);
    assert_eq!(contract[0]["replayable"], false);
    assert_eq!(contract[0]["original"]["topic"], "customer-events");
    assert_eq!(contract[0]["original"]["offset"], 3);
    assert_eq!(contract[0]["source"], "crm");
    let handler: Vec<&Value> = all.iter().filter(|d| d["stage"] == "exec").collect();
    assert!(handler
        .iter()
        .all(|d| d["replayable"] == true && d["status"] == "pending"));
    assert!(handler[0]["reason"]
        .as_str()
        .unwrap()
        .contains("downstream is down"));
    assert_eq!(handler[0]["key"], "C-1");
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/dlq",
        "/api/dlq?source=nobody",
        None,
    );
    assert_eq!(a.json()["dead_letters"], json!([]));
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/dlq",
        "/api/dlq?since=99999999999999",
        None,
    );
    assert_eq!(a.json()["dead_letters"], json!([]));
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/dlq",
        "/api/dlq?topic=customer-events&reason=customer_id&limit=10",
        None,
    );
    assert_eq!(a.json()["dead_letters"].as_array().unwrap().len(), 1);
    for bad in [
        "/api/dlq?since=yesterday",
        "/api/dlq?status=lost",
        "/api/dlq?limit=5000",
        "/api/dlq?colour=red",
    ] {
        let a = call(&mut spec, addr, "GET", "/api/dlq", bad, None);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["error"].is_string());
    }

    // Replay while the downstream is still down: nothing recorded.
    let first = handler.iter().min_by_key(|d| d["offset"].as_i64()).unwrap();
    let one = json!({"topic": "customer-events.dlq", "partition": first["partition"], "offset": first["offset"]});
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(one.clone()),
    );
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.json()["results"][0]["result"], "failed");
    // The downstream is fixed: replay one, then the rest of that reason.
    std::fs::remove_file(&flag).unwrap();
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(one.clone()),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["done"], 1);
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(one.clone()),
    );
    assert_eq!(a.status, 409, "replayed twice: {}", a.body);
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(json!({"reason": "downstream is down"})),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["done"], 2, "{}", a.body);
    let handled = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        handled.lines().count(),
        3,
        "each refused event handled once: {handled}"
    );
    for line in handled.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["topic"], "customer-events");
        assert_eq!(v["value"]["customer_id"], "C-1");
    }
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(json!({"reason": "downstream is down"})),
    );
    assert_eq!(a.json()["done"], 0, "nothing left to replay: {}", a.body);
    // A contract violation is not replayed; it can be skipped, once.
    let c = json!({"topic": "customer-events.dlq", "partition": contract[0]["partition"], "offset": contract[0]["offset"]});
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(c.clone()),
    );
    assert_eq!(a.status, 409);
    assert!(a.json()["results"][0]["error"]
        .as_str()
        .unwrap()
        .contains("contract"));
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/skip",
        "/api/dlq/skip",
        Some(c.clone()),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/skip",
        "/api/dlq/skip",
        Some(c.clone()),
    );
    assert_eq!(a.status, 409);
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/dlq",
        "/api/dlq?status=pending",
        None,
    );
    assert_eq!(a.json()["dead_letters"], json!([]));
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/dlq",
        "/api/dlq?status=replayed",
        None,
    );
    assert_eq!(a.json()["dead_letters"].as_array().unwrap().len(), 3);
    for bad in [
        json!({}),
        json!({"topic": "customer-events.dlq", "partition": 0}),
        json!({"nonsense": 1}),
    ] {
        let a = call(
            &mut spec,
            addr,
            "POST",
            "/api/dlq/skip",
            "/api/dlq/skip",
            Some(bad.clone()),
        );
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/dlq/replay",
        "/api/dlq/replay",
        Some(json!({"topic": "customer-events.dlq", "partition": 0, "offset": 99})),
    );
    assert_eq!(a.status, 404, "{}", a.body);

    // Topics: create, describe, list, produce over HTTP, browse, consume with Kafka, delete.
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics",
        "/api/topics",
        Some(json!({"name": "orders", "partitions": 2, "configs": {"retention.ms": 3600000}})),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["configs"]["retention.ms"], "3600000");
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics",
        "/api/topics",
        Some(json!({"name": "orders"})),
    );
    assert_eq!(a.status, 409);
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics",
        "/api/topics",
        Some(json!({"name": "bad name!"})),
    );
    assert_eq!(a.status, 400);
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics",
        "/api/topics",
        Some(json!({"name": "x", "configs": {"retention.ms": "soon"}})),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let produced = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics/{topic}/records",
        "/api/topics/orders/records",
        Some(json!({"records": [
            {"key": "21", "value": {"order": 1}},
            {"value": "plain", "partition": 1, "headers": {"trace": "t-1"}},
            {"key": {"k": 1}, "value": null, "partition": 1}
        ]})),
    );
    assert_eq!(produced.status, 200, "{}", produced.body);
    let offsets = produced.json()["offsets"].clone();
    // Kafka's murmur2 partitioner puts key "21" on partition 0 of 2.
    assert_eq!(
        offsets[0],
        json!({"partition": 0, "offset": 0, "error_code": null, "error": null})
    );
    assert_eq!(offsets[1]["partition"], 1);
    assert_eq!(offsets[1]["offset"], 0);
    assert_eq!(offsets[2]["offset"], 1);
    let page = call(
        &mut spec,
        addr,
        "GET",
        "/api/topics/{topic}/records",
        "/api/topics/orders/records?partition=1&offset=0&limit=10",
        None,
    )
    .json();
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["value"], "plain");
    assert_eq!(recs[0]["value_encoding"], "json");
    assert_eq!(
        recs[0]["headers"][0],
        json!({"key": "trace", "value": "t-1", "value_encoding": "utf8"})
    );
    assert_eq!(recs[1]["key"], json!({"k": 1}));
    assert_eq!(recs[1]["value"], Value::Null);
    assert_eq!(page["next_offset"], 2);
    let page = call(
        &mut spec,
        addr,
        "GET",
        "/api/topics/{topic}/records",
        "/api/topics/orders/records?partition=1&offset=1&limit=1",
        None,
    )
    .json();
    assert_eq!(page["records"][0]["offset"], 1);
    let page = call(
        &mut spec,
        addr,
        "GET",
        "/api/topics/{topic}/records",
        "/api/topics/customer-events/records",
        None,
    )
    .json();
    assert_eq!(page["records"].as_array().unwrap().len(), 4, "{page}");
    assert_eq!(page["records"][3]["value_encoding"], "json");
    for bad in [
        "/api/topics/orders/records?partition=7",
        "/api/topics/nope/records",
    ] {
        let a = call(
            &mut spec,
            addr,
            "GET",
            "/api/topics/{topic}/records",
            bad,
            None,
        );
        assert_eq!(a.status, 404, "{bad}");
    }
    for bad in [
        "/api/topics/orders/records?limit=0",
        "/api/topics/orders/records?offset=-1",
        "/api/topics/orders/records?partition=x",
    ] {
        let a = call(
            &mut spec,
            addr,
            "GET",
            "/api/topics/{topic}/records",
            bad,
            None,
        );
        assert_eq!(a.status, 400, "{bad}");
    }
    // What HTTP produced, a Kafka consumer reads.
    let p0 = common::consume_async(broker.addr, "orders", 0, 0, 1).await;
    assert_eq!(common::payload(&p0[0]), Some(br#"{"order":1}"#.as_slice()));
    let p1 = common::consume_async(broker.addr, "orders", 1, 0, 2).await;
    assert_eq!(common::payload(&p1[0]), Some(br#""plain""#.as_slice()));
    assert_eq!(common::header(&p1[0], "trace").as_deref(), Some("t-1"));
    assert_eq!(common::payload(&p1[1]), None);
    // HTTP produce goes through the contract's reject-free path and the handlers.
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics/{topic}/records",
        "/api/topics/customer-events/records",
        Some(
            json!({"records": [{"key": "C-2", "value": serde_json::from_str::<Value>(&event("C-2", "web", 0)).unwrap()}]}),
        ),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for("the HTTP-produced event in a profile", || {
        call(
            &mut spec,
            addr,
            "GET",
            "/api/customers/{customer_id}",
            "/api/customers/C-2",
            None,
        )
        .status
            == 200
    });
    for (body, status) in [
        (json!({"records": []}), 400),
        (json!({"records": [{"value": 1, "partition": 9}]}), 404),
        (json!({"value": 1}), 400),
    ] {
        let a = call(
            &mut spec,
            addr,
            "POST",
            "/api/topics/{topic}/records",
            "/api/topics/orders/records",
            Some(body.clone()),
        );
        assert_eq!(a.status, status, "{body}: {}", a.body);
    }
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/topics/{topic}/records",
        "/api/topics/nope/records",
        Some(json!({"records": [{"value": 1}]})),
    );
    assert_eq!(a.status, 404);
    let big = json!({"records": [{"value": "x".repeat(70_000)}]}).to_string();
    let a = http(
        addr,
        "POST",
        "/api/topics/orders/records",
        Some(TOKEN),
        Some(&big),
    );
    spec.check("POST", "/api/topics/{topic}/records", &a);
    assert_eq!(a.status, 413);
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/topics/{topic}",
        "/api/topics/orders",
        None,
    )
    .json();
    assert_eq!(a["partition_count"], 2);
    assert_eq!(a["records"], 3);
    assert!(a["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(a["configs"]["cleanup.policy"], "delete");
    let list = call(&mut spec, addr, "GET", "/api/topics", "/api/topics", None).json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"orders") && names.contains(&"customer-events.dlq"),
        "{names:?}"
    );
    let a = call(
        &mut spec,
        addr,
        "DELETE",
        "/api/topics/{topic}",
        "/api/topics/orders",
        None,
    );
    assert_eq!(a.status, 200);
    let a = call(
        &mut spec,
        addr,
        "DELETE",
        "/api/topics/{topic}",
        "/api/topics/orders",
        None,
    );
    assert_eq!(a.status, 404);
    let a = call(
        &mut spec,
        addr,
        "GET",
        "/api/topics/{topic}",
        "/api/topics/orders",
        None,
    );
    assert_eq!(a.status, 404);

    // Groups: the stages with their lag.
    let groups = call(&mut spec, addr, "GET", "/api/groups", "/api/groups", None).json();
    let profile = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "kafkabox.profile")
        .expect("profile stage");
    assert_eq!(profile["stage"], true);
    assert_eq!(profile["lag"], 0);

    // What no documented path answers.
    let a = http(addr, "GET", "/api/nothing", Some(TOKEN), None);
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].as_str().unwrap().contains("/api/nothing"));
    let a = http(addr, "PUT", "/api/topics", Some(TOKEN), Some("{}"));
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, POST"));
    let a = http(addr, "GET", "/health?x=1", None, None);
    assert_eq!(a.status, 400);

    // Metrics of what happened, from the metrics registry.
    let m = http(addr, "GET", "/metrics", Some(TOKEN), None).body;
    for needle in [
        "kafkabox_kafka_requests_total{api=\"Produce\",error=\"NONE\"}",
        "kafkabox_kafka_request_duration_seconds_bucket{le=\"+Inf\",api=\"Produce\"}",
        "kafkabox_appended_records_total{topic=\"customer-events\"} 5",
        "kafkabox_dead_lettered_total{topic=\"customer-events\",source=\"crm\",reason=\"handler\"} 3",
        "kafkabox_dead_lettered_total{topic=\"customer-events\",source=\"crm\",reason=\"contract\"} 1",
        "kafkabox_handler_lag{stage=\"exec\",topic=\"customer-events\",partition=\"0\"} 0",
        "kafkabox_connections ",
        "kafkabox_flush_duration_seconds_count ",
        "kafkabox_storage_size_bytes ",
        "kafkabox_http_requests_total{method=\"GET\",status=\"401\"} 3",
        "# EOF",
    ] {
        assert!(m.contains(needle), "/metrics lacks {needle}:\n{m}");
    }

    // The edge forwarder's status: this box forwards nothing.
    let a = call(&mut spec, addr, "GET", "/api/forward", "/api/forward", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["upstream"], Value::Null);
    assert_eq!(a.json()["partitions"], json!([]));

    // Fault injection: refused on a kept data directory without --allow-faults ...
    let a = call(
        &mut spec,
        addr,
        "POST",
        "/api/faults",
        "/api/faults",
        Some(json!({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER"})),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("--allow-faults"), "{}", a.body);
    // ... allowed with it.
    let fdir = tempfile::tempdir().unwrap();
    let faulty = BrokerProcess::spawn(
        &fdir.path().join("data"),
        &["--allow-faults", "--set", &format!("http.token={TOKEN}")],
    );
    let faddr = faulty.http_addr();
    let a = call(&mut spec, faddr, "GET", "/api/faults", "/api/faults", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({"allowed": true, "faults": []}));
    let a = call(
        &mut spec,
        faddr,
        "POST",
        "/api/faults",
        "/api/faults",
        Some(json!({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "count": 3})),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_u64().unwrap();
    assert_eq!(a.json()["remaining"], 3);
    for (body, wanted) in [
        (json!({"api": "Produce"}), "exactly one"),
        (json!({"api": "Nope", "stall": true}), "unknown api 'Nope'"),
        (
            json!({"api": "Fetch", "error": "NO_SUCH"}),
            "unknown error 'NO_SUCH'",
        ),
        (
            json!({"api": "SaslHandshake", "error": "UNKNOWN_SERVER_ERROR"}),
            "does not take injected errors",
        ),
        (
            json!({"api": "Fetch", "latency_ms": 5, "probability": 2.0}),
            "probability",
        ),
        (json!({"api": "Fetch", "latency": 5}), "unknown field"),
    ] {
        let a = call(
            &mut spec,
            faddr,
            "POST",
            "/api/faults",
            "/api/faults",
            Some(body.clone()),
        );
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.body.contains(wanted), "{body}: {}", a.body);
    }
    let a = call(
        &mut spec,
        faddr,
        "POST",
        "/api/faults",
        "/api/faults",
        Some(json!({"api": "Fetch", "latency_ms": 100, "probability": 0.5})),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let a = call(&mut spec, faddr, "GET", "/api/faults", "/api/faults", None);
    assert_eq!(a.json()["faults"].as_array().unwrap().len(), 2);
    let a = call(
        &mut spec,
        faddr,
        "DELETE",
        "/api/faults/{id}",
        &format!("/api/faults/{id}"),
        None,
    );
    assert_eq!(a.status, 200);
    let a = call(
        &mut spec,
        faddr,
        "DELETE",
        "/api/faults/{id}",
        &format!("/api/faults/{id}"),
        None,
    );
    assert_eq!(a.status, 404);
    let a = call(
        &mut spec,
        faddr,
        "DELETE",
        "/api/faults/{id}",
        "/api/faults/x",
        None,
    );
    assert_eq!(a.status, 400);
    let a = call(
        &mut spec,
        faddr,
        "DELETE",
        "/api/faults",
        "/api/faults",
        None,
    );
    assert_eq!(a.json(), json!({"cleared": 1}));
    let m = http(faddr, "GET", "/metrics", Some(TOKEN), None).body;
    assert!(m.contains("kafkabox_faults_active 0"), "{m}");
    drop(faulty);

    let missing: Vec<_> = spec
        .documented()
        .difference(&spec.exercised)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exercised: {missing:?}"
    );
    drop(p);
}

/// Listing dead letters reads the dead-letter topic from its end backwards in windows: the
/// newest come first, and a filter finds old ones past the first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_listing_reaches_past_the_newest_window() {
    let _watchdog = common::watchdog("dead_letter_listing_reaches_past_the_newest_window");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let addr = broker.http_addr();
    let p = common::producer(broker.addr, &[("linger.ms", "5")]);
    let mut sends = Vec::new();
    for i in 0..2500 {
        let source = if i < 10 { "old" } else { "new" };
        let value = json!({"source": source, "n": i}).to_string();
        sends.push(
            p.send_result(
                rdkafka::producer::FutureRecord::<(), _>::to("customer-events").payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap(),
        );
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    wait_for("2,500 dead letters", || {
        let a = http(addr, "GET", "/api/topics/customer-events.dlq", None, None);
        a.json()["records"] == 2500
    });
    let newest = http(addr, "GET", "/api/dlq?limit=3", None, None).json();
    let offsets: Vec<i64> = newest["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2499, 2498, 2497]);
    let old = http(addr, "GET", "/api/dlq?source=old&limit=1000", None, None).json();
    let old = old["dead_letters"].as_array().unwrap();
    assert_eq!(old.len(), 10);
    assert!(old
        .iter()
        .all(|d| d["original"]["offset"].as_i64().unwrap() < 10));
    let some = http(addr, "GET", "/api/dlq?source=old&limit=4", None, None).json();
    let got: Vec<i64> = some["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![9, 8, 7, 6], "the newest four of the old ones");
}
