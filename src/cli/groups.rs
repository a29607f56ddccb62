//! `kafkabox groups list|describe`: consumer groups (and kafkabox's handler stages,
//! `kafkabox.<stage>`) with members, committed offsets and lag, over Kafka's group APIs.

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{ListArgs, NotFound};

/// Most partitions whose committed offsets `describe` asks for.
const MAX_PARTITIONS: usize = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum GroupsCommand {
    /// Every group with its state and member count.
    List {
        #[command(flatten)]
        args: ListArgs,
    },
    /// A group's state, members, committed offsets and lag per partition.
    Describe {
        group: String,
        /// What the lag is measured against: read_uncommitted, the log end (high watermark);
        /// read_committed, the last stable offset, as far as a read_committed consumer can
        /// read. Default: read_committed for kafkabox's stages (`kafkabox.<stage>`), which
        /// read committed records only, read_uncommitted for other groups (as Kafka's tools).
        #[arg(long, value_enum)]
        isolation: Option<super::consume::Isolation>,
        #[command(flatten)]
        args: ListArgs,
    },
}

impl GroupsCommand {
    /// The cluster the command talks to.
    pub fn kafka(&self) -> &super::KafkaArgs {
        match self {
            GroupsCommand::List { args } | GroupsCommand::Describe { args, .. } => &args.kafka,
        }
    }
}

pub async fn run(cmd: GroupsCommand) -> Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(cmd)).await?
}

fn run_blocking(cmd: GroupsCommand) -> Result<()> {
    match cmd {
        GroupsCommand::List {
            args: ListArgs { kafka, json },
        } => {
            let consumer: BaseConsumer = kafka.client()?.create().context("Kafka client")?;
            let groups = consumer
                .fetch_group_list(None, kafka.timeout())
                .with_context(|| format!("cannot list groups at {}", kafka.bootstrap))?;
            let mut rows: Vec<(String, String, usize)> = groups
                .groups()
                .iter()
                .map(|g| {
                    (
                        g.name().to_string(),
                        g.state().to_string(),
                        g.members().len(),
                    )
                })
                .collect();
            rows.sort();
            let mut table = super::render::Table::new(&["GROUP", "STATE", "MEMBERS"]);
            for (name, state, members) in rows {
                if json {
                    super::line(format!(
                        "{}",
                        serde_json::json!({"group_id": name, "state": state, "members": members})
                    ));
                } else {
                    table.row(vec![name, state, members.to_string()]);
                }
            }
            if !json {
                table.print("no consumer groups");
            }
        }
        GroupsCommand::Describe {
            group,
            isolation,
            args: ListArgs { kafka, json },
        } => {
            use super::consume::Isolation;
            let isolation = isolation.unwrap_or(if group.starts_with("kafkabox.") {
                Isolation::ReadCommitted
            } else {
                Isolation::ReadUncommitted
            });
            // ListOffsets answers by the client's isolation level: the log end to one, the
            // last stable offset to the other.
            let consumer: BaseConsumer = kafka
                .client()?
                .set("group.id", &group)
                .set("isolation.level", "read_uncommitted")
                .create()
                .context("Kafka client")?;
            let consumer = kafkabox::clients::Closing::new(consumer, "group client");
            let stable: BaseConsumer = kafka
                .client()?
                .set("isolation.level", "read_committed")
                .create()
                .context("Kafka client")?;
            let stable = kafkabox::clients::Closing::new(stable, "group client");
            let list = consumer
                .fetch_group_list(Some(&group), kafka.timeout())
                .with_context(|| format!("cannot describe group {group}"))?;
            let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
                return Err(NotFound(format!("no group '{group}'")).into());
            };
            let state = info.state().to_string();
            if state == "Dead" {
                return Err(NotFound(format!("no group '{group}'")).into());
            }
            let members: Vec<serde_json::Value> = info
                .members()
                .iter()
                .map(|m| serde_json::json!({"member_id": m.id(), "client_id": m.client_id(), "host": m.client_host()}))
                .collect();
            let md = consumer
                .fetch_metadata(None, kafka.timeout())
                .context("Metadata")?;
            let mut tpl = TopicPartitionList::new();
            for t in md.topics() {
                for p in t.partitions() {
                    if tpl.count() < MAX_PARTITIONS {
                        tpl.add_partition(t.name(), p.id());
                    }
                }
            }
            let committed = consumer
                .committed_offsets(tpl, kafka.timeout())
                .context("OffsetFetch")?;
            let mut offsets = Vec::new();
            let mut total = 0i64;
            for e in committed.elements() {
                let Offset::Offset(o) = e.offset() else {
                    continue;
                };
                let (_, hi) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), kafka.timeout())
                    .context("ListOffsets")?;
                let (_, lso) = stable
                    .fetch_watermarks(e.topic(), e.partition(), kafka.timeout())
                    .context("ListOffsets")?;
                let upto = match isolation {
                    Isolation::ReadCommitted => lso,
                    Isolation::ReadUncommitted => hi,
                };
                let lag = (upto - o).max(0);
                total += lag;
                offsets.push(serde_json::json!({
                    "topic": e.topic(), "partition": e.partition(),
                    "committed_offset": o, "log_end_offset": hi,
                    "last_stable_offset": lso, "lag": lag,
                }));
            }
            drop(committed);
            let isolation_name = match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            };
            if json {
                super::line(format!(
                    "{}",
                    serde_json::json!({"group_id": group, "state": state, "members": members, "offsets": offsets, "isolation": isolation_name, "lag": total})
                ));
            } else {
                super::line(format!(
                    "group {group}\tstate {state}\tmembers {}\tlag {total} ({isolation_name})",
                    members.len()
                ));
                for m in &members {
                    super::line(format!(
                        "  member {}\t{}\t{}",
                        m["member_id"], m["client_id"], m["host"]
                    ));
                }
                for o in &offsets {
                    super::line(format!(
                        "  {}/{}\tcommitted {}\tlog end {}\tlast stable {}\tlag {}",
                        o["topic"].as_str().unwrap_or_default(),
                        o["partition"],
                        o["committed_offset"],
                        o["log_end_offset"],
                        o["last_stable_offset"],
                        o["lag"]
                    ));
                }
            }
        }
    }
    Ok(())
}
