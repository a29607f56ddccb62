//! A dead-letter topic is written only by kafkabox (issue 9): a Kafka producer gets
//! TOPIC_AUTHORIZATION_FAILED and HTTP produce 403, and nothing is stored; its own topic stays
//! writable.

mod common;

use std::time::Duration;

use common::{http, BrokerProcess};
use rdkafka::producer::FutureRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_kafkabox_writes_a_dead_letter_topic() {
    let _watchdog = common::watchdog("only_kafkabox_writes_a_dead_letter_topic");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let h = broker.http_addr();
    let p = common::producer(
        broker.addr,
        &[("message.timeout.ms", "5000"), ("retries", "0")],
    );
    let err = p
        .send(
            FutureRecord::<(), _>::to("customer-events.dlq").payload("forged"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a forged dead letter");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed),
        "{err:?}"
    );
    let r = http(
        h,
        "POST",
        "/api/topics/customer-events.dlq/records",
        None,
        Some(r#"{"records":[{"value":{"forged":true}}]}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["offsets"][0]["error_code"], 29, "{}", r.body);
    let t = http(h, "GET", "/api/topics/customer-events.dlq", None, None).json();
    assert_eq!(
        t["partitions"][0]["log_end_offset"], 0,
        "nothing stored: {t}"
    );
    // The topic itself takes records as ever.
    p.send(
        FutureRecord::<(), _>::to("customer-events").payload("{}"),
        Duration::from_secs(10),
    )
    .await
    .expect("produce to customer-events");
}

/// Clients cannot create a `.dlq` topic of their own (CreateTopics, auto-creation, HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topic_names_are_reserved() {
    let _watchdog = common::watchdog("dead_letter_topic_names_are_reserved");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &[]);
    let admin = common::admin(broker.addr);
    let opts = rdkafka::admin::AdminOptions::new();
    let r = admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                "alice.x.dlq",
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        rdkafka::types::RDKafkaErrorCode::PolicyViolation,
        "{r:?}"
    );
    // Auto-creation by a producer's Metadata request: refused, nothing created.
    let p = common::producer(
        broker.addr,
        &[("message.timeout.ms", "3000"), ("retries", "0")],
    );
    let err = p
        .send(
            FutureRecord::<(), _>::to("alice.y.dlq").payload("forged"),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a produce to a reserved name");
    assert!(err.0.rdkafka_error_code().is_some(), "{err:?}");
    let h = broker.http_addr();
    let r = http(
        h,
        "POST",
        "/api/topics",
        None,
        Some(r#"{"name":"alice.z.dlq","partitions":1}"#),
    );
    assert_eq!(r.status / 100, 4, "{}", r.body);
    assert!(r.body.contains("reserved"), "{}", r.body);
    let topics = http(h, "GET", "/api/topics", None, None).body;
    assert!(!topics.contains("alice."), "{topics}");
}

/// A forged dead letter (a client's own `.dlq` topic, possible only with
/// dead.letter.topics.reserved=false) is neither listed nor replayed, and a replay hands the
/// handler the original record read from its own topic, not the dead letter's payload: an
/// original that is gone (DeleteRecords) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_dead_letters_are_ignored_and_replays_read_the_original() {
    let _watchdog =
        common::watchdog("forged_dead_letters_are_ignored_and_replays_read_the_original");
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
            "customer.events.handlers=profile,exec",
            "--set",
            &format!("exec.command={exec}"),
            "--set",
            "dead.letter.topics.reserved=false",
        ],
    );
    let h = broker.http_addr();
    let p = common::producer(broker.addr, &[("message.timeout.ms", "10000")]);
    for customer in ["C-1", "C-2"] {
        let v = serde_json::json!({
            "customer_id": customer,
            "event_type": "recharge",
            "timestamp": "2024-01-15T10:30:00Z",
            "source": "crm",
            "value": 5.0,
        })
        .to_string();
        p.send(
            FutureRecord::<str, _>::to("customer-events")
                .key(customer)
                .payload(&v)
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    // The forgery: a topic of the client's own, with a dead letter that claims to be the exec
    // handler's refusal of customer-events/0@0 and carries an invalid event.
    common::create_topic(broker.addr, "alice.x.dlq", 1).await;
    let forged = rdkafka::message::OwnedHeaders::new()
        .insert(header("kafkabox.dlq.stage", "exec"))
        .insert(header("kafkabox.dlq.topic", "customer-events"))
        .insert(header("kafkabox.dlq.partition", "0"))
        .insert(header("kafkabox.dlq.offset", "0"))
        .insert(header(
            "kafkabox.dlq.reason",
            "handler exec: downstream is down",
        ));
    p.send(
        FutureRecord::<(), _>::to("alice.x.dlq")
            .payload(r#"{"customer_id":"FORGED","oops":1}"#)
            .headers(forged),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // The exec handler's two dead letters, and only those.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let l = http(h, "GET", "/api/dlq?stage=exec", None, None).json();
        let n = l["dead_letters"].as_array().map_or(0, |a| a.len());
        if n >= 2 {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{listed}");
    assert!(
        letters.iter().all(|d| d["topic"] == "customer-events.dlq"),
        "{listed}"
    );
    let mine = http(h, "GET", "/api/dlq?topic=alice.x.dlq", None, None);
    assert!(!mine.body.contains("FORGED"), "{}", mine.body);
    let one = http(
        h,
        "POST",
        "/api/dlq/replay",
        None,
        Some(r#"{"topic":"alice.x.dlq","partition":0,"offset":0}"#),
    );
    assert!(one.status / 100 == 4, "{} {}", one.status, one.body);
    // The original of the first dead letter goes (DeleteRecords before offset 1).
    let admin = common::admin(broker.addr);
    let mut before = rdkafka::TopicPartitionList::new();
    before
        .add_partition_offset("customer-events", 0, rdkafka::Offset::Offset(1))
        .unwrap();
    admin
        .delete_records(&before, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    // The downstream is back: replay every pending exec refusal.
    std::fs::remove_file(&flag).unwrap();
    let r = http(
        h,
        "POST",
        "/api/dlq/replay",
        None,
        Some(r#"{"reason":"handler exec"}"#),
    );
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2, "{}", r.body);
    let by_offset = |o: i64| {
        results
            .iter()
            .find(|x| {
                let d = letters.iter().find(|d| d["offset"] == x["offset"]).unwrap();
                d["original"]["offset"] == o
            })
            .unwrap()
            .clone()
    };
    let gone = by_offset(0);
    assert_eq!(gone["result"], "refused", "{}", r.body);
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains("no longer in the log"),
        "{}",
        r.body
    );
    assert_eq!(by_offset(1)["result"], "replayed", "{}", r.body);
    let handled = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(handled.contains("C-2"), "{handled}");
    assert!(!handled.contains("C-1"), "{handled}");
    assert!(!handled.contains("FORGED"), "{handled}");
}

fn header<'a>(key: &'a str, value: &'a str) -> rdkafka::message::Header<'a, &'a str> {
    rdkafka::message::Header {
        key,
        value: Some(value),
    }
}
