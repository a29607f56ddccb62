//! Retention and compaction: every `log.retention.check.interval.ms`, segments whose records
//! are all older than `log.retention.ms` (or the topic's `retention.ms`) are removed from the
//! front of each partition, and so are the oldest segments of a partition larger than the
//! topic's `retention.bytes`, for topics whose `cleanup.policy` has `delete`; topics whose
//! policy has `compact` get their sealed segments compacted (tombstones kept for
//! `delete.retention.ms`). Retention never removes records a handler stage reading the topic
//! has not committed past, unless the topic's `kafkabox.retention.waits.for.handlers` is
//! false; what it keeps for them is logged and in `/metrics`. The same sweep forgets idempotent
//! producers idle for `producer.id.expiration.ms`.

use std::sync::Arc;

use super::Services;

/// Delay of the first sweep after start (Kafka's `log.initial.task.delay.ms` default).
const INITIAL_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs until shutdown; a sweep in progress finishes first, so the store is free when this
/// returns.
pub async fn run(broker: Arc<Services>) {
    // The first sweep waits as Kafka's does (log.initial.task.delay.ms, 30 s), at most one
    // interval: the appliance registers its handler stages first, so retention knows what to
    // wait for after a restart.
    let period = broker.config.retention_check_interval;
    let first = period.min(INITIAL_DELAY);
    let shutdown = broker.shutdown.clone();
    super::run_every(first, period, shutdown, move || sweep(&broker), |_| {}).await;
}

fn sweep(broker: &Services) {
    let now = super::now_ms();
    for topic in broker.store.topics() {
        for part in &topic.partitions {
            match broker
                .store
                .expire_producers(part, now - broker.config.producer_id_expiration_ms)
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %topic.meta.name, partition = part.index, producers = n, "forgot idle producers")
                }
                Err(e) => {
                    tracing::error!(topic = %topic.meta.name, partition = part.index, error = %e, "producer expiry failed")
                }
            }
        }
        let settings = broker.topics.settings(&topic);
        if settings.compacted {
            for part in &topic.partitions {
                match broker
                    .store
                    .compact(part, now - settings.delete_retention_ms)
                {
                    Ok(c) if c.segments == 0 => {}
                    Ok(c) => {
                        tracing::info!(topic = %topic.meta.name, partition = part.index, segments = c.segments, records_removed = c.records_removed, bytes_before = c.bytes_before, bytes_after = c.bytes_after, "compacted")
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.meta.name, partition = part.index, error = %e, "compaction failed")
                    }
                }
            }
        }
        if !settings.deletes {
            // cleanup.policy=compact alone: nothing is deleted by age or size.
            continue;
        }
        // Records the topic's handler stages have not committed past stay, unless the topic
        // says otherwise.
        let stages = if settings.retention_waits_for_handlers {
            broker.groups.pipeline_stages(&topic.meta.name)
        } else {
            Vec::new()
        };
        let hold = |part: &kafkabox_storage::Partition| -> i64 {
            stages
                .iter()
                .map(|s| broker.store.consumer_offset(part, s).unwrap_or(0))
                .min()
                .unwrap_or(i64::MAX)
        };
        if settings.retention_bytes >= 0 {
            for part in &topic.partitions {
                let hold = hold(part);
                match broker
                    .store
                    .expire_over_size(part, settings.retention_bytes as u64, hold)
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %topic.meta.name, partition = part.index, records = n, "retention.bytes removed old segments")
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.meta.name, partition = part.index, error = %e, "size retention failed")
                    }
                }
            }
        }
        let retention_ms = settings.retention_ms;
        if retention_ms < 0 {
            continue;
        }
        for part in &topic.partitions {
            let hold = hold(part);
            match broker.store.expire_before(part, now - retention_ms, hold) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %topic.meta.name, partition = part.index, records = n, "retention removed old segments")
                }
                Err(e) => {
                    tracing::error!(topic = %topic.meta.name, partition = part.index, error = %e, "retention failed")
                }
            }
            let held = broker
                .store
                .retention_held_back(part, now - retention_ms, hold)
                .unwrap_or(0);
            broker
                .metrics
                .retention_held_back
                .get_or_create(&super::metrics::PartitionLabels {
                    topic: topic.meta.name.clone(),
                    partition: part.index.to_string(),
                })
                .set(held);
            if held > 0 {
                tracing::warn!(
                    topic = %topic.meta.name,
                    partition = part.index,
                    records = held,
                    handled_up_to = hold,
                    stages = ?stages,
                    "retention is held back: records older than retention.ms stay until the handler stages have committed past them (topic config {} = false deletes them anyway)",
                    super::topics::RETENTION_WAITS_FOR_HANDLERS
                );
            }
        }
    }
}
