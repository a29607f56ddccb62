//! The customer-events contract end to end: the guide's Python example (kafka-python) and
//! rdkafka publish valid and invalid events; handlers see exactly the valid ones; the
//! dead-letter topic holds exactly the invalid ones with their reasons, readable by a Kafka
//! consumer; counts per source; nothing dead-lettered twice across a restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkabox::pipeline::{Event, Handler, HandlerError};
use kafkabox::{Appliance, ApplianceHandle};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

#[async_trait::async_trait]
impl Handler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        self.0.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

async fn start(dir: &std::path::Path, rec: &Recorder) -> ApplianceHandle {
    Appliance::builder()
        .data_dir(dir)
        .listen("127.0.0.1:0")
        .handler("customer-events", rec.clone())
        .profiles("customer-events")
        .start()
        .await
        .expect("appliance starts")
}

fn ev(source: &str, event_type: &str, timestamp: &str) -> String {
    format!(
        r#"{{"source":"{source}","customer_id":"42","event_type":"{event_type}","timestamp":"{timestamp}","value":1.5}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_reach_handlers_invalid_ones_the_dead_letter_topic() {
    let _watchdog =
        common::watchdog("valid_events_reach_handlers_invalid_ones_the_dead_letter_topic");
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let app = start(dir.path(), &rec).await;
    let addr = app.kafka_addr();

    // The guide's Python example, verbatim: two valid events from source "in".
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/guide_example.py"
    ))
    .unwrap();
    let code = guide.replace("kafka-broker.yourcompany.com:9092", &addr.to_string());
    let out = std::process::Command::new(common::python())
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Then rdkafka: valid events in the Java and .NET timestamp forms, and invalid ones.
    let p = common::producer(addr, &[("acks", "all"), ("linger.ms", "0")]);
    let cases: Vec<(Option<&[u8]>, bool, &str)> = vec![
        (
            Some(
                ev("crm", "kyc_update", "2024-01-15T10:30:00.123456789Z")
                    .as_bytes()
                    .to_vec()
                    .leak(),
            ),
            true,
            "java",
        ),
        (
            Some(
                ev("billing", "recharge", "2024-01-15T10:30:00.1234567Z")
                    .as_bytes()
                    .to_vec()
                    .leak(),
            ),
            true,
            "dotnet",
        ),
        (Some(b"this is not json"), false, "not json"),
        (
            Some(br#"{"source":"dwh","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z"}"#),
            false,
            "no customer_id",
        ),
        (
            Some(
                ev("app", "teleport", "2024-01-15T10:30:00Z")
                    .as_bytes()
                    .to_vec()
                    .leak(),
            ),
            false,
            "unknown type",
        ),
        (
            Some(
                ev("billing", "recharge", "15/01/2024 10:30")
                    .as_bytes()
                    .to_vec()
                    .leak(),
            ),
            false,
            "bad timestamp",
        ),
        (Some(&[0xff, 0xfe, 0x00]), false, "not utf-8"),
        (None, false, "null value"),
    ];
    for (i, (value, _, name)) in cases.iter().enumerate() {
        let key = format!("key-{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "case",
            value: Some(*name),
        });
        let mut rec = FutureRecord::to("customer-events")
            .key(&key)
            .headers(headers);
        if let Some(v) = value {
            rec = rec.payload(*v);
        }
        p.send(rec, Duration::from_secs(30))
            .await
            .expect("acknowledged");
    }

    let invalid: Vec<&str> = cases.iter().filter(|c| !c.1).map(|c| c.2).collect();
    common::wait_until("handlers and the dead-letter stage to catch up", || {
        rec.0.lock().unwrap().len() == 4 && app.lag().total() == 0
    })
    .await;
    // Handlers saw exactly the valid events, in order.
    let seen: Vec<i64> = rec.0.lock().unwrap().iter().map(|e| e.offset).collect();
    assert_eq!(seen, vec![0, 1, 2, 3]);

    // The dead-letter topic holds exactly the invalid ones, readable by a Kafka consumer.
    let dlq = common::consume_async(addr, "customer-events.dlq", 0, 0, invalid.len()).await;
    assert_eq!(dlq.len(), invalid.len());
    for (m, (i, case)) in dlq
        .iter()
        .zip(cases.iter().enumerate().filter(|(_, c)| !c.1))
    {
        let h = m.headers().expect("headers");
        let get = |k: &str| {
            (0..h.count())
                .map(|j| h.get(j))
                .find(|x| x.key == k)
                .map(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        };
        assert_eq!(
            get("case"),
            Some(Some(case.2.to_string())),
            "original headers kept"
        );
        assert_eq!(
            m.key(),
            Some(format!("key-{i}").as_bytes()),
            "original key kept"
        );
        assert_eq!(m.payload(), case.0, "original value kept");
        assert_eq!(
            get("kafkabox.dlq.topic"),
            Some(Some("customer-events".into()))
        );
        assert_eq!(get("kafkabox.dlq.partition"), Some(Some("0".into())));
        assert_eq!(get("kafkabox.dlq.offset"), Some(Some((i + 2).to_string())));
        let reason = get("kafkabox.dlq.reason").flatten().expect("reason");
        assert!(!reason.is_empty(), "{}: {reason}", case.2);
    }
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| {
            let h = m.headers().unwrap();
            (0..h.count())
                .map(|j| h.get(j))
                .find(|x| x.key == "kafkabox.dlq.reason")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap()
        })
        .collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("customer_id"), "{reasons:?}");
    assert!(reasons[2].contains("/event_type"), "{reasons:?}");
    assert!(reasons[3].contains("/timestamp"), "{reasons:?}");
    assert!(reasons[4].contains("UTF-8"), "{reasons:?}");
    assert!(reasons[5].contains("null"), "{reasons:?}");

    // Profiles from the valid events only.
    let p = app
        .profile("1234567890")
        .unwrap()
        .expect("the guide's customer has a profile");
    assert_eq!(p["events"], 2);
    assert_eq!(p["by_type"]["data_usage"]["value_sum"], 500.0);
    assert_eq!(p["by_type"]["recharge"]["value_sum"], 50.0);
    assert_eq!(p["last_by_source"]["in"]["event"]["event_type"], "recharge");
    let p = app.profile("42").unwrap().expect("profile of 42");
    assert_eq!(
        p["events"], 2,
        "the invalid events of customer 42 are not counted: {p}"
    );
    assert_eq!(p["by_type"]["kyc_update"]["count"], 1);
    assert_eq!(
        p["last_by_source"]["billing"]["event"]["timestamp"],
        "2024-01-15T10:30:00.1234567Z"
    );
    assert_eq!(p["recent"].as_array().unwrap().len(), 2);

    // Counted per source.
    let status = app.ingest_status().unwrap();
    assert_eq!(
        (
            status["in"].received,
            status["in"].valid,
            status["in"].rejected
        ),
        (2, 2, 0)
    );
    assert_eq!(
        (status["billing"].valid, status["billing"].rejected),
        (1, 1)
    );
    assert!(status["billing"]
        .last_rejection
        .as_deref()
        .unwrap()
        .contains("/timestamp"));
    assert_eq!((status["app"].rejected, status["dwh"].rejected), (1, 1));
    assert_eq!(
        status["unknown"].rejected, 3,
        "not JSON, not UTF-8, null: no readable source"
    );
    let dlq_end = app
        .store()
        .offsets(&app.store().topic("customer-events.dlq").unwrap().partitions[0])
        .log_end;
    app.shutdown().await.unwrap();

    // After a restart nothing is dead-lettered or handled twice.
    let rec2 = Recorder::default();
    let app = start(dir.path(), &rec2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.lag().total(), 0);
    assert!(rec2.0.lock().unwrap().is_empty());
    assert_eq!(
        app.profile("1234567890").unwrap().unwrap()["events"],
        2,
        "not counted twice"
    );
    let t = app.store().topic("customer-events.dlq").unwrap();
    assert_eq!(app.store().offsets(&t.partitions[0]).log_end, dlq_end);
    app.shutdown().await.unwrap();
}
