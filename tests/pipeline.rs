//! The in-process handler pipeline, embedded with `Appliance::builder()` and fed by a real
//! producer (rdkafka): order per partition, resume after restart, records kept while no handler
//! runs, producers unaffected by a stuck handler (lag grows, then drains), transient failures
//! retried without loss.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkabox::pipeline::{Event, Handler, HandlerError};
use kafkabox::{Appliance, ApplianceHandle};
use rdkafka::producer::FutureRecord;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);

/// Records what it is given. Blocks while `open` is false; fails transiently `fail_first` times.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Event>>>,
    open: watch::Receiver<bool>,
    fail_first: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Recorder {
    fn new(open: bool, fail_first: usize) -> (Recorder, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(open);
        (
            Recorder {
                seen: Arc::default(),
                open: rx,
                fail_first: Arc::new(AtomicUsize::new(fail_first)),
                calls: Arc::default(),
            },
            tx,
        )
    }

    fn offsets(&self, partition: i32) -> Vec<i64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.partition == partition)
            .map(|e| e.offset)
            .collect()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn handle(&self, events: &[Event]) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::Transient("target down".into()));
        }
        self.seen.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

async fn start(
    dir: &std::path::Path,
    partitions: &str,
    recorder: Option<Recorder>,
) -> ApplianceHandle {
    let mut b = Appliance::builder()
        .data_dir(dir)
        .listen("127.0.0.1:0")
        .set("num.partitions", partitions);
    if let Some(r) = recorder {
        b = b.handler("events", r);
    }
    b.start().await.expect("appliance starts")
}

async fn produce(app: &ApplianceHandle, from: usize, n: usize) {
    let p = common::producer(app.kafka_addr(), &[("acks", "all")]);
    let mut futs = Vec::with_capacity(n);
    for i in from..from + n {
        let key = format!("customer-{}", i % 7);
        let value = format!("event-{i}");
        futs.push(
            p.send_result(FutureRecord::to("events").key(&key).payload(&value))
                .expect("queued"),
        );
    }
    for f in futs {
        f.await.expect("future").expect("acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_in_order_per_partition_then_resume_after_restart() {
    let _watchdog =
        common::watchdog("every_record_in_order_per_partition_then_resume_after_restart");
    let dir = tempfile::tempdir().unwrap();
    let (rec, _open) = Recorder::new(true, 0);
    let app = start(dir.path(), "3", Some(rec.clone())).await;
    produce(&app, 0, 600).await;
    common::wait_until("600 events", || rec.count() == 600).await;
    let mut total = 0;
    for p in 0..3 {
        let offs = rec.offsets(p);
        assert_eq!(
            offs,
            (0..offs.len() as i64).collect::<Vec<_>>(),
            "partition {p} in order, no gap"
        );
        total += offs.len();
        assert_eq!(app.lag().get("recorder", "events", p), Some(0));
    }
    assert_eq!(total, 600);
    // Keys hash to one partition each, so per-key order is preserved too.
    app.shutdown().await.unwrap();

    // Records produced while no handler runs are kept ...
    let app = start(dir.path(), "3", None).await;
    produce(&app, 600, 150).await;
    app.shutdown().await.unwrap();

    // ... and handled, exactly those, when it runs again.
    let (rec2, _open2) = Recorder::new(true, 0);
    let app = start(dir.path(), "3", Some(rec2.clone())).await;
    common::wait_until("the 150 new events", || rec2.count() == 150).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec2.count(), 150, "nothing handled twice");
    let values: std::collections::BTreeSet<String> = rec2
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    let want: std::collections::BTreeSet<String> =
        (600..750).map(|i| format!("event-{i}")).collect();
    assert_eq!(values, want);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_handler_never_blocks_producers_and_its_lag_drains() {
    let _watchdog = common::watchdog("a_stuck_handler_never_blocks_producers_and_its_lag_drains");
    let dir = tempfile::tempdir().unwrap();
    let (rec, open) = Recorder::new(false, 0);
    let app = start(dir.path(), "1", Some(rec.clone())).await;
    // The handler is stuck: every produce is still acknowledged.
    produce(&app, 0, 2_000).await;
    common::wait_until("the handler to be called", || {
        rec.calls.load(Ordering::SeqCst) > 0
    })
    .await;
    let lag = app.lag().get("recorder", "events", 0).unwrap();
    assert!(lag > 0, "lag is visible while stuck: {lag}");
    assert_eq!(rec.count(), 0);
    produce(&app, 2_000, 500).await;
    common::wait_until("the lag to show the new records", || {
        app.lag().get("recorder", "events", 0).unwrap_or(0) >= 500
    })
    .await;
    // Unstuck: everything is handled, in order, and the lag drains to zero.
    open.send(true).unwrap();
    common::wait_until("the lag to drain", || {
        rec.count() == 2_500 && app.lag().get("recorder", "events", 0) == Some(0)
    })
    .await;
    assert_eq!(rec.offsets(0), (0..2_500).collect::<Vec<i64>>());
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_in_order_without_loss() {
    let _watchdog = common::watchdog("transient_failures_are_retried_in_order_without_loss");
    let dir = tempfile::tempdir().unwrap();
    let (rec, _open) = Recorder::new(true, 3);
    let app = start(dir.path(), "1", Some(rec.clone())).await;
    produce(&app, 0, 300).await;
    common::wait_until("300 events after retries", || rec.count() == 300).await;
    assert!(
        rec.calls.load(Ordering::SeqCst) >= 4,
        "three failures, then success"
    );
    assert_eq!(rec.offsets(0), (0..300).collect::<Vec<i64>>());
    app.shutdown().await.unwrap();
}

struct Refuser;

#[async_trait::async_trait]
impl Handler for Refuser {
    fn name(&self) -> &str {
        "refuser"
    }
    async fn handle(&self, _events: &[Event]) -> Result<(), HandlerError> {
        Err(HandlerError::Permanent("HTTP 400: no such customer".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_refused_events_go_to_the_dead_letter_topic_once() {
    let _watchdog = common::watchdog("permanently_refused_events_go_to_the_dead_letter_topic_once");
    let dir = tempfile::tempdir().unwrap();
    let app = Appliance::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0")
        .handler("events", Refuser)
        .start()
        .await
        .unwrap();
    produce(&app, 0, 40).await;
    common::wait_until("the refused events to be dead-lettered", || {
        app.lag().get("refuser", "events", 0) == Some(0)
            && app
                .store()
                .offsets(&app.store().topic("events.dlq").unwrap().partitions[0])
                .log_end
                == 40
    })
    .await;
    let dlq = common::consume_async(app.kafka_addr(), "events.dlq", 0, 0, 40).await;
    assert_eq!(dlq.len(), 40);
    for (i, m) in dlq.iter().enumerate() {
        use rdkafka::Message;
        assert_eq!(m.payload(), Some(format!("event-{i}").as_bytes()));
        let reason = common::header(m, "kafkabox.dlq.reason").unwrap();
        assert_eq!(reason, "handler refuser: HTTP 400: no such customer");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_stored_batch_is_dead_lettered_whole_and_the_pipeline_moves_on() {
    let _watchdog = common::watchdog(
        "an_undecodable_stored_batch_is_dead_lettered_whole_and_the_pipeline_moves_on",
    );
    use kafkabox_protocol::batch::{encode_uncompressed, parse_header, ProducerFields};
    let dir = tempfile::tempdir().unwrap();
    let (rec, _open) = Recorder::new(true, 0);
    let app = start(dir.path(), "1", Some(rec.clone())).await;
    // A batch flagged gzip whose payload is not gzip, as a broker with
    // validate.compressed.batches=false would have stored it.
    let mut bad = encode_uncompressed(
        &[(None, Some(b"payload"))],
        1_900_000_000_000,
        ProducerFields::NONE,
    );
    bad[21..23].copy_from_slice(&1i16.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let t = app.store().topic("events").unwrap();
    app.store()
        .append(&t.partitions[0], &bad, &parse_header(&bad).unwrap())
        .unwrap();
    produce(&app, 0, 5).await;
    common::wait_until("the valid events", || rec.count() == 5).await;
    assert_eq!(rec.offsets(0), vec![1, 2, 3, 4, 5]);
    let dlq = common::consume_async(app.kafka_addr(), "events.dlq", 0, 0, 1).await;
    use rdkafka::Message;
    let reason = common::header(&dlq[0], "kafkabox.dlq.reason").unwrap();
    assert!(
        reason.contains("undecodable batch (offsets 0 to 0)") && reason.contains("Gzip"),
        "{reason}"
    );
    assert_eq!(
        &dlq[0].payload().unwrap()[21..],
        &bad[21..],
        "the stored batch is kept whole"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_on_any_topic_through_the_builder() {
    let _watchdog = common::watchdog("reject_policy_on_any_topic_through_the_builder");
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let dir = tempfile::tempdir().unwrap();
    let schema = r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;
    let app = Appliance::builder()
        .data_dir(dir.path())
        .listen("127.0.0.1:0")
        .contract("orders", kafkabox::contract::Contract::new(schema).unwrap())
        .reject_invalid("orders")
        .start()
        .await
        .unwrap();
    let p = common::producer(
        app.kafka_addr(),
        &[("acks", "all"), ("message.timeout.ms", "10000")],
    );
    let ok = p
        .send(
            FutureRecord::<(), _>::to("orders").payload(r#"{"id":1}"#),
            T,
        )
        .await
        .expect("valid");
    assert_eq!(ok.offset, 0);
    match p
        .send(
            FutureRecord::<(), _>::to("orders").payload(r#"{"id":"one"}"#),
            T,
        )
        .await
    {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {}
        other => panic!("expected INVALID_RECORD, got {other:?}"),
    }
    common::wait_until("the contract stage", || {
        app.lag().get("contract", "orders", 0) == Some(0)
    })
    .await;
    let snapshot = app.lag().snapshot();
    assert!(
        snapshot
            .iter()
            .any(|(s, t, p, l)| s == "contract" && t == "orders" && *p == 0 && *l == 0),
        "{snapshot:?}"
    );
    let t = app.store().topic("orders").unwrap();
    assert_eq!(
        app.store().offsets(&t.partitions[0]).log_end,
        1,
        "the invalid record was not stored"
    );
    app.shutdown().await.unwrap();
}
