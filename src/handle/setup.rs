//! Before consuming: the chain of each topic from the configuration (the contract, the
//! built-in handlers of [`crate::handlers::built_in`], the embedded ones) and the topics the
//! process needs on the cluster (source, dead-letter, repartition and changelog topics).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{Chain, HandleBuilder};
use crate::handlers::BuiltIn;
use crate::services::dead_letters::dead_letter_topic;

impl HandleBuilder {
    /// What runs over each topic: the customer-events contract (when on), the built-in
    /// handlers named by the configuration and the embedded handlers.
    pub(super) fn chains(&self) -> Result<BTreeMap<String, Chain>> {
        let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
        if self.config.customer_contract_on {
            let contract = Arc::new(self.config.customer_contract()?);
            chains.insert(
                crate::contract::CUSTOMER_EVENTS.to_string(),
                Chain {
                    contract: Some(contract),
                    profiles: false,
                    handlers: Vec::new(),
                },
            );
        }
        for (topic, names) in &self.config.handlers {
            for name in names {
                let chain = chains.entry(topic.clone()).or_insert_with(|| Chain {
                    contract: None,
                    profiles: false,
                    handlers: Vec::new(),
                });
                match crate::handlers::built_in(name, topic, &self.config)? {
                    BuiltIn::Profiles => chain.profiles = true,
                    BuiltIn::Handler(h) => chain.handlers.push(h),
                }
            }
        }
        for (topic, h) in &self.handlers {
            chains
                .entry(topic.clone())
                .or_insert_with(|| Chain {
                    contract: None,
                    profiles: false,
                    handlers: Vec::new(),
                })
                .handlers
                .push(h.clone());
        }
        Ok(chains)
    }

    /// Creates what is missing: the source topics (num.partitions), their `.dlq` topics and
    /// the compacted changelog. Returns each source topic's partition count.
    pub(super) async fn prepare_topics(
        &self,
        topics: &[String],
        chains: &BTreeMap<String, Chain>,
        repartitions: &HashMap<String, String>,
        changelog: &str,
    ) -> Result<HashMap<String, i32>> {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().context("Kafka admin client")?;
        let client = self.client();
        let bootstrap = self.bootstrap.clone();
        let existing = tokio::task::spawn_blocking(move || -> Result<HashMap<String, i32>> {
            let c: BaseConsumer = client.create().context("Kafka client")?;
            let md = c
                .fetch_metadata(None, Duration::from_secs(30))
                .with_context(|| format!("cannot reach {bootstrap}"))?;
            Ok(md
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                .collect())
        })
        .await??;
        let mut wanted: Vec<(String, i32, bool)> = Vec::new();
        let mut source: HashMap<String, i32> = HashMap::new();
        for t in topics {
            let n = existing
                .get(t)
                .copied()
                .unwrap_or(self.config.num_partitions as i32);
            source.insert(t.clone(), n);
            if !existing.contains_key(t) {
                wanted.push((t.clone(), n, false));
            }
            let dlq = dead_letter_topic(t);
            let needs_dlq = chains[t].contract.is_some() || !chains[t].handlers.is_empty();
            if needs_dlq && !existing.contains_key(&dlq) {
                wanted.push((dlq, n, false));
            }
        }
        // Re-keyed events and the changelog: as many partitions as the largest handled topic.
        let changelog_partitions = source.values().copied().max().unwrap_or(1);
        for r in repartitions.keys() {
            match existing.get(r) {
                Some(n) => {
                    source.insert(r.clone(), *n);
                }
                None => {
                    source.insert(r.clone(), changelog_partitions);
                    wanted.push((r.clone(), changelog_partitions, false));
                }
            }
        }
        let changelog_partitions = repartitions
            .keys()
            .filter_map(|r| source.get(r))
            .copied()
            .max()
            .unwrap_or(changelog_partitions);
        match existing.get(changelog) {
            Some(n) if *n < changelog_partitions => bail!(
                "{changelog} has {n} partitions, fewer than the {changelog_partitions} of the re-keyed events it keeps profiles of: add partitions to it"
            ),
            Some(_) => {}
            None => wanted.push((changelog.to_string(), changelog_partitions, true)),
        }
        if !wanted.is_empty() {
            let new: Vec<NewTopic<'_>> = wanted
                .iter()
                .map(|(name, n, compact)| {
                    let t = NewTopic::new(name, *n, TopicReplication::Fixed(-1));
                    if *compact {
                        t.set("cleanup.policy", "compact")
                    } else {
                        t
                    }
                })
                .collect();
            let results = admin
                .create_topics(&new, &AdminOptions::new())
                .await
                .context("CreateTopics")?;
            for r in results {
                match r {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %name, "created meanwhile")
                    }
                    Err((name, e)) => bail!("cannot create topic {name}: {e}"),
                }
            }
        }
        Ok(source)
    }
}
