//! The client commands of the `kafkabox` binary. They speak Kafka through librdkafka (the
//! rdkafka crate), so `topics`, `produce`, `consume`, `dump`, `load` and `groups` work against
//! any Kafka cluster too; `customers`, `dlq` and `faults` have no Kafka equivalent and use
//! kafkabox's HTTP API.
//!
//! Exit codes, for scripts: 0 done; 1 failed (broker or HTTP API unreachable, request
//! refused); 2 bad usage or configuration; 3 not found (topic, group, customer, dead letter).
//!
//! - `mod.rs`: what the commands share: how to reach a cluster ([`KafkaArgs`], [`ListArgs`]) or
//!   the HTTP API ([`HttpArgs`]), exit codes, stdout lines and progress spinners.
//! - `topics.rs`: `topics list|describe|create|delete`.
//! - `produce.rs`: `produce` (and the idempotent producer `load` uses).
//! - `consume.rs`: `consume`.
//! - `dump.rs`: `dump` and `load`, a topic as exact JSON lines and back.
//! - `render.rs`: a consumed record as JSON (`consume --format json|dump`, `dump`).
//! - `groups.rs`: `groups list|describe`.
//! - `httpapi.rs`: `customers`, `dlq` and `faults`, over the HTTP API.

pub mod consume;
pub mod dump;
pub mod groups;
pub mod httpapi;
pub mod produce;
mod render;
pub mod topics;

use std::time::Duration;

use anyhow::Result;
use rdkafka::ClientConfig;

pub use consume::ConsumeArgs;
pub use dump::{DumpArgs, LoadArgs};
pub use groups::GroupsCommand;
pub use httpapi::{CustomersCommand, DlqCommand, FaultsCommand};
pub use produce::ProduceArgs;
pub use topics::TopicsCommand;

/// Exit code of a command whose target does not exist.
pub const EXIT_NOT_FOUND: i32 = 3;

/// Something named does not exist (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The command line asks for something that cannot be (exit code 2, as clap's own usage
/// errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Exit code of bad usage.
pub const EXIT_USAGE: i32 = 2;

/// How long to try to open a connection to the cluster before saying it cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Splits `KEY=VALUE` (of `flag`), a usage error otherwise.
pub fn key_value<'a>(flag: &str, kv: &'a str) -> Result<(&'a str, &'a str), Usage> {
    kv.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .ok_or_else(|| Usage(format!("{flag} {kv}: expected KEY=VALUE")))
}

/// How to reach a Kafka cluster (kafkabox or any other).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap servers.
    #[arg(
        long,
        short = 'b',
        env = "KAFKABOX_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// A librdkafka client setting, KEY=VALUE (repeatable), e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub client_settings: Vec<String>,
    /// How long to wait for the cluster, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl KafkaArgs {
    pub fn client(&self) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .set("socket.timeout.ms", self.timeout_ms.max(10).to_string());
        for kv in &self.client_settings {
            let (k, v) = key_value("-X", kv)?;
            c.set(k, v);
        }
        // A setting librdkafka does not know, or a bad value, is a configuration error.
        if let Err(e) = c.create_native_config() {
            return Err(Usage(format!("-X: {e}")).into());
        }
        Ok(c)
    }

    /// Whether a TCP connection to one of the bootstrap servers opens within a few seconds:
    /// an unreachable cluster is one clear line, before librdkafka retries for the whole
    /// timeout. Blocking.
    pub fn reach(&self) -> Result<()> {
        use std::net::ToSocketAddrs;
        let limit = CONNECT_TIMEOUT.min(self.timeout());
        let mut last = String::from("no address given");
        for server in self
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let server = server.split_once("://").map_or(server, |(_, rest)| rest);
            let addrs = match server.to_socket_addrs() {
                Ok(a) => a,
                Err(e) => {
                    last = format!("{server}: {e}");
                    continue;
                }
            };
            for addr in addrs {
                match std::net::TcpStream::connect_timeout(&addr, limit) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
        }
        anyhow::bail!(
            "cannot reach the Kafka cluster at {} ({last}); is it running? (--bootstrap or KAFKABOX_BOOTSTRAP)",
            self.bootstrap
        )
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The flags `list` and `describe` of `topics` and `groups` share: the cluster, and JSON output.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// One JSON object a line (one per topic or group when listing) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How to reach kafkabox's HTTP API.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Base URL of kafkabox's HTTP API.
    #[arg(long, env = "KAFKABOX_HTTP", default_value = "http://127.0.0.1:8080")]
    pub http: String,
    /// Bearer token (`http.token` of the server).
    #[arg(long, env = "KAFKABOX_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Prints one line on stdout. A closed stdout (`| head`) ends the command quietly, as Unix
/// tools do.
pub fn line(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("kafkabox: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `n` with thousands separators: 246115 -> "246,115".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 record", "2 records", "1,000 records".
pub fn count(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{} {word}s", thousands(n))
    }
}

/// A spinner with a count and a rate on stderr when it is a terminal (hidden otherwise):
/// "produced 1,234,567 (246,115/s)".
pub fn progress(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {count} ({rate})")
            .map(|s| {
                s.with_key(
                    "count",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", thousands(st.pos()));
                    },
                )
                .with_key(
                    "rate",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", thousands(st.per_sec().round() as u64));
                    },
                )
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
