//! Edge forwarding: records/s a box started with `serve --upstream` forwards to a second box.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::broker::{ephemeral_child, stop_child, PLAIN_CLUSTER};
use super::clients::{high_watermarks, produce_n};

/// Records/s an edge box forwards to a second box: time from the first produce until the
/// second holds all `n`.
pub(super) async fn forward_bench(n: usize) -> Result<(f64, f64)> {
    let (mut up, ready) = ephemeral_child("", PLAIN_CLUSTER).await?;
    let upstream = ready["bootstrap"]
        .as_str()
        .context("bootstrap")?
        .to_string();
    let (mut edge, ready) = ephemeral_child(
        "",
        &[
            "--upstream",
            &upstream,
            "--set",
            "upstream.topics=bench-forward",
            "--set",
            "num.partitions=3",
            "--set",
            "customer.events.handlers=",
        ],
    )
    .await?;
    let edge_addr = ready["bootstrap"]
        .as_str()
        .context("bootstrap")?
        .to_string();
    let started = Instant::now();
    let produced = produce_n(&edge_addr, "bench-forward", n, |i| format!("{i:0100}")).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (u, t) = (upstream.clone(), "bench-forward");
        let have = tokio::task::spawn_blocking(move || high_watermarks(&u, t, 3)).await?;
        if have >= n as i64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the edge forwarded {have} of {n} records in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop_child(&mut edge).await;
    stop_child(&mut up).await;
    Ok((secs, produced))
}
