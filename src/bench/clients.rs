//! The librdkafka clients the sections share, all with the `-X` settings: the producer and
//! its delivery check, topic creation, high watermarks, and producing N records.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::client_config;

pub(super) fn producer(addr: &str, acks: &str, linger_ms: &str) -> Result<FutureProducer> {
    client_config()
        .set("bootstrap.servers", addr)
        .set("acks", acks)
        .set("linger.ms", linger_ms)
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("creating the rdkafka producer")
}

pub(super) async fn check_delivery(f: rdkafka::producer::DeliveryFuture) -> Result<()> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e).context("delivery failed"),
        Err(_) => bail!("delivery future cancelled"),
    }
}

pub(super) async fn create_topic(addr: &str, name: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client_config()
        .set("bootstrap.servers", addr)
        .create()
        .context("admin client")?;
    let r = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .context("creating a bench topic")?;
    for t in r {
        t.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Sum of the high watermarks of `topic`'s `partitions` at `addr`.
pub(super) fn high_watermarks(addr: &str, topic: &str, partitions: i32) -> i64 {
    let Ok(c) = client_config()
        .set("bootstrap.servers", addr)
        .create::<BaseConsumer>()
    else {
        return 0;
    };
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}

/// Produces `n` records of 100 bytes to `topic` at `addr` (acks=1); returns the seconds.
pub(super) async fn produce_n(
    addr: &str,
    topic: &str,
    n: usize,
    value: impl Fn(usize) -> String,
) -> Result<f64> {
    let p = producer(addr, "1", "5")?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n {
        let v = value(i);
        let key = format!("k{}", i % 1000);
        loop {
            match p.send_result(FutureRecord::to(topic).key(&key).payload(&v)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => {
                    for f in pending.drain(..) {
                        check_delivery(f).await?;
                    }
                }
            }
        }
        if pending.len() >= 100_000 {
            for f in pending.drain(..) {
                check_delivery(f).await?;
            }
        }
    }
    for f in pending {
        check_delivery(f).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}
