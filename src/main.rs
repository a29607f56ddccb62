//! The kafkabox command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kafkabox::Config;

#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "client")]
mod cli;

#[derive(Debug, Parser)]
#[command(
    name = "kafkabox",
    version,
    about = "One binary that stands in for a Kafka cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json` (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (Kafka listener on 0.0.0.0:9092, data in ./kafkabox-data by default).
    Serve(ServeArgs),
    /// Run the handlers of `serve` (contract, dead letters, profiles, webhook, exec, log) as a
    /// consumer group on a Kafka cluster; profiles kept in a compacted changelog topic.
    #[cfg(feature = "client")]
    Handle(HandleArgs),
    /// Check a data directory for damage (kafkabox not running on it); exit code 1 if damaged.
    Check(kafkabox::datadir::DirArgs),
    /// Truncate the damaged partitions of a data directory to their last intact batch, saying
    /// what was dropped; offsets are never reused.
    Repair(kafkabox::datadir::DirArgs),
    /// Add, list and remove the SASL users of a data directory (kafkabox not running on it).
    #[command(subcommand)]
    Users(kafkabox::datadir::UsersCommand),
    /// Measure produce throughput and produce-to-fetch latency with a real Kafka client (librdkafka).
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// List, describe, create and delete topics (Kafka admin API; any Kafka cluster).
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Topics(cli::TopicsCommand),
    /// Produce stdin to a topic, one record per line (acks=all, idempotent).
    #[cfg(feature = "client")]
    Produce(cli::ProduceArgs),
    /// Print a topic's records, from the beginning, an offset or a time, with or without a group.
    #[cfg(feature = "client")]
    Consume(cli::ConsumeArgs),
    /// Write a topic's records as JSON lines (partition, offset, timestamp, key, value,
    /// headers; exact), from the beginning to the end, for `kafkabox load`.
    #[cfg(feature = "client")]
    Dump(cli::DumpArgs),
    /// Produce the JSON lines of `kafkabox dump` (stdin) to a topic: same partitions,
    /// timestamps, keys, values and headers, in order (acks=all, idempotent).
    #[cfg(feature = "client")]
    Load(cli::LoadArgs),
    /// List and describe consumer groups and handler stages, with lag.
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Groups(cli::GroupsCommand),
    /// Show and search customer profiles (kafkabox's HTTP API).
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Customers(cli::CustomersCommand),
    /// List, replay and skip dead letters (kafkabox's HTTP API).
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Dlq(cli::DlqCommand),
    /// Inject, list and clear faults in a box started with --ephemeral or --allow-faults
    /// (kafkabox's HTTP API).
    #[cfg(feature = "client")]
    #[command(subcommand)]
    Faults(cli::FaultsCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (keys as in the README's configuration reference).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (`data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A fresh temporary data directory, removed at exit; fault injection allowed
    /// (`data.ephemeral`). For tests, with `--listen 127.0.0.1:0`.
    #[arg(long, conflicts_with = "data_dir")]
    ephemeral: bool,
    /// When ready, also write the ready line (JSON: bootstrap, listeners, http, data_dir, pid)
    /// to this file (written whole, by rename; removed at a clean exit).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Accept fault injection on a data directory that is not ephemeral (`faults.allow`).
    #[arg(long)]
    allow_faults: bool,
    /// Forward every record, in order per partition, to this Kafka cluster (`upstream.bootstrap`;
    /// which topics: `upstream.topics`; client settings: kafka.<librdkafka key>).
    #[arg(long, value_name = "BROKERS")]
    upstream: Option<String>,
    /// Advertise the API versions of this Apache Kafka release, e.g. 3.5 (`emulate.kafka`).
    #[arg(long, value_name = "VERSION")]
    emulate_kafka: Option<String>,
    /// Kafka listener address (`listen`), e.g. 0.0.0.0:9092 or 127.0.0.1:0.
    #[arg(long)]
    listen: Option<String>,
    /// host:port that Metadata gives clients (`advertised.listener`).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// HTTP listener (`http.listen`, default 127.0.0.1:8080); an empty value turns it off.
    #[arg(long)]
    http_listen: Option<String>,
    /// Any other setting, KEY=VALUE (repeatable), e.g. --set num.partitions=3.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Defaults < `--config FILE` < `KAFKABOX_*` < `--data-dir` < `--set KEY=VALUE`.
fn base_config(
    file: Option<&PathBuf>,
    data_dir: Option<&PathBuf>,
    set: &[String],
) -> Result<Config> {
    let mut config = Config::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        config
            .apply_toml(&text)
            .with_context(|| format!("config file {}", path.display()))?;
    }
    for name in config.apply_env(std::env::vars())? {
        tracing::warn!(
            variable = %name,
            "environment variable names no kafkabox setting; ignored (see the README's configuration reference)"
        );
    }
    if let Some(d) = data_dir {
        config.data_dir = d.clone();
    }
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        config.set(k, v).with_context(|| format!("--set {kv}"))?;
    }
    Ok(config)
}

fn load_config(args: &ServeArgs) -> Result<Config> {
    let mut config = base_config(args.config.as_ref(), args.data_dir.as_ref(), &[])?;
    if args.ephemeral {
        config.ephemeral = true;
    }
    if args.allow_faults {
        config.faults_allowed = true;
    }
    if let Some(v) = &args.emulate_kafka {
        config.set("emulate.kafka", v).context("--emulate-kafka")?;
    }
    if let Some(u) = &args.upstream {
        config.set("upstream.bootstrap", u).context("--upstream")?;
    }
    if let Some(l) = &args.listen {
        config.set("listen", l).context("--listen")?;
    }
    if let Some(a) = &args.advertised_listener {
        config
            .set("advertised.listener", a)
            .context("--advertised-listener")?;
    }
    if let Some(h) = &args.http_listen {
        config.set("http.listen", h).context("--http-listen")?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        config.set(k, v).with_context(|| format!("--set {kv}"))?;
    }
    Ok(config)
}

/// `kafkabox handle`'s flags.
#[cfg(feature = "client")]
#[derive(Debug, clap::Args)]
struct HandleArgs {
    /// The Kafka cluster's bootstrap servers.
    #[arg(long, short = 'b', env = "KAFKABOX_BOOTSTRAP")]
    bootstrap: String,
    /// The consumer group the handler processes share (also names the changelog topic,
    /// GROUP-profiles-changelog).
    #[arg(long, short = 'g')]
    group: String,
    /// TOML config file (keys as in the README's configuration reference).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the local profile cache lives (`data.dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Any other setting, KEY=VALUE (repeatable): handlers, webhook.url, exec.command, the
    /// contract, and librdkafka's own as kafka.<key>, e.g. --set kafka.security.protocol=SASL_SSL.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[cfg(feature = "client")]
async fn handle(args: HandleArgs) -> Result<()> {
    let mut signals = Signals::install()?;
    let config = base_config(args.config.as_ref(), args.data_dir.as_ref(), &args.set)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let runner = kafkabox::handle::HandleBuilder::new(config, &args.bootstrap, &args.group);
    let task = tokio::spawn(runner.run(rx));
    tokio::pin!(task);
    tokio::select! {
        done = &mut task => return done.context("handler task")?,
        signal = signals.wait() => {
            tracing::info!(signal = signal?, "stopping: finishing the batch in hand, committing");
        }
    }
    let _ = tx.send(true);
    // The batch in hand is finished and the consumer leaves the group; bounded, so that a
    // cluster that stopped answering (acknowledgements that never come) cannot hold the
    // process. A second signal stops at once.
    tokio::select! {
        done = tokio::time::timeout(HANDLE_STOP_BOUND, &mut task) => match done {
            Ok(done) => done.context("handler task")?,
            Err(_) => {
                tracing::warn!(
                    bound_s = HANDLE_STOP_BOUND.as_secs(),
                    "the batch in hand did not finish in time (cluster unreachable?); stopping \
                     without it: its events are handled again at the next start"
                );
                Ok(())
            }
        },
        signal = signals.wait() => {
            tracing::warn!(signal = signal?, "stopping at once: the batch in hand is handled again at the next start");
            Ok(())
        }
    }
}

/// How long `kafkabox handle` waits after SIGTERM for the batch in hand and the group's close.
#[cfg(feature = "client")]
const HANDLE_STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(15);

fn init_logging(default_filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = std::env::var("KAFKABOX_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Colours only for a person at a terminal, never in files or journald.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

/// SIGINT and SIGTERM, installed before anything starts so that a signal arriving during
/// start-up still shuts down cleanly.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(&mut self) -> Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => Ok("SIGINT"),
                _ = self.term.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut signals = Signals::install()?;
    let config = load_config(&args)?;
    // The broker plus the built-in customer-events contract (invalid events go to
    // customer-events.dlq).
    let app = kafkabox::appliance::from_config(config)?.start().await?;
    // One machine-readable line on stdout once every listener and handler runs: a test
    // harness reads it to learn the ports chosen for 127.0.0.1:0.
    let ready = app.ready_line();
    // The file first: a harness that read the stdout line finds the file there too.
    if let Some(path) = &args.ready_file {
        if let Err(e) = write_ready_file(path, &ready) {
            let _ = app.shutdown().await;
            return Err(e);
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout (the harness stopped reading) is no reason to stop serving.
        let _ = writeln!(out, "{ready}").and_then(|()| out.flush());
    }
    let signal = signals.wait().await?;
    tracing::info!(
        signal,
        "shutting down: no new connections, answering requests in flight, flushing"
    );
    let result = app.shutdown().await;
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Writes `line` to `path` whole: to a temporary file beside it, then renamed over it, so a
/// harness polling for the file never reads half of it.
fn write_ready_file(path: &std::path::Path, line: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{line}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("--ready-file: cannot write {}", path.display()))
}

/// The commands that need the `client` cargo feature (librdkafka).
const CLIENT_COMMANDS: &[&str] = &[
    "handle",
    "topics",
    "produce",
    "consume",
    "groups",
    "customers",
    "dlq",
    "faults",
    "dump",
    "load",
    "bench",
];

/// glibc's malloc raises its mmap threshold after the first large free and from then on keeps
/// the large buffers sled allocates and frees for every segment database it opens (about
/// 7 MiB each: page tables and an IO buffer) in its arenas: a consumer reading 6,000 one-record
/// segments took a box to 610 MB (and to gigabytes with more threads). A fixed threshold
/// (`MALLOC_MMAP_THRESHOLD_`, which glibc reads at start) of 512 KiB keeps such buffers mapped
/// on their own and unmapped when freed: the same read stays at 38 MB. `serve` re-executes
/// itself with it set (same process id, same arguments) unless the environment sets it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "524288")
        .exec();
    // Only reached when the exec failed: go on with glibc's defaults.
    eprintln!("kafkabox: cannot re-execute itself with {VAR} set ({err}); going on without it");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}

/// The cluster a Kafka client command talks to.
#[cfg(feature = "client")]
fn kafka_args(command: &Command) -> Option<&cli::KafkaArgs> {
    match command {
        Command::Topics(c) => Some(c.kafka()),
        Command::Groups(c) => Some(c.kafka()),
        Command::Produce(a) => Some(&a.kafka),
        Command::Consume(a) => Some(&a.kafka),
        Command::Dump(a) => Some(&a.kafka),
        Command::Load(a) => Some(&a.kafka),
        _ => None,
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if e.kind() == ErrorKind::InvalidSubcommand {
                if let Some(ContextValue::String(cmd)) = e.get(ContextKind::InvalidSubcommand) {
                    if CLIENT_COMMANDS.contains(&cmd.as_str()) {
                        eprintln!(
                            "kafkabox: this build has no `{cmd}` command: the client commands \
                             and `bench` come with the cargo feature `bench`, which builds \
                             librdkafka: cargo build --release --features bench"
                        );
                        std::process::exit(2);
                    }
                }
            }
            e.exit()
        }
    };
    if matches!(cli.command, Command::Serve(_)) {
        fixed_mmap_threshold();
    }
    // The bench prints its own report; the appliances it runs in this process only log warnings.
    init_logging(
        match cli.command {
            Command::Serve(_) => "info",
            #[cfg(feature = "client")]
            Command::Handle(_) => "info,rdkafka::client=warn",
            #[cfg(feature = "bench")]
            Command::Bench(_) => "warn",
            // The client commands report librdkafka's errors themselves.
            #[allow(unreachable_patterns)]
            _ => "warn,rdkafka::client=off",
        },
        cli.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kafkabox: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    // A client command whose cluster cannot be reached says so in one line, at once.
    #[cfg(feature = "client")]
    if let Some(kafka) = kafka_args(&cli.command) {
        if let Err(e) = kafka.reach() {
            eprintln!("kafkabox: {e:#}");
            std::process::exit(1);
        }
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            #[cfg(feature = "client")]
            Command::Handle(args) => handle(args).await,
            Command::Check(args) => kafkabox::datadir::check(args).await,
            Command::Repair(args) => kafkabox::datadir::repair(args).await,
            Command::Users(c) => kafkabox::datadir::users(c).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => bench::run(args).await,
            #[cfg(feature = "client")]
            Command::Topics(c) => cli::topics::run(c).await,
            #[cfg(feature = "client")]
            Command::Produce(a) => cli::produce::run(a).await,
            #[cfg(feature = "client")]
            Command::Consume(a) => cli::consume::run(a).await,
            #[cfg(feature = "client")]
            Command::Dump(a) => cli::dump::dump(a).await,
            #[cfg(feature = "client")]
            Command::Load(a) => cli::dump::load(a).await,
            #[cfg(feature = "client")]
            Command::Groups(c) => cli::groups::run(c).await,
            #[cfg(feature = "client")]
            Command::Customers(c) => cli::httpapi::customers(c).await,
            #[cfg(feature = "client")]
            Command::Dlq(c) => cli::httpapi::dlq(c).await,
            #[cfg(feature = "client")]
            Command::Faults(c) => cli::httpapi::faults(c).await,
        }
    });
    // Blocking work a command abandoned (a librdkafka call waiting on an unreachable
    // cluster) does not hold the exit: dropping the runtime would wait for it without bound.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    if let Err(e) = result {
        eprintln!("kafkabox: {e:#}");
        // Exit codes: 2 bad usage or configuration (a serve that cannot start); for the
        // client commands 3 not found, 1 any other failure.
        #[cfg(feature = "client")]
        if e.downcast_ref::<cli::NotFound>().is_some() {
            std::process::exit(cli::EXIT_NOT_FOUND);
        }
        #[cfg(feature = "client")]
        if e.downcast_ref::<cli::Usage>().is_some() {
            std::process::exit(cli::EXIT_USAGE);
        }
        std::process::exit(if serving { 2 } else { 1 });
    }
}
