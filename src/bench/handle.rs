//! `kafkabox handle`: events/s one process handles from a second box standing in for a
//! cluster (contract, re-keying, profiles to the changelog), until its group has committed
//! everything.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::broker::{ephemeral_child, stop_child, PLAIN_CLUSTER};
use super::client_config;
use super::clients::{create_topic, high_watermarks, produce_n};
use super::handlers::customer_event;

/// Events/s of one `kafkabox handle` process over customer events in a second box: time from
/// the first produce until its group has committed everything (the source and the re-keyed
/// events). `guarantee`: its `processing.guarantee`.
pub(super) async fn handle_bench(n: usize, guarantee: &str) -> Result<(f64, f64)> {
    let (mut up, ready) = ephemeral_child("", PLAIN_CLUSTER).await?;
    let upstream = ready["bootstrap"]
        .as_str()
        .context("bootstrap")?
        .to_string();
    create_topic(&upstream, "customer-events", 3).await?;
    let exe = std::env::current_exe()?;
    let data = tempfile::tempdir()?;
    let mut handle = tokio::process::Command::new(&exe)
        .args(["handle", "--bootstrap", &upstream, "--group", "bench"])
        .args(["--set", &format!("processing.guarantee={guarantee}")])
        .arg("--data-dir")
        .arg(data.path())
        .env("KAFKABOX_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting kafkabox handle")?;
    let group = client_config()
        .set("bootstrap.servers", &upstream)
        .set("group.id", "bench")
        .create::<BaseConsumer>()?;
    // Timed from a running member: one event first, handled once the group has formed and
    // the partitions are restored.
    produce_n(&upstream, "customer-events", 1, |i| customer_event(i, 0)).await?;
    wait_handled(&group, &upstream, 1, &mut handle).await?;
    let started = Instant::now();
    let produced = produce_n(&upstream, "customer-events", n, |i| {
        customer_event(i + 1, 0)
    })
    .await?;
    wait_handled(&group, &upstream, n + 1, &mut handle).await?;
    let secs = started.elapsed().as_secs_f64();
    drop(group);
    stop_child(&mut handle).await;
    stop_child(&mut up).await;
    Ok((secs, produced))
}

/// Waits until group `bench` has handled `n` events of customer-events and their re-keyed
/// copies (committed offsets).
async fn wait_handled(
    group: &BaseConsumer,
    upstream: &str,
    n: usize,
    handle: &mut tokio::process::Child,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(Some(status)) = handle.try_wait() {
            bail!("kafkabox handle exited ({status}) before it handled {n} events");
        }
        let mut tpl = TopicPartitionList::new();
        for t in ["customer-events", "bench-customer-events-repartition"] {
            for p in 0..3 {
                tpl.add_partition(t, p);
            }
        }
        let done = match group.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(c) => {
                let committed = |t: &str| -> i64 {
                    c.elements_for_topic(t)
                        .iter()
                        .map(|e| match e.offset() {
                            Offset::Offset(o) => o,
                            _ => 0,
                        })
                        .sum()
                };
                let u = upstream.to_string();
                let repartitioned = tokio::task::spawn_blocking(move || {
                    high_watermarks(&u, "bench-customer-events-repartition", 3)
                })
                .await?;
                committed("customer-events") >= n as i64
                    && repartitioned >= n as i64
                    && committed("bench-customer-events-repartition") >= repartitioned
            }
            Err(_) => false,
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("kafkabox handle did not handle {n} events in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
