//! The handler pipeline in an appliance in this process: events/s through the contract and
//! profile stages, and produce-to-handled latency through the contract to a probe handler.
//! Also the customer events the `kafkabox handle` section sends.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use super::clients::{check_delivery, producer};
use super::progress;

/// Customers the handler benchmark spreads its events over.
pub(super) const HANDLER_CUSTOMERS: usize = 1_000;

pub(super) struct HandlerResult {
    pub(super) events: usize,
    pub(super) secs: f64,
    /// When the last event was acknowledged (the rest of `secs` is the stages catching up).
    pub(super) produced_secs: f64,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) latency_events: usize,
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

pub(super) fn customer_event(i: usize, sent_ns: u64) -> String {
    format!(
        r#"{{"source":"billing","source_name":"Billing","customer_id":"{}","event_type":"recharge","timestamp":"2024-01-15T10:30:00.123456Z","value":{}.5,"metadata":{{"sent_ns":{sent_ns}}}}}"#,
        100_000 + i % HANDLER_CUSTOMERS,
        i % 100
    )
}

/// Events/s through the contract and profile stages (time from the first produce until both
/// stages have no lag), and produce-to-handled latency through the contract to a handler.
pub(super) async fn handler_bench(dir: &Path, events: usize, quiet: bool) -> Result<HandlerResult> {
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
