//! `kafkabox bench`: drives a broker with a real Kafka client (librdkafka through the rdkafka
//! crate) and reports produce throughput and produce-to-fetch latency, next to this machine's
//! own loopback TCP throughput and durable file-append throughput measured in the same run.
//!
//! Without `--bootstrap` it starts `kafkabox serve` as a child process on 127.0.0.1:0 over a
//! fresh temporary data directory (removed afterwards) and reports that process's memory; the
//! handler section runs an appliance in this process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Broker to measure; default: start one in-process over a temporary data dir.
    #[arg(long)]
    bootstrap: Option<String>,
    /// A librdkafka setting for every client of the bench, KEY=VALUE (repeatable): security
    /// for a `--bootstrap` broker, e.g. -X security.protocol=SASL_SSL -X sasl.mechanisms=...
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    client_settings: Vec<String>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    sizes: Vec<usize>,
    /// acks settings to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,all")]
    acks: Vec<String>,
    /// Bytes of payload sent per throughput run (the message count follows from the size).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    bytes_per_run: usize,
    /// Messages sent for the latency measurement.
    #[arg(long, default_value_t = 5_000)]
    latency_messages: usize,
    /// Where the in-process broker and the file-append probe write (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Customer events pushed through the handler pipeline (contract + profiles), 0 to skip.
    #[arg(long, default_value_t = 200_000)]
    handler_events: usize,
    /// Bytes of 1 KiB records consumed by consumer groups of 1 and 3 members, 0 to skip.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    consume_bytes: usize,
    /// Also write the results as JSON to this file (to compare a run with the last one).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Start-ups measured: `kafkabox serve --ephemeral` until its ready line and its first
    /// ApiVersions answer, and `Appliance::builder().ephemeral()` in-process; 0 to skip.
    #[arg(long, default_value_t = 20)]
    startups: usize,
    /// Records an edge box forwards to a second box (`serve --upstream`), 0 to skip.
    #[arg(long, default_value_t = 200_000)]
    forward_records: usize,
    /// Customer events `kafkabox handle` handles from a second box (contract, re-keying,
    /// profiles in the changelog), 0 to skip.
    #[arg(long, default_value_t = 100_000)]
    handle_events: usize,
    /// Group sizes whose rebalance time is measured (20 partitions, heartbeat.interval.ms=100).
    #[arg(long, value_delimiter = ',', default_value = "2,20")]
    rebalance_members: Vec<usize>,
}

/// The `-X` settings, applied to every client the bench makes.
static CLIENT_SETTINGS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// A librdkafka client configuration with the `-X` settings.
fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in CLIENT_SETTINGS.get().into_iter().flatten() {
        c.set(k, v);
    }
    c
}

/// Most messages one run sends, whatever `bytes_per_run` says (10 GiB of 1 KiB records fit).
const MAX_MESSAGES_PER_RUN: usize = 12_000_000;

struct Throughput {
    size: usize,
    acks: String,
    messages: usize,
    secs: f64,
}

impl Throughput {
    fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn mib_per_s(&self) -> f64 {
        (self.messages * self.size) as f64 / self.secs / (1024.0 * 1024.0)
    }
}

fn progress(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{msg:<28} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let mut settings = Vec::new();
    for kv in &args.client_settings {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-X {kv}: expected KEY=VALUE"))?;
        settings.push((k.to_string(), v.to_string()));
    }
    let _ = CLIENT_SETTINGS.set(settings);
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = base.join(format!("kafkabox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = run_in(&args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// `kafkabox serve` in a child process over `<scratch>/data`, so its memory is measured apart
/// from the client's; its RSS is sampled every 100 ms.
struct ChildBroker {
    child: tokio::process::Child,
    addr: String,
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
async fn api_versions(addr: &str) -> Result<()> {
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
    async fn spawn(scratch: &Path) -> Result<ChildBroker> {
        ChildBroker::spawn_at(scratch, "127.0.0.1:0", "broker.log").await
    }

    /// SIGKILL, then a new `kafkabox serve` on the same data dir and port; returns the time
    /// from starting it to its first answer to ApiVersions.
    async fn restart_after_kill9(&mut self, scratch: &Path) -> Result<Duration> {
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
    async fn stop(&mut self) -> Result<(u64, u64)> {
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

/// Bytes the files under `dir` take on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn rss_peak() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn run_in(args: &BenchArgs, scratch: &Path) -> Result<()> {
    let mut report = serde_json::Map::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    report.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    report.insert("cores".into(), cores.into());
    report.insert(
        "unix_time_s".into(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .into(),
    );
    println!("kafkabox bench: {cores} cores");
    let loopback = loopback_mib_per_s(512 * 1024 * 1024).await?;
    println!("reference: loopback TCP, one connection, 1 MiB writes: {loopback:.0} MiB/s");
    let file = tokio::task::spawn_blocking({
        let dir = scratch.to_path_buf();
        // As much as one produce run writes (64 MiB to 1 GiB): a small bench stays small on disk.
        let total = args.bytes_per_run.clamp(64 << 20, 1 << 30);
        move || {
            file_append_mib_per_s(&dir, total)
                .with_context(|| format!("measuring the disk's durable bound in {}", dir.display()))
        }
    })
    .await??;
    println!(
        "reference: file append, 64 KiB writes, fdatasync every 5 ms: {file:.0} MiB/s durable"
    );

    if args.startups > 0 && args.bootstrap.is_none() {
        let s = startup_bench(args.startups).await?;
        let (ready, first, inproc) = (
            pct(&s.ready_ms),
            pct(&s.first_answer_ms),
            pct(&s.in_process_ms),
        );
        println!(
            "start-up, kafkabox serve --ephemeral --listen 127.0.0.1:0 (process spawn to ready line on stdout), {} runs: p50 {:.1} ms, max {:.1} ms; to the first ApiVersions answer: p50 {:.1} ms, max {:.1} ms",
            args.startups, ready.0, ready.1, first.0, first.1
        );
        println!(
            "start-up in-process, Appliance::builder().ephemeral().start(): p50 {:.1} ms, max {:.1} ms",
            inproc.0, inproc.1
        );
        report.insert(
            "startup_ms".into(),
            serde_json::json!({
                "process_ready_p50": ready.0, "process_ready_max": ready.1,
                "process_first_answer_p50": first.0, "process_first_answer_max": first.1,
                "in_process_p50": inproc.0, "in_process_max": inproc.1,
            }),
        );
    }

    let (mut server, addr) = match &args.bootstrap {
        Some(b) => (None, b.clone()),
        None => {
            let b = ChildBroker::spawn(scratch).await?;
            let a = b.addr.clone();
            println!(
                "broker: kafkabox serve (pid {}) at {a}, data in {}",
                b.child.id().unwrap_or(0),
                scratch.join("data").display()
            );
            (Some(b), a)
        }
    };

    let mut results = Vec::new();
    for &size in &args.sizes {
        for acks in &args.acks {
            let messages = (args.bytes_per_run / size.max(1)).clamp(1, MAX_MESSAGES_PER_RUN);
            let topic = format!("bench-{size}-{acks}-{}", std::process::id());
            let r = throughput(&addr, &topic, size, acks, messages, args.quiet).await?;
            println!(
                "produce {size:>5} B acks={acks:<3}: {:>9.0} msg/s {:>7.1} MiB/s ({} messages in {:.2} s)",
                r.msgs_per_s(),
                r.mib_per_s(),
                r.messages,
                r.secs
            );
            results.push(r);
        }
    }
    // Space on disk per byte of record payload, after the throughput runs.
    let payload: u64 = results.iter().map(|r| (r.messages * r.size) as u64).sum();
    let space = (server.is_some() && payload > 0).then(|| {
        let on_disk = disk_usage(&scratch.join("data"));
        (on_disk, on_disk as f64 / payload as f64)
    });
    let (p50, p99, n) = latency(&addr, args.latency_messages, args.quiet).await?;
    println!("produce-to-fetch latency (acks=all, linger.ms=0, {n} messages): p50 {p50:.2} ms, p99 {p99:.2} ms");

    println!();
    println!("summary");
    println!("  loopback TCP                  {loopback:>8.0} MiB/s");
    println!("  durable file append bound     {file:>8.0} MiB/s");
    for r in &results {
        println!(
            "  produce {:>5} B acks={:<3}      {:>8.1} MiB/s {:>9.0} msg/s   {:>5.1}% of loopback{}",
            r.size,
            r.acks,
            r.mib_per_s(),
            r.msgs_per_s(),
            100.0 * r.mib_per_s() / loopback,
            if r.acks == "all" || r.acks == "-1" {
                format!(", {:.1}% of the durable bound", 100.0 * r.mib_per_s() / file)
            } else {
                String::new()
            }
        );
    }
    println!("  produce-to-fetch p50 / p99    {p50:.2} / {p99:.2} ms");
    if let Some((on_disk, ratio)) = space {
        println!(
            "  space on disk                 {ratio:>8.2} x the record payload ({:.0} MiB for {:.0} MiB)",
            on_disk as f64 / 1048576.0,
            payload as f64 / 1048576.0
        );
        report.insert(
            "space".into(),
            serde_json::json!({"bytes_on_disk": on_disk, "payload_bytes": payload, "ratio": ratio}),
        );
    }
    report.insert("loopback_mib_s".into(), loopback.into());
    report.insert("durable_file_append_mib_s".into(), file.into());
    report.insert(
        "produce".into(),
        results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "size": r.size, "acks": r.acks, "messages": r.messages, "secs": r.secs,
                    "msgs_per_s": r.msgs_per_s(), "mib_per_s": r.mib_per_s(),
                    "fraction_of_loopback": r.mib_per_s() / loopback,
                    "fraction_of_durable_bound": r.mib_per_s() / file,
                })
            })
            .collect::<Vec<_>>()
            .into(),
    );
    report.insert(
        "produce_to_fetch_ms".into(),
        serde_json::json!({"p50": p50, "p99": p99, "messages": n}),
    );
    if args.consume_bytes > 0 {
        let lines = consume_bench(&addr, args.consume_bytes, args.quiet).await?;
        for line in &lines {
            println!("  {line}");
        }
        report.insert("consume".into(), lines.into());
    }
    let mut rebalance = serde_json::Map::new();
    for &n in &args.rebalance_members {
        let secs = rebalance_bench(&addr, n).await?;
        println!(
            "  rebalance, {n:>2} members joining at once (20 partitions): {:.0} ms until every member owns partitions",
            secs * 1000.0
        );
        rebalance.insert(n.to_string(), (secs * 1000.0).into());
    }
    report.insert("rebalance_ms_by_members".into(), rebalance.into());
    if let Some(b) = server.as_mut() {
        // Start-up after kill -9, with everything the runs above wrote still on disk.
        let on_disk = disk_usage(&scratch.join("data"));
        let took = b.restart_after_kill9(scratch).await?;
        println!(
            "  start after kill -9             {:>8.1} ms to the first ApiVersions answer ({:.0} MiB on disk)",
            took.as_secs_f64() * 1e3,
            on_disk as f64 / 1048576.0
        );
        report.insert(
            "restart_after_kill9".into(),
            serde_json::json!({"ms": took.as_secs_f64() * 1e3, "bytes_on_disk": on_disk}),
        );
    }
    if let Some(mut b) = server {
        let (peak, idle) = b.stop().await?;
        println!(
            "  broker RSS                    {:>8.0} MiB peak while producing and consuming, {:.0} MiB at the end",
            peak as f64 / 1048576.0,
            idle as f64 / 1048576.0
        );
        report.insert(
            "broker_rss_bytes".into(),
            serde_json::json!({"peak": peak, "end": idle}),
        );
    }
    if args.handler_events > 0 {
        // Each section measures itself, not the write-back of the ones before.
        let _ = tokio::process::Command::new("sync").status().await;
        let h = handler_bench(&scratch.join("handlers"), args.handler_events, args.quiet).await?;
        println!(
            "  handlers (contract + profile)  {:>8.0} events/s ({} events, {} customers, {:.2} s to drain; produced in {:.2} s)",
            h.events as f64 / h.secs,
            h.events,
            HANDLER_CUSTOMERS,
            h.secs,
            h.produced_secs
        );
        println!(
            "  produce-to-handled p50 / p99 / p99.9  {:.2} / {:.2} / {:.2} ms ({} events at 10,000/s, acks=all, through the contract to a handler)",
            h.p50, h.p99, h.p999, h.latency_events
        );
        report.insert(
            "handlers".into(),
            serde_json::json!({
                "events_per_s": h.events as f64 / h.secs, "events": h.events,
                "customers": HANDLER_CUSTOMERS, "drain_secs": h.secs, "produced_secs": h.produced_secs,
                "latency_ms": {"p50": h.p50, "p99": h.p99, "p999": h.p999, "events": h.latency_events},
            }),
        );
    }
    if args.bootstrap.is_none() && args.forward_records > 0 {
        let (secs, produced) = forward_bench(args.forward_records).await?;
        let n = args.forward_records as f64;
        println!(
            "  edge forwarding (serve --upstream)  {:>8.0} records/s {:>6.1} MiB/s of values ({} records of 100 B, 3 partitions, to a second kafkabox; produced in {:.2} s, all upstream after {:.2} s)",
            n / secs,
            n * 100.0 / secs / 1048576.0,
            args.forward_records,
            produced,
            secs
        );
        report.insert(
            "forward".into(),
            serde_json::json!({"records": args.forward_records, "records_per_s": n / secs, "secs": secs, "produced_secs": produced}),
        );
    }
    if args.bootstrap.is_none() && args.handle_events > 0 {
        let (secs, produced) = handle_bench(args.handle_events).await?;
        let n = args.handle_events as f64;
        println!(
            "  kafkabox handle (one process)  {:>8.0} events/s ({} events, {} customers, 3 partitions, from a second kafkabox: contract, re-keying, profiles to the changelog; produced in {:.2} s, handled after {:.2} s)",
            n / secs,
            args.handle_events,
            HANDLER_CUSTOMERS,
            produced,
            secs
        );
        report.insert(
            "handle".into(),
            serde_json::json!({"events": args.handle_events, "events_per_s": n / secs, "secs": secs, "produced_secs": produced}),
        );
    }
    if let Some(peak) = rss_peak() {
        println!(
            "  peak RSS of this process      {:>8.0} MiB (the clients and the handler section's appliance)",
            peak as f64 / 1048576.0
        );
        report.insert("rss_peak_bytes".into(), peak.into());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// `kafkabox serve --ephemeral ...` as a child; its ready line.
async fn ephemeral_child(
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
async fn stop_child(child: &mut tokio::process::Child) -> Option<std::process::ExitStatus> {
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
const PLAIN_CLUSTER: &[&str] = &[
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

/// Sum of the high watermarks of `topic`'s `partitions` at `addr`.
fn high_watermarks(addr: &str, topic: &str, partitions: i32) -> i64 {
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
async fn produce_n(
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

/// Records/s an edge box forwards to a second box: time from the first produce until the
/// second holds all `n`.
async fn forward_bench(n: usize) -> Result<(f64, f64)> {
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

/// Events/s of one `kafkabox handle` process over customer events in a second box: time from
/// the first produce until its group has committed everything (the source and the re-keyed
/// events).
async fn handle_bench(n: usize) -> Result<(f64, f64)> {
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

struct Startups {
    ready_ms: Vec<f64>,
    first_answer_ms: Vec<f64>,
    in_process_ms: Vec<f64>,
}

/// (p50, max) of `v`.
fn pct(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (0.0, 0.0);
    }
    (s[s.len() / 2], s[s.len() - 1])
}

/// Starts `kafkabox serve --ephemeral` `n` times (timing the ready line and the first
/// ApiVersions answer; SIGTERM after each) and an ephemeral appliance in-process `n` times.
async fn startup_bench(n: usize) -> Result<Startups> {
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

async fn create_topic(addr: &str, name: &str, partitions: i32) -> Result<()> {
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

/// Closed with a bound when dropped (kafkabox::clients).
fn group_member(
    addr: &str,
    group: &str,
    heartbeat_ms: &str,
) -> Result<kafkabox::clients::Closing<rdkafka::consumer::DefaultConsumerContext>> {
    let c: BaseConsumer = client_config()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", heartbeat_ms)
        .create()
        .context("creating a group consumer")?;
    Ok(kafkabox::clients::Closing::new(c, "bench group member"))
}

/// Consume throughput of consumer groups of 1 and 3 members over a 3-partition topic of 1 KiB
/// records: time from subscribing until every record was polled.
async fn consume_bench(addr: &str, bytes: usize, quiet: bool) -> Result<Vec<String>> {
    let topic = format!("bench-consume-{}", std::process::id());
    create_topic(addr, &topic, 3).await?;
    let messages = (bytes / 1024).clamp(1, MAX_MESSAGES_PER_RUN);
    let produced = throughput(addr, &topic, 1024, "1", messages, quiet).await?;
    let total = produced.messages + 1; // and the warm-up record
    let mut out = Vec::new();
    for members in [1usize, 3] {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bytes_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let group = format!("bench-consume-{members}-{}", std::process::id());
        let start = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..members {
            let c = group_member(addr, &group, "3000")?;
            c.subscribe(&[&topic]).context("subscribe")?;
            let (count, bytes_seen, stop) = (count.clone(), bytes_seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !stop.load(Relaxed) {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                        bytes_seen.fetch_add(m.payload_len(), Relaxed);
                        count.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while count.load(std::sync::atomic::Ordering::Relaxed) < total {
            if Instant::now() > deadline {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                bail!("the group of {members} did not read {total} records in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let b = bytes_seen.load(std::sync::atomic::Ordering::Relaxed);
        out.push(format!(
            "consume, group of {members}          {:>8.1} MiB/s {:>9.0} msg/s ({total} records of 1 KiB over 3 partitions in {secs:.2} s, join included)",
            b as f64 / secs / (1024.0 * 1024.0),
            total as f64 / secs
        ));
    }
    Ok(out)
}

/// Rebalance time: `members` consumers subscribe to a 20-partition topic at once; the time
/// until every one of them owns partitions and together they own all 20.
async fn rebalance_bench(addr: &str, members: usize) -> Result<f64> {
    let topic = format!("bench-rebalance-{members}-{}", std::process::id());
    create_topic(addr, &topic, 20).await?;
    let group = format!("bench-rebalance-{members}-{}", std::process::id());
    let owned = std::sync::Arc::new(std::sync::Mutex::new(vec![0usize; members]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..members {
        consumers.push(group_member(addr, &group, "100")?);
    }
    let start = Instant::now();
    let mut threads = Vec::new();
    for (i, c) in consumers.into_iter().enumerate() {
        c.subscribe(&[&topic]).context("subscribe")?;
        let (owned, stop) = (owned.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(10));
                let n = c.assignment().map(|a| a.count()).unwrap_or(0);
                if let Ok(mut o) = owned.lock() {
                    o[i] = n;
                }
            }
        }));
    }
    let want = members.min(20);
    let deadline = Instant::now() + Duration::from_secs(120);
    let secs = loop {
        let done = owned
            .lock()
            .map(|o| o.iter().sum::<usize>() == 20 && o.iter().filter(|n| **n > 0).count() == want)
            .unwrap_or(false);
        if done {
            break start.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            bail!("a group of {members} did not settle in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(secs)
}

/// Customers the handler benchmark spreads its events over.
const HANDLER_CUSTOMERS: usize = 1_000;

struct HandlerResult {
    events: usize,
    secs: f64,
    /// When the last event was acknowledged (the rest of `secs` is the stages catching up).
    produced_secs: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    latency_events: usize,
}

/// Records, per handled event, the delay since the send time carried in the event.
struct LatencyProbe {
    epoch: Instant,
    delays: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

#[async_trait::async_trait]
impl kafkabox::pipeline::Handler for LatencyProbe {
    fn name(&self) -> &str {
        "latency-probe"
    }

    async fn handle(
        &self,
        events: &[kafkabox::pipeline::Event],
    ) -> Result<(), kafkabox::pipeline::HandlerError> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut d = match self.delays.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        for e in events {
            let sent = e
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                .and_then(|v| v["metadata"]["sent_ns"].as_u64());
            if let Some(sent) = sent {
                d.push(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
        Ok(())
    }
}

fn customer_event(i: usize, sent_ns: u64) -> String {
    format!(
        r#"{{"source":"billing","source_name":"Billing","customer_id":"{}","event_type":"recharge","timestamp":"2024-01-15T10:30:00.123456Z","value":{}.5,"metadata":{{"sent_ns":{sent_ns}}}}}"#,
        100_000 + i % HANDLER_CUSTOMERS,
        i % 100
    )
}

/// Events/s through the contract and profile stages (time from the first produce until both
/// stages have no lag), and produce-to-handled latency through the contract to a handler.
async fn handler_bench(dir: &Path, events: usize, quiet: bool) -> Result<HandlerResult> {
    let epoch = Instant::now();
    let delays = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = kafkabox::Appliance::builder()
        .data_dir(dir)
        .listen("127.0.0.1:0")
        .profiles("customer-events")
        .start()
        .await?;
    let addr = app.kafka_addr().to_string();
    let p = producer(&addr, "1", "5")?;
    let pb = progress(quiet, events as u64, "handlers: contract + profile");
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..events {
        let v = customer_event(i, 0);
        let fut = loop {
            match p.send_result(FutureRecord::<(), _>::to("customer-events").payload(&v)) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match pending.pop_front() {
                        Some(f) => check_delivery(f).await?,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => return Err(e).context("queueing a customer event"),
            }
        };
        pending.push_back(fut);
        if pending.len() >= 100_000 {
            if let Some(f) = pending.pop_front() {
                check_delivery(f).await?;
            }
        }
    }
    while let Some(f) = pending.pop_front() {
        check_delivery(f).await?;
    }
    let produced_secs = start.elapsed().as_secs_f64();
    // Bounded: the stages drain or the bench gives up after ten minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let total = app.lag().total();
        pb.set_position(events.saturating_sub(total.max(0) as usize) as u64);
        if total == 0 && app.lag().get("profile", "customer-events", 0).is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the handler pipeline did not drain within ten minutes (lag {total})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();

    drop(p);
    app.shutdown().await?;

    // Latency: a second appliance over a fresh dir with a probe handler, once the machine has
    // written back what the throughput run left in the page cache (its write-back would stall
    // this run's fsyncs and measure the previous run).
    let _ = tokio::process::Command::new("sync").status().await;
    let app = kafkabox::Appliance::builder()
        .data_dir(dir.join("latency"))
        .listen("127.0.0.1:0")
        .handler(
            "customer-events",
            LatencyProbe {
                epoch,
                delays: delays.clone(),
            },
        )
        .start()
        .await?;
    let p = producer(&app.kafka_addr().to_string(), "all", "0")?;
    // Warm up: connect and learn the partition leader before measuring (an event without a
    // send time, which the probe does not count).
    let warm = r#"{"source":"billing","customer_id":"warm-up","event_type":"recharge","timestamp":"2024-01-15T10:30:00Z"}"#;
    check_delivery(
        p.send_result(FutureRecord::<(), _>::to("customer-events").payload(warm))
            .map_err(|(e, _)| e)?,
    )
    .await?;
    // 10,000 events/s: ten per millisecond tick, for three seconds.
    let n = 30_000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        if i % 10 == 0 {
            tick.tick().await;
        }
        let v = customer_event(i, epoch.elapsed().as_nanos() as u64);
        futs.push(
            p.send_result(FutureRecord::<(), _>::to("customer-events").payload(&v))
                .map_err(|(e, _)| e)?,
        );
    }
    for f in futs {
        check_delivery(f).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while delays.lock().map(|d| d.len()).unwrap_or(0) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(p);
    app.shutdown().await?;
    let mut d = delays.lock().map(|d| d.clone()).unwrap_or_default();
    if d.is_empty() {
        bail!("the latency probe handled nothing");
    }
    d.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    Ok(HandlerResult {
        events,
        secs,
        produced_secs,
        p50: pct(0.5),
        p99: pct(0.99),
        p999: pct(0.999),
        latency_events: d.len(),
    })
}

/// Raw loopback throughput: one connection, 1 MiB writes, reader discards.
async fn loopback_mib_per_s(total: usize) -> Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let r = s.read(&mut buf).await?;
            if r == 0 {
                return Ok::<usize, std::io::Error>(n);
            }
            n += r;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await?;
        sent += chunk.len();
    }
    s.shutdown().await?;
    let got = reader.await??;
    let secs = start.elapsed().as_secs_f64();
    if got != sent {
        bail!("loopback probe: sent {sent} bytes, received {got}");
    }
    Ok(got as f64 / secs / (1024.0 * 1024.0))
}

/// Durable append bound of the disk under `dir`: 64 KiB writes, fdatasync every 5 ms (group
/// commit), the final sync included.
fn file_append_mib_per_s(dir: &Path, total: usize) -> Result<f64> {
    let path = dir.join("append-probe");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![7u8; 64 * 1024];
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(&chunk)?;
        written += chunk.len();
        if last_sync.elapsed() >= Duration::from_millis(5) {
            f.sync_data()?;
            last_sync = Instant::now();
        }
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(written as f64 / secs / (1024.0 * 1024.0))
}

fn producer(addr: &str, acks: &str, linger_ms: &str) -> Result<FutureProducer> {
    client_config()
        .set("bootstrap.servers", addr)
        .set("acks", acks)
        .set("linger.ms", linger_ms)
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("creating the rdkafka producer")
}

async fn throughput(
    addr: &str,
    topic: &str,
    size: usize,
    acks: &str,
    messages: usize,
    quiet: bool,
) -> Result<Throughput> {
    let p = producer(addr, acks, "5")?;
    // Create the topic and warm the connection before timing.
    p.send(
        FutureRecord::<(), _>::to(topic).payload("warm-up"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .context("warm-up message")?;
    let payload = vec![b'x'; size];
    let pb = progress(
        quiet,
        messages as u64,
        &format!("produce {size} B acks={acks}"),
    );
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(10_000);
    let mut done = 0usize;
    for _ in 0..messages {
        let fut = loop {
            match p.send_result(FutureRecord::<(), _>::to(topic).payload(&payload)) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The client's queue is full: wait for the oldest delivery.
                    match pending.pop_front() {
                        Some(f) => {
                            check_delivery(f).await?;
                            done += 1;
                            pb.set_position(done as u64);
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => return Err(e).context("queueing a message"),
            }
        };
        pending.push_back(fut);
        // Bound the futures held in memory.
        if pending.len() >= 100_000 {
            if let Some(f) = pending.pop_front() {
                check_delivery(f).await?;
                done += 1;
                pb.set_position(done as u64);
            }
        }
    }
    while let Some(f) = pending.pop_front() {
        check_delivery(f).await?;
        done += 1;
        if done.is_multiple_of(1000) {
            pb.set_position(done as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Ok(Throughput {
        size,
        acks: acks.to_string(),
        messages,
        secs,
    })
}

async fn check_delivery(f: rdkafka::producer::DeliveryFuture) -> Result<()> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e).context("delivery failed"),
        Err(_) => bail!("delivery future cancelled"),
    }
}

/// Produce-to-fetch latency: each payload carries its send time; a consumer assigned at the log
/// end measures when it sees it.
async fn latency(addr: &str, count: usize, quiet: bool) -> Result<(f64, f64, usize)> {
    let topic = format!("bench-latency-{}", std::process::id());
    let p = producer(addr, "all", "0")?;
    p.send(
        FutureRecord::<(), _>::to(&topic).payload("warm-up"),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .context("warm-up message")?;
    let epoch = Instant::now();
    let consumer_addr = addr.to_string();
    let consumer_topic = topic.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> Result<Vec<f64>> {
        let c: BaseConsumer = client_config()
            .set("bootstrap.servers", &consumer_addr)
            .set("group.id", "kafkabox-bench-unused")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&consumer_topic, 0, Offset::Offset(1))?;
        c.assign(&tpl)?;
        // Let the consumer connect before the clock starts.
        let _ = c.poll(Duration::from_millis(500));
        let _ = ready_tx.send(());
        let mut lat = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(120);
        while lat.len() < count && Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                let sent: u64 = m
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let now = epoch.elapsed().as_nanos() as u64;
                lat.push(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
        Ok(lat)
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(30));
    let pb = progress(quiet, count as u64, "produce-to-fetch latency");
    // A steady 5,000 msg/s: latency, not throughput, is measured here.
    let mut tick = tokio::time::interval(Duration::from_micros(200));
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let sent = epoch.elapsed().as_nanos().to_string();
        pending.push(
            p.send_result(FutureRecord::<(), _>::to(&topic).payload(&sent))
                .map_err(|(e, _)| e)?,
        );
        if i % 500 == 0 {
            pb.set_position(i as u64);
        }
    }
    for f in pending {
        check_delivery(f).await?;
    }
    pb.finish_and_clear();
    let mut lat = tokio::task::spawn_blocking(move || reader.join())
        .await?
        .map_err(|_| anyhow::anyhow!("latency reader panicked"))??;
    if lat.is_empty() {
        bail!("the latency consumer received nothing");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok((pct(0.50), pct(0.99), lat.len()))
}
