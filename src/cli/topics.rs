//! `kafkabox topics list|describe|create|delete`, through Kafka's Metadata and admin APIs.

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaArgs, ListArgs, NotFound};

impl TopicsCommand {
    /// The cluster the command talks to.
    pub fn kafka(&self) -> &KafkaArgs {
        match self {
            TopicsCommand::List { args } | TopicsCommand::Describe { args, .. } => &args.kafka,
            TopicsCommand::Create { kafka, .. } | TopicsCommand::Delete { kafka, .. } => kafka,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Topics with their partition count and offsets.
    List {
        #[command(flatten)]
        args: ListArgs,
    },
    /// A topic's partitions (offsets) and its configs.
    Describe {
        topic: String,
        #[command(flatten)]
        args: ListArgs,
    },
    /// Create a topic.
    Create {
        topic: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// A topic config, KEY=VALUE (repeatable), e.g. --config retention.ms=3600000.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Delete a topic and its records.
    Delete {
        topic: String,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

/// A topic's name and its partitions' (index, log start, log end).
type TopicOffsets = (String, Vec<(i32, i64, i64)>);

/// The offsets of every topic, or of `only`.
fn offsets(kafka: &KafkaArgs, only: Option<&str>) -> Result<Vec<TopicOffsets>> {
    let consumer: BaseConsumer = kafka.client()?.create().context("Kafka client")?;
    let md = consumer
        .fetch_metadata(only, kafka.timeout())
        .with_context(|| format!("cannot reach {}", kafka.bootstrap))?;
    let mut out = Vec::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            if only.is_some() {
                let code = RDKafkaErrorCode::from(e);
                if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(NotFound(format!("no topic '{}'", t.name())).into());
                }
                bail!("topic {}: {code}", t.name());
            }
            continue;
        }
        let mut parts = Vec::new();
        for p in t.partitions() {
            let (lo, hi) = consumer
                .fetch_watermarks(t.name(), p.id(), kafka.timeout())
                .with_context(|| format!("offsets of {}/{}", t.name(), p.id()))?;
            parts.push((p.id(), lo, hi));
        }
        parts.sort();
        out.push((t.name().to_string(), parts));
    }
    out.sort();
    Ok(out)
}

/// A broker's refusal: its message, and the code's name (`InvalidConfig`) for scripts.
fn refusal(code: RDKafkaErrorCode, message: &str) -> String {
    if message.is_empty() {
        return format!("{code:?} ({code})");
    }
    format!("{message} ({code:?})")
}

/// A request that failed as a whole: the cluster unreachable, said in one line.
fn unreachable_or(kafka: &KafkaArgs, e: kafkabox_rdadmin::AdminError) -> anyhow::Error {
    anyhow::anyhow!("cannot reach the Kafka cluster at {}: {e}", kafka.bootstrap)
}

fn admin(kafka: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>> {
    kafka.client()?.create().context("Kafka admin client")
}

pub async fn run(cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::List {
            args: ListArgs { kafka, json },
        } => {
            let list = tokio::task::spawn_blocking(move || offsets(&kafka, None)).await??;
            let mut table = super::render::Table::new(&["TOPIC", "PARTITIONS", "RECORDS"]);
            for (name, parts) in list {
                let records: i64 = parts.iter().map(|(_, lo, hi)| hi - lo).sum();
                if json {
                    super::line(format!(
                        "{}",
                        serde_json::json!({"name": name, "partitions": parts.len(), "records": records})
                    ));
                } else {
                    table.row(vec![
                        name,
                        parts.len().to_string(),
                        super::thousands(records.max(0) as u64),
                    ]);
                }
            }
            if !json {
                table.print("no topics");
            }
        }
        TopicsCommand::Describe {
            topic,
            args: ListArgs { kafka, json },
        } => {
            let (t, k) = (topic.clone(), kafka.clone());
            let list = tokio::task::spawn_blocking(move || offsets(&k, Some(&t))).await??;
            let Some((_, parts)) = list.into_iter().find(|(n, _)| *n == topic) else {
                return Err(NotFound(format!("no topic '{topic}'")).into());
            };
            let admin = admin(&kafka)?;
            let opts = AdminOptions::new().request_timeout(Some(kafka.timeout()));
            let described = admin
                .describe_configs([&ResourceSpecifier::Topic(&topic)], &opts)
                .await
                .context("DescribeConfigs")?;
            let mut configs = serde_json::Map::new();
            for r in described {
                let r = r.map_err(|e| anyhow::anyhow!("DescribeConfigs: {e}"))?;
                for e in r.entries {
                    configs.insert(e.name, e.value.unwrap_or_default().into());
                }
            }
            if json {
                let partitions: Vec<_> = parts
                    .iter()
                    .map(|(p, lo, hi)| serde_json::json!({"partition": p, "log_start_offset": lo, "log_end_offset": hi}))
                    .collect();
                super::line(format!(
                    "{}",
                    serde_json::json!({"name": topic, "partitions": partitions, "configs": configs})
                ));
            } else {
                super::line(format!("topic {topic}"));
                for (p, lo, hi) in &parts {
                    super::line(format!("  partition {p}\tlog start {lo}\tlog end {hi}"));
                }
                super::line("configs:");
                for (k, v) in &configs {
                    super::line(format!("  {k}={}", v.as_str().unwrap_or_default()));
                }
            }
        }
        TopicsCommand::Create {
            topic,
            partitions,
            configs,
            kafka,
        } => {
            let mut pairs = Vec::new();
            for kv in &configs {
                let (k, v) = super::key_value("--config", kv)?;
                pairs.push((k.to_string(), v.to_string()));
            }
            let admin = admin(&kafka)?;
            let (name, timeout) = (topic.clone(), kafka.timeout());
            let outcomes = tokio::task::spawn_blocking(move || {
                let new = kafkabox_rdadmin::NewTopic {
                    name: &name,
                    partitions,
                    replication_factor: -1,
                    configs: &pairs,
                };
                kafkabox_rdadmin::create_topics(admin.inner(), &[new], timeout)
            })
            .await?
            .map_err(|e| unreachable_or(&kafka, e))?;
            for o in outcomes {
                if let Some((code, message)) = o.error {
                    bail!("cannot create {}: {}", o.topic, refusal(code, &message));
                }
            }
            eprintln!(
                "created topic {topic} ({})",
                super::count(partitions.max(0) as u64, "partition")
            );
        }
        TopicsCommand::Delete { topic, kafka } => {
            let admin = admin(&kafka)?;
            let (name, timeout) = (topic.clone(), kafka.timeout());
            let outcomes = tokio::task::spawn_blocking(move || {
                kafkabox_rdadmin::delete_topics(admin.inner(), &[&name], timeout)
            })
            .await?
            .map_err(|e| unreachable_or(&kafka, e))?;
            for o in outcomes {
                match o.error {
                    None => {}
                    Some((RDKafkaErrorCode::UnknownTopicOrPartition, _)) => {
                        return Err(NotFound(format!("no topic '{}'", o.topic)).into())
                    }
                    Some((code, message)) => {
                        let mut why = refusal(code, &message);
                        // librdkafka's DeleteTopics (v1) carries no message from the broker.
                        if code == RDKafkaErrorCode::PolicyViolation {
                            if let Some(source) = o.topic.strip_suffix(".dlq") {
                                why.push_str(&format!(
                                    "; on kafkabox, the dead letters of '{source}' cannot be deleted while a stage (the contract stage or a handler) runs over it"
                                ));
                            }
                        }
                        bail!("cannot delete {}: {why}", o.topic)
                    }
                }
            }
            eprintln!("deleted topic {topic}");
        }
    }
    Ok(())
}
