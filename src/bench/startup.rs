//! Start-up time: `kafkabox serve --ephemeral` until its ready line and its first ApiVersions
//! answer, and `Appliance::builder().ephemeral()` in this process.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::broker::{api_versions, ephemeral_child, stop_child};

pub(super) struct Startups {
    pub(super) ready_ms: Vec<f64>,
    pub(super) first_answer_ms: Vec<f64>,
    pub(super) in_process_ms: Vec<f64>,
}

/// (p50, max) of `v`.
pub(super) fn pct(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (0.0, 0.0);
    }
    (s[s.len() / 2], s[s.len() - 1])
}

/// Starts `kafkabox serve --ephemeral` `n` times (timing the ready line and the first
/// ApiVersions answer; SIGTERM after each) and an ephemeral appliance in-process `n` times.
pub(super) async fn startup_bench(n: usize) -> Result<Startups> {
    let mut out = Startups {
        ready_ms: Vec::new(),
        first_answer_ms: Vec::new(),
        in_process_ms: Vec::new(),
    };
    for _ in 0..n {
        let started = Instant::now();
        let (mut child, ready_line) = ephemeral_child("127.0.0.1:0", &[]).await?;
        let ready = started.elapsed();
        let addr = ready_line["bootstrap"]
            .as_str()
            .context("no bootstrap in the ready line")?
            .to_string();
        api_versions(&addr).await?;
        let first = started.elapsed();
        out.ready_ms.push(ready.as_secs_f64() * 1000.0);
        out.first_answer_ms.push(first.as_secs_f64() * 1000.0);
        match stop_child(&mut child).await {
            Some(st) if st.success() => {}
            Some(st) => bail!("kafkabox serve --ephemeral exited with {st}"),
            None => bail!("kafkabox serve --ephemeral did not stop within 30 s of SIGTERM"),
        }
    }
    for _ in 0..n {
        let started = Instant::now();
        let app = kafkabox::Appliance::builder()
            .ephemeral()
            .listen("127.0.0.1:0")
            .start()
            .await?;
        out.in_process_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        app.shutdown().await?;
    }
    Ok(out)
}
