//! The HTTP listener: /health and Prometheus /metrics with handler lag, log end offsets and
//! ingest counters, over a real socket.

mod common;

use std::time::{Duration, Instant};

use kafkabox::Appliance;
use rdkafka::producer::FutureRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let _watchdog = common::watchdog("health_and_metrics");
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0")
        .http("127.0.0.1:0")
        .profiles("customer-events")
        .start()
        .await
        .unwrap();
    let http = app.http_addr().expect("http listener");
    let (status, body) = get(http, "/health").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");

    let p = common::producer(app.kafka_addr(), &[("acks", "all")]);
    for v in [
        r#"{"source":"crm","customer_id":"1","event_type":"kyc_update","timestamp":"2024-01-15T10:30:00Z"}"#,
        r#"{"source":"crm","customer_id":"1","event_type":"nope","timestamp":"2024-01-15T10:30:00Z"}"#,
    ] {
        p.send(
            FutureRecord::<(), _>::to("customer-events").payload(v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(http, "/metrics").await;
        // The dead letter is visible once a flush covered it (the high watermark).
        let done = body.contains(r#"kafkabox_ingest_received_total{source="crm"} 2"#)
            && body.contains(
                r#"kafkabox_handler_lag{stage="profile",topic="customer-events",partition="0"} 0"#,
            )
            && body.contains(
                r#"kafkabox_log_end_offset{topic="customer-events.dlq",partition="0"} 1"#,
            );
        if done {
            assert!(
                body.contains(r#"kafkabox_ingest_rejected_total{source="crm"} 1"#),
                "{body}"
            );
            assert!(
                body.contains(
                    r#"kafkabox_log_end_offset{topic="customer-events",partition="0"} 2"#
                ),
                "{body}"
            );
            assert!(body.contains("# TYPE kafkabox_handler_lag gauge"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the events: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = get(http, "/nope").await;
    assert!(status.contains("404"));
    drop(p);
    app.shutdown().await.unwrap();
}
