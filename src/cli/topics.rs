//! `kafkabox topics list|describe|create|delete`, through Kafka's Metadata and admin APIs.

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaArgs, ListArgs, NotFound};

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

fn admin(kafka: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>> {
    kafka.client()?.create().context("Kafka admin client")
}

pub async fn run(cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::List {
            args: ListArgs { kafka, json },
        } => {
            let list = tokio::task::spawn_blocking(move || offsets(&kafka, None)).await??;
            for (name, parts) in list {
                let records: i64 = parts.iter().map(|(_, lo, hi)| hi - lo).sum();
                if json {
                    super::line(format!(
                        "{}",
                        serde_json::json!({"name": name, "partitions": parts.len(), "records": records})
                    ));
                } else {
                    super::line(format!(
                        "{name}\tpartitions={}\trecords={records}",
                        parts.len()
                    ));
                }
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
            let mut new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(-1));
            for kv in &configs {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--config {kv}: expected KEY=VALUE"))?;
                new = new.set(k, v);
            }
            let admin = admin(&kafka)?;
            let opts = AdminOptions::new().operation_timeout(Some(kafka.timeout()));
            for r in admin
                .create_topics([&new], &opts)
                .await
                .context("CreateTopics")?
            {
                if let Err((name, code)) = r {
                    bail!("cannot create {name}: {code}");
                }
            }
            eprintln!("created topic {topic} ({partitions} partitions)");
        }
        TopicsCommand::Delete { topic, kafka } => {
            let admin = admin(&kafka)?;
            let opts = AdminOptions::new().operation_timeout(Some(kafka.timeout()));
            for r in admin
                .delete_topics(&[&topic], &opts)
                .await
                .context("DeleteTopics")?
            {
                match r {
                    Ok(_) => {}
                    Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                        return Err(NotFound(format!("no topic '{name}'")).into())
                    }
                    Err((name, code)) => bail!("cannot delete {name}: {code}"),
                }
            }
            eprintln!("deleted topic {topic}");
        }
    }
    Ok(())
}
