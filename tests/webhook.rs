//! The webhook handler against a real local HTTP server (Python's http.server): down, then
//! 503, then 200 — no event lost, duplicated among the accepted POSTs, or reordered; producers
//! acknowledged throughout; a 400 dead-letters the batch with the status and body.

mod common;

use std::io::BufRead;
use std::time::Duration;

use kafkabox::handlers::webhook::Webhook;
use kafkabox::{Appliance, ApplianceHandle};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

struct PyServer(std::process::Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16, plan: &str, log: &std::path::Path) -> PyServer {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/webhook_server.py"
    );
    let mut child = std::process::Command::new(common::python())
        .args([script, &port.to_string(), plan, log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python webhook server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    PyServer(child)
}

async fn produce(app: &ApplianceHandle, values: &[String]) {
    let p = common::producer(app.kafka_addr(), &[("acks", "all"), ("linger.ms", "0")]);
    for v in values {
        p.send(
            FutureRecord::<(), _>::to("orders").payload(v),
            Duration::from_secs(30),
        )
        .await
        .expect("acknowledged while the webhook target is down");
    }
}

fn posts(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_then_503_then_200_loses_nothing_and_400_dead_letters() {
    let _watchdog = common::watchdog("down_then_503_then_200_loses_nothing_and_400_dead_letters");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("posts.jsonl");
    // A port where nothing listens yet: the target is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/events");
    let app = Appliance::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0")
        .handler("orders", Webhook::new("webhook", &url).unwrap())
        .start()
        .await
        .unwrap();
    let values: Vec<String> = (0..30).map(|i| format!(r#"{{"order":{i}}}"#)).collect();
    produce(&app, &values).await;
    common::wait_until("lag while the target is down", || {
        app.lag().get("webhook", "orders", 0).unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.lag().get("webhook", "orders", 0).unwrap() > 0,
        "nothing handled while down"
    );

    // The target comes up answering 503 twice, then 200.
    let _server = start_server(port, "503,503", &log);
    common::wait_until("the webhook to drain", || {
        app.lag().get("webhook", "orders", 0) == Some(0)
    })
    .await;
    let all = posts(&log);
    assert_eq!(all.iter().filter(|p| p["status"] == 503).count(), 2);
    let accepted: Vec<i64> = all
        .iter()
        .filter(|p| p["status"] == 200)
        .flat_map(|p| p["body"].as_array().unwrap().clone())
        .map(|e| {
            assert_eq!(e["topic"], "orders");
            assert_eq!(
                e["value"]["order"], e["offset"],
                "value parsed as JSON, matches its offset"
            );
            e["offset"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(
        accepted,
        (0..30).collect::<Vec<i64>>(),
        "every event once, in order"
    );

    // A 400 is permanent: the batch goes to the dead-letter topic with status and body.
    produce(&app, &[r#"{"order":"REJECT-ME"}"#.to_string()]).await;
    common::wait_until("the rejected event to be dead-lettered", || {
        let t = app.store().topic("orders.dlq").unwrap();
        app.store().offsets(&t.partitions[0]).log_end == 1
    })
    .await;
    let dlq = common::consume_async(app.kafka_addr(), "orders.dlq", 0, 0, 1).await;
    assert_eq!(dlq[0].payload(), Some(&br#"{"order":"REJECT-ME"}"#[..]));
    let reason = common::header(&dlq[0], "kafkabox.dlq.reason").unwrap();
    assert_eq!(reason, "handler webhook: HTTP 400: unknown customer");
    // And the pipeline moved on.
    produce(&app, &[r#"{"order":31}"#.to_string()]).await;
    common::wait_until("the next event", || {
        posts(&log)
            .iter()
            .any(|p| p["status"] == 200 && p["body"][0]["offset"] == 31)
    })
    .await;
    app.shutdown().await.unwrap();
}
