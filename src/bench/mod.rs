//! `kafkabox bench`: drives a broker with a real Kafka client (librdkafka through the rdkafka
//! crate) and reports produce throughput and produce-to-fetch latency, next to this machine's
//! own loopback TCP throughput and durable file-append throughput measured in the same run.
//!
//! Without `--bootstrap` it starts `kafkabox serve` as a child process on 127.0.0.1:0 over a
//! fresh temporary data directory (removed afterwards) and reports that process's memory; the
//! edge forwarding and `kafkabox handle` sections start further `kafkabox serve --ephemeral`
//! children. Only the handler section and the in-process start-ups run an appliance in this
//! process.
//!
//! - `mod.rs`: the options ([`BenchArgs`], the `-X` client settings), the driver that runs
//!   each section in turn, and the report (printed, and as JSON with `--json`).
//! - `broker.rs`: the `kafkabox serve` child processes (start, restart after kill -9, stop,
//!   memory) and a raw ApiVersions probe.
//! - `clients.rs`: the librdkafka clients the sections share (producer, delivery checks, topic
//!   creation, high watermarks).
//! - `reference.rs`: this machine's bounds: loopback TCP and durable file append.
//! - `produce.rs`: produce throughput and produce-to-fetch latency.
//! - `groups.rs`: consumer group throughput and rebalance time.
//! - `handlers.rs`: the handler pipeline (contract + profiles) and produce-to-handled latency.
//! - `forward.rs`: edge forwarding (`serve --upstream`) to a second box.
//! - `handle.rs`: `kafkabox handle` over a second box.
//! - `startup.rs`: start-up of `serve --ephemeral` and of an in-process appliance.
//! - `transactions.rs`: transactional produce against idempotent produce, commit latency,
//!   read_committed against read_uncommitted reads.

mod broker;
mod clients;
mod forward;
mod groups;
mod handle;
mod handlers;
mod produce;
mod reference;
mod startup;
mod transactions;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientConfig;

use broker::ChildBroker;
use forward::forward_bench;
use groups::{consume_bench, rebalance_bench};
use handle::handle_bench;
use handlers::{handler_bench, HANDLER_CUSTOMERS};
use produce::{latency, throughput, MAX_MESSAGES_PER_RUN};
use reference::{file_append_mib_per_s, loopback_mib_per_s};
use startup::{pct, startup_bench};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Broker to measure; default: start `kafkabox serve` as a child process over a temporary
    /// data dir.
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
    /// Where the child broker, the handler section and the file-append probe write (default:
    /// the system temp dir).
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
    /// 1 KiB records produced in transactions of 100 (and as many idempotent ones; a tenth of
    /// them in transactions of 1), then read at both isolation levels; 0 to skip.
    #[arg(long, default_value_t = 100_000)]
    txn_records: usize,
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
    if args.txn_records > 0 {
        let (a, n) = (addr.clone(), args.txn_records);
        let txn = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
            let pid = std::process::id();
            let idem = transactions::produce_run(&a, &format!("bench-idem-{pid}"), n, 0)?;
            let t100_topic = format!("bench-txn100-{pid}");
            let t100 = transactions::produce_run(&a, &t100_topic, n, 100)?;
            let t1 = transactions::produce_run(&a, &format!("bench-txn1-{pid}"), (n / 10).max(1), 1)?;
            // Each transaction of 100 records ends with a marker: the log end is past them all.
            let end = (n + n.div_ceil(100)) as i64;
            let uncommitted = transactions::read_run(&a, &t100_topic, "read_uncommitted", end)?;
            let committed = transactions::read_run(&a, &t100_topic, "read_committed", end)?;
            for r in [&idem, &t100, &t1] {
                println!(
                    "  produce 1 KiB {:<20} {:>8.1} MiB/s ({} records in {:.2} s){}",
                    r.what,
                    r.mib_per_s(),
                    r.records,
                    r.secs,
                    if r.commits_ms.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", commit p50 {:.2} ms, p99 {:.2} ms",
                            r.commit_pct(0.5),
                            r.commit_pct(0.99)
                        )
                    }
                );
            }
            println!(
                "  transactions of 100: {:.0}% of idempotent throughput",
                100.0 * t100.mib_per_s() / idem.mib_per_s()
            );
            println!(
                "  read of transactional data: read_committed {committed:.1} MiB/s, read_uncommitted {uncommitted:.1} MiB/s ({:.0}%)",
                100.0 * committed / uncommitted
            );
            Ok(serde_json::json!({
                "idempotent_mib_s": idem.mib_per_s(),
                "txn100_mib_s": t100.mib_per_s(),
                "txn1_mib_s": t1.mib_per_s(),
                "txn100_commit_ms": {"p50": t100.commit_pct(0.5), "p99": t100.commit_pct(0.99)},
                "txn1_commit_ms": {"p50": t1.commit_pct(0.5), "p99": t1.commit_pct(0.99)},
                "read_committed_mib_s": committed,
                "read_uncommitted_mib_s": uncommitted,
            }))
        })
        .await??;
        report.insert("transactions".into(), txn);
    }
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
        for (guarantee, key) in [
            ("at_least_once", "handle"),
            ("exactly_once_v2", "handle_exactly_once"),
        ] {
            let (secs, produced) = handle_bench(args.handle_events, guarantee).await?;
            let n = args.handle_events as f64;
            println!(
                "  kafkabox handle, {guarantee:<15} {:>8.0} events/s ({} events, {} customers, 3 partitions, from a second kafkabox: contract, re-keying, profiles to the changelog; produced in {:.2} s, handled after {:.2} s)",
                n / secs,
                args.handle_events,
                HANDLER_CUSTOMERS,
                produced,
                secs
            );
            report.insert(
                key.into(),
                serde_json::json!({"events": args.handle_events, "events_per_s": n / secs, "secs": secs, "produced_secs": produced, "processing_guarantee": guarantee}),
            );
        }
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
