//! `kafkabox produce TOPIC`: one record per line of stdin, acks=all with an idempotent
//! producer; an optional key separator; `--json` checks that each value is JSON first.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaArgs;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP: the key before it, the value after (a line without
    /// SEP has no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Each value must be JSON (a line that is not stops the command before it is sent).
    #[arg(long)]
    pub json: bool,
    /// Partition to write to (default: by key, Kafka's partitioner).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// The producer of `produce` and `load`: acks=all, idempotent (in order per partition), Java's
/// partitioner (a key lands where Java clients put it).
pub(super) fn idempotent_producer(kafka: &KafkaArgs) -> Result<FutureProducer> {
    kafka
        .client()?
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", kafka.timeout_ms.max(1000).to_string())
        .set("partitioner", "murmur2_random")
        .create()
        .context("Kafka producer")
}

/// Records in flight before waiting for their acknowledgements.
const WINDOW: usize = 10_000;

pub async fn run(args: ProduceArgs) -> Result<()> {
    let producer = idempotent_producer(&args.kafka)?;
    let bar = super::progress("produced");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Option<String>, String)>(1024);
    let json = args.json;
    let sep = args.key_separator.clone();
    // stdin is read on a blocking thread.
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            let (key, value) = match sep.as_deref().and_then(|s| line.split_once(s)) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            };
            if json {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&value) {
                    bail!(
                        "line {}: not JSON ({e}); nothing from this line on was sent",
                        i + 1
                    );
                }
            }
            if tx.blocking_send((i + 1, key, value)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut pending = Vec::with_capacity(WINDOW);
    let mut sent = 0u64;
    let mut failure = None;
    while let Some((line, key, value)) = rx.recv().await {
        let mut rec = FutureRecord::to(&args.topic).payload(value.as_bytes());
        if let Some(k) = &key {
            rec = rec.key(k.as_bytes());
        }
        if let Some(p) = args.partition {
            rec = rec.partition(p);
        }
        match producer.send_result(rec) {
            Ok(f) => pending.push((line, f)),
            Err((e, _)) => {
                failure = Some(format!("line {line}: {e}"));
                break;
            }
        }
        if pending.len() >= WINDOW {
            sent += settle(&mut pending, &mut failure).await;
            bar.set_position(sent);
            if failure.is_some() {
                break;
            }
        }
    }
    drop(rx);
    sent += settle(&mut pending, &mut failure).await;
    bar.finish_and_clear();
    let read = reader.await.context("stdin reader")?;
    if let Some(f) = failure {
        bail!(
            "{} produced to {}, then: {f}",
            super::count(sent, "record"),
            args.topic
        );
    }
    read?;
    eprintln!(
        "{} produced to {}",
        super::count(sent, "record"),
        args.topic
    );
    Ok(())
}

/// Waits for the acknowledgements of `pending`; returns how many succeeded and keeps the
/// first failure (also `kafkabox load`'s).
pub(super) async fn settle(
    pending: &mut Vec<(usize, rdkafka::producer::DeliveryFuture)>,
    failure: &mut Option<String>,
) -> u64 {
    let mut ok = 0;
    for (line, f) in pending.drain(..) {
        match tokio::time::timeout(Duration::from_secs(300), f).await {
            Ok(Ok(Ok(_))) => ok += 1,
            Ok(Ok(Err((e, _)))) => {
                failure.get_or_insert(format!("line {line}: {e}"));
            }
            Ok(Err(_)) | Err(_) => {
                failure.get_or_insert(format!("line {line}: no acknowledgement"));
            }
        }
    }
    ok
}
