//! Shared helpers for the end-to-end tests: a broker on 127.0.0.1:0 over a temporary data dir,
//! and librdkafka (rdkafka crate) producers and consumers pointed at it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use kafkabox::{Config, Server};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Starts a broker on an OS-chosen port over `dir`.
pub async fn start(dir: &Path) -> Server {
    start_with(dir, &[]).await
}

pub async fn start_with(dir: &Path, settings: &[(&str, &str)]) -> Server {
    let mut c = Config::default();
    c.set("listen", "127.0.0.1:0").unwrap();
    c.data_dir = dir.to_path_buf();
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    Server::start(c).await.expect("broker starts")
}

pub fn producer(addr: std::net::SocketAddr, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr.to_string())
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// Reads `count` messages of `topic`/`partition` from `from` with an assigned consumer (no
/// consumer group). Bounded by `timeout`; returns what it got.
pub fn consume(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("enable.auto.commit", "false")
        .set("group.id", "kafkabox-test-unused")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

/// Same as [`consume`], off the async runtime.
pub async fn consume_async(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> Vec<OwnedMessage> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        consume(
            addr,
            &topic,
            partition,
            from,
            count,
            Duration::from_secs(60),
        )
    })
    .await
    .expect("consumer task")
}

pub fn payload(m: &OwnedMessage) -> Option<&[u8]> {
    m.payload()
}
