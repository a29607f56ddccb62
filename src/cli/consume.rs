//! `kafkabox consume TOPIC`: records as lines or JSON, from the beginning, an offset or a
//! time, with or without a consumer group; stops at the end of the log (or after N records)
//! unless `--follow`.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaArgs, NotFound};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// The value as text, one per line (`key<TAB>value` with --print-key).
    Lines,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
    /// Like json, but exact: keys, values and header values as UTF-8 text or base64, never as
    /// embedded JSON (what `kafkabox dump` writes and `kafkabox load` reads).
    Dump,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with_all = ["from_time", "from_end"])]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long, conflicts_with_all = ["offset", "from_end"])]
    pub from_time: Option<i64>,
    /// Start at the end: only records produced from now on (implies --follow).
    #[arg(long)]
    pub from_end: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of the log.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Read as a member of this consumer group: start from its committed offsets (or the
    /// beginning), commit what was read.
    #[arg(long, short = 'g', conflicts_with_all = ["partition", "offset", "from_time"])]
    pub group: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Lines)]
    pub format: Format,
    /// With --format lines: print the key and a tab before each value.
    #[arg(long)]
    pub print_key: bool,
    /// read_uncommitted (the default, as kcat) shows every record, those of open and aborted
    /// transactions too; read_committed stops at the last stable offset and leaves aborted
    /// transactions out.
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    pub isolation: Isolation,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    #[value(name = "read_committed")]
    ReadCommitted,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || consume(args)).await?
}

fn consume(args: ConsumeArgs) -> Result<()> {
    let mut client = args.kafka.client()?;
    client
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            match args.isolation {
                Isolation::ReadUncommitted => "read_uncommitted",
                Isolation::ReadCommitted => "read_committed",
            },
        )
        .set(
            "auto.offset.reset",
            if args.from_end { "latest" } else { "earliest" },
        )
        .set(
            "group.id",
            args.group.clone().unwrap_or_else(|| "kafkabox-cli".into()),
        );
    let consumer: BaseConsumer = client.create().context("Kafka consumer")?;
    let consumer = kafkabox::clients::Closing::new(consumer, "consumer");
    let md = consumer
        .fetch_metadata(Some(&args.topic), args.kafka.timeout())
        .with_context(|| format!("cannot reach {}", args.kafka.bootstrap))?;
    let partitions: Vec<i32> = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            t.partitions().iter().map(|p| p.id()).collect()
        }
        _ => return Err(NotFound(format!("no topic '{}'", args.topic)).into()),
    };
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            return Err(NotFound(format!("topic '{}' has no partition {p}", args.topic)).into());
        }
    }
    let follow = args.follow || args.from_end;
    if let (Some(offset), None) = (args.offset, &args.group) {
        for p in partitions
            .iter()
            .filter(|p| args.partition.is_none_or(|want| want == **p))
        {
            check_offset(&consumer, &args, *p, offset, follow)?;
        }
    }
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic]).context("subscribe")?;
    } else {
        let mut tpl = TopicPartitionList::new();
        let start = if args.from_end {
            Offset::End
        } else if let Some(o) = args.offset {
            Offset::Offset(o)
        } else if let Some(t) = args.from_time {
            Offset::Offset(t)
        } else {
            Offset::Beginning
        };
        for p in partitions
            .iter()
            .filter(|p| args.partition.is_none_or(|want| want == **p))
        {
            tpl.add_partition_offset(&args.topic, *p, start)
                .context("partition offset")?;
        }
        let tpl = if args.from_time.is_some() {
            consumer
                .offsets_for_times(tpl, args.kafka.timeout())
                .context("ListOffsets by time")?
        } else {
            tpl
        };
        consumer.assign(&tpl).context("assign")?;
    }
    let stdout = std::io::stdout();
    let mut out = Quiet(std::io::BufWriter::new(stdout.lock()));
    let mut seen = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    let started = Instant::now();
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                seen += 1;
                write(&mut out, &args, &m)?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                out.flush()?;
            }
            Some(Err(e)) => bail!("consuming {}: {e}", args.topic),
            None => {}
        }
        if !follow {
            let assigned: Vec<i32> = consumer
                .assignment()
                .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            if !assigned.is_empty() && assigned.iter().all(|p| at_end.contains(p)) {
                break;
            }
            if assigned.is_empty() && started.elapsed() > args.kafka.timeout() {
                bail!(
                    "no partitions were assigned within {} ms",
                    args.kafka.timeout_ms
                );
            }
        }
    }
    out.flush()?;
    if args.group.is_some() && seen > 0 {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .context("committing the group's offsets")?;
    }
    eprintln!(
        "{} consumed from {}",
        super::count(seen, "record"),
        args.topic
    );
    Ok(())
}

/// `--offset` within partition `p`'s log, or an error that says what the partition holds; with
/// `--follow`, an offset beyond the end is waited for.
fn check_offset(
    consumer: &BaseConsumer,
    args: &ConsumeArgs,
    p: i32,
    offset: i64,
    follow: bool,
) -> Result<()> {
    let topic = &args.topic;
    let watermarks = || {
        consumer
            .fetch_watermarks(topic, p, args.kafka.timeout())
            .with_context(|| format!("offsets of {topic}/{p}"))
    };
    let (start, end) = watermarks()?;
    let holds = if start == end {
        format!("holds no records (its log starts and ends at {end})")
    } else {
        format!("holds offsets {start} to {}", end - 1)
    };
    if offset < 0 {
        return Err(super::Usage(format!("--offset {offset}: offsets start at 0")).into());
    }
    if offset < start {
        bail!("partition {p} of '{topic}' {holds}: the records before {start} were removed (retention or DeleteRecords); --offset {start} starts at the first");
    }
    if offset <= end {
        return Ok(());
    }
    if !follow {
        bail!("partition {p} of '{topic}' {holds}: offset {offset} is beyond its end; add --follow to wait for it");
    }
    eprintln!(
        "waiting for partition {p} of '{topic}' to reach offset {offset} (its log ends at {end})"
    );
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if watermarks()?.1 >= offset {
            return Ok(());
        }
    }
}

/// stdout whose closing (`| head`) ends the command quietly.
struct Quiet<W: Write>(W);

impl<W: Write> Write for Quiet<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(quiet)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(quiet)
    }
}

fn quiet(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    e
}

fn write(
    out: &mut impl Write,
    args: &ConsumeArgs,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<()> {
    match args.format {
        Format::Lines => {
            if args.print_key {
                out.write_all(m.key().unwrap_or_default())?;
                out.write_all(b"\t")?;
            }
            out.write_all(m.payload().unwrap_or_default())?;
            out.write_all(b"\n")?;
        }
        Format::Json => writeln!(out, "{}", super::render::record_json(m))?,
        Format::Dump => writeln!(out, "{}", super::render::record_line(m))?,
    }
    Ok(())
}
