//! The exec handler with a real script: batches arrive as JSON lines on stdin; a transient exit
//! is retried without loss or reordering; exit 65 dead-letters the batch with stderr as reason.

mod common;

use std::time::Duration;

use kafkabox::handlers::exec::Exec;
use kafkabox::Appliance;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_handler_runs_a_real_command() {
    let _watchdog = common::watchdog("exec_handler_runs_a_real_command");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("handled.jsonl");
    let fail_once = dir.path().join("fail-once");
    std::fs::write(&fail_once, "").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/exec_handler.sh");
    let cmd = format!(
        "OUT='{}' FAIL_ONCE='{}' {script}",
        out.display(),
        fail_once.display()
    );
    let exec = Exec::new("crm-sync", vec!["sh".into(), "-c".into(), cmd]).unwrap();
    let app = Appliance::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0")
        .handler("crm", exec)
        .start()
        .await
        .unwrap();
    let p = common::producer(app.kafka_addr(), &[("acks", "all")]);
    for i in 0..50 {
        let v = format!(r#"{{"n":{i}}}"#);
        p.send(
            FutureRecord::<(), _>::to("crm").payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let handled = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    common::wait_until("50 events through the command", || handled().len() == 50).await;
    assert!(
        !fail_once.exists(),
        "the transient failure happened and was retried"
    );
    let offsets: Vec<i64> = handled()
        .iter()
        .map(|e| e["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(
        offsets,
        (0..50).collect::<Vec<i64>>(),
        "once each, in order"
    );
    assert_eq!(handled()[7]["value"]["n"], 7);

    p.send(
        FutureRecord::<(), _>::to("crm").payload(r#"{"n":"PERMANENT"}"#),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    common::wait_until("the bad event in crm.dlq", || {
        let t = app.store().topic("crm.dlq").unwrap();
        app.store().offsets(&t.partitions[0]).log_end == 1
    })
    .await;
    let dlq = common::consume_async(app.kafka_addr(), "crm.dlq", 0, 0, 1).await;
    let reason = common::header(&dlq[0], "kafkabox.dlq.reason").unwrap();
    assert_eq!(
        reason,
        "handler crm-sync: exit 65: customer unknown to the CRM"
    );
    assert_eq!(dlq[0].payload(), Some(&br#"{"n":"PERMANENT"}"#[..]));
    app.shutdown().await.unwrap();
}
