//! The brokers the bench starts as child processes: `kafkabox serve` over the scratch data
//! dir ([`ChildBroker`]: start, restart after kill -9, stop, its memory sampled), `kafkabox
//! serve --ephemeral` children (the edge, the cluster stand-in, the start-ups), and a raw
//! ApiVersions request that tells when a broker answers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `kafkabox serve` in a child process over `<scratch>/data`, so its memory is measured apart
/// from the client's; its RSS is sampled every 100 ms.
pub(super) struct ChildBroker {
    pub(super) child: tokio::process::Child,
    pub(super) addr: String,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// Samples the RSS of process `pid` every 100 ms into `peak` until it is gone.
fn sample_rss(
    pid: u32,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(r) = vm_rss(pid) {
            peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Answers to one ApiVersions v0 request on a fresh connection to `addr`: the broker accepts
/// connections and serves requests.
pub(super) async fn api_versions(addr: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    // size, api key 18, version 0, correlation id 7, client id "" (length 0).
    let req: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0];
    s.write_all(&req).await?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    if head[4..8] != [0, 0, 0, 7] {
        bail!("unexpected answer to ApiVersions");
    }
    Ok(())
}

impl ChildBroker {
    pub(super) async fn spawn(scratch: &Path) -> Result<ChildBroker> {
        ChildBroker::spawn_at(scratch, "127.0.0.1:0", "broker.log").await
    }

    /// SIGKILL, then a new `kafkabox serve` on the same data dir and port; returns the time
    /// from starting it to its first answer to ApiVersions.
    pub(super) async fn restart_after_kill9(&mut self, scratch: &Path) -> Result<Duration> {
        self.sampler.abort();
        self.child.start_kill()?;
        self.child.wait().await?;
        let addr = self.addr.clone();
        let started = Instant::now();
        let mut next = ChildBroker::spawn_child(scratch, &addr, "broker-restart.log")?;
        loop {
            if api_versions(&addr).await.is_ok() {
                break;
            }
            if let Some(st) = next.try_wait()? {
                bail!("kafkabox serve exited after a restart ({st})");
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("kafkabox serve did not answer within 60 s of a restart");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        self.child = next;
        self.sampler = sample_rss(self.child.id().unwrap_or(0), self.peak.clone());
        Ok(took)
    }

    fn spawn_child(scratch: &Path, listen: &str, log: &str) -> Result<tokio::process::Child> {
        let exe = std::env::current_exe().context("finding the kafkabox binary")?;
        tokio::process::Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(scratch.join("data"))
            .args(["--listen", listen, "--http-listen", ""])
            .env("KAFKABOX_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(scratch.join(log))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting kafkabox serve")
    }

    async fn spawn_at(scratch: &Path, listen: &str, log_name: &str) -> Result<ChildBroker> {
        let log = scratch.join(log_name);
        let mut child = ChildBroker::spawn_child(scratch, listen, log_name)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(a) = text
                .lines()
                .find(|l| l.contains("Kafka listener ready"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
            {
                break a.to_string();
            }
            if let Some(st) = child.try_wait()? {
                bail!("kafkabox serve exited ({st}): {text}");
            }
            if Instant::now() > deadline {
                bail!("kafkabox serve did not start within 60 s: {text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = sample_rss(child.id().unwrap_or(0), peak.clone());
        Ok(ChildBroker {
            child,
            addr,
            peak,
            sampler,
        })
    }

    /// SIGTERM and wait; returns (peak RSS, RSS just before stopping).
    pub(super) async fn stop(&mut self) -> Result<(u64, u64)> {
        let pid = self.child.id().unwrap_or(0);
        let end = vm_rss(pid).unwrap_or(0);
        self.sampler.abort();
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(st) => {
                let st = st?;
                if !st.success() {
                    bail!("kafkabox serve exited with {st}");
                }
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("kafkabox serve did not stop within 60 s of SIGTERM");
            }
        }
        Ok((
            self.peak
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(end),
            end,
        ))
    }
}

/// `kafkabox serve --ephemeral ...` as a child; its ready line.
pub(super) async fn ephemeral_child(
    http: &str,
    extra: &[&str],
) -> Result<(tokio::process::Child, serde_json::Value)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("finding the kafkabox binary")?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["serve", "--ephemeral", "--listen", "127.0.0.1:0"])
        .args(["--http-listen", http])
        .args(extra)
        .env("KAFKABOX_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting kafkabox serve --ephemeral")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("no ready line within 60 s")??
        .context("kafkabox serve exited before its ready line")?;
    Ok((child, serde_json::from_str(&line)?))
}

/// SIGTERM, and wait (at most 30 s): its exit status, if it exited.
pub(super) async fn stop_child(
    child: &mut tokio::process::Child,
) -> Option<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .ok()?
        .ok()
}

/// A box standing in for a central cluster: customer-events is a plain topic there.
pub(super) const PLAIN_CLUSTER: &[&str] = &[
    "--set",
    "customer.events.contract=false",
    "--set",
    "customer.events.handlers=",
    "--set",
    "num.partitions=3",
    // `kafkabox handle` creates and writes customer-events.dlq there, as on a Kafka cluster.
    "--set",
    "dead.letter.topics.reserved=false",
];
