//! AlterConfigs and IncrementalAlterConfigs on the broker resource accept every broker config
//! name Kafka accepts there, as Kafka does, through confluent-kafka and kafka-python against the
//! real `kafkabox serve` binary (tests/python/broker_configs.py): stored across a restart,
//! described with their source; read-only names refused with Kafka's INVALID_REQUEST.

mod common;

use std::process::Command;

use common::BrokerProcess;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

/// IncrementalAlterConfigs v1 on the cluster-wide default (broker resource named ""), which
/// the Python clients cannot name: the error code and message.
async fn at_cluster_default(
    addr: std::net::SocketAddr,
    ops: &[(&'static str, i8, &'static str)],
) -> (i16, String) {
    let configs = ops
        .iter()
        .map(|(name, op, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str(name))
                .with_config_operation(*op)
                .with_value(Some(StrBytes::from_static_str(value)))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str(""))
            .with_configs(configs),
    ]);
    let r: IncrementalAlterConfigsResponse =
        common::call(addr, ApiKey::IncrementalAlterConfigs, 1, &req).await;
    let r = &r.responses[0];
    (
        r.error_code,
        r.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

fn script(addr: std::net::SocketAddr, mode: &str) -> Value {
    let out = Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/broker_configs.py"
        ))
        .args([&addr.to_string(), mode])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "broker_configs.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a summary line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kafka_broker_config_name_is_accepted_as_kafka_accepts_it() {
    let _watchdog =
        common::watchdog("every_kafka_broker_config_name_is_accepted_as_kafka_accepts_it");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, &[]);
    // The cluster-wide default: a cluster-wide name stored, a per-broker one refused as Kafka
    // refuses it (INVALID_REQUEST 42).
    assert_eq!(
        at_cluster_default(broker.addr, &[("num.io.threads", 0, "16")]).await,
        (0, String::new())
    );
    let (code, message) =
        at_cluster_default(broker.addr, &[("ssl.keystore.location", 0, "/k.pem")]).await;
    assert_eq!(code, 42, "{message}");
    assert!(
        message.contains("broker id must be specified: Set(ssl.keystore.location)"),
        "{message}"
    );
    let s = script(broker.addr, "alter");
    assert_eq!(s["relogin"], "120000", "{s}");
    assert_eq!(s["relogin_source"], "DYNAMIC_BROKER_CONFIG", "{s}");
    assert_eq!(s["background_threads"], "12", "{s}");
    assert_eq!(s["num_io_threads"], "16", "{s}");
    assert_eq!(s["num_network_threads"], "6", "{s}");
    assert_eq!(s["log_dirs_read_only"], true, "{s}");
    assert_eq!(s["custom_sensitive"], true, "{s}");
    assert_eq!(s["custom_value"], Value::Null, "{s}");
    assert_eq!(s["cleanup_policy"], "delete,compact", "{s}");
    // Every name Kafka defines is described (kafkabox's own and the rest).
    assert!(s["names"].as_u64().unwrap() > 350, "{s}");

    broker.terminate();
    let broker = BrokerProcess::spawn(&data, &[]);
    let after = script(broker.addr, "describe");
    for k in [
        "relogin",
        "background_threads",
        "num_io_threads",
        "cleanup_policy",
    ] {
        assert_eq!(after[k], s[k], "{k} after a restart: {after}");
    }
    assert_eq!(after["custom_sensitive"], true);
}
