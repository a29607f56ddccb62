//! Retention and compaction: every `log.retention.check.interval.ms`, segments whose records
//! are all older than `log.retention.ms` (or the topic's `retention.ms`) are removed from the
//! front of each partition, and so are the oldest segments of a partition larger than the
//! topic's `retention.bytes`, for topics whose `cleanup.policy` has `delete`; topics whose
//! policy has `compact` get their sealed segments compacted (tombstones kept for
//! `delete.retention.ms`). The same sweep forgets idempotent producers idle for
//! `producer.id.expiration.ms`.

use std::sync::Arc;

use super::Services;

/// Runs until shutdown; a sweep in progress finishes first, so the store is free when this
/// returns.
pub async fn run(broker: Arc<Services>) {
    let mut tick = tokio::time::interval(broker.config.retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = broker.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&b)).await;
    }
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
        if settings.retention_bytes >= 0 {
            for part in &topic.partitions {
                match broker
                    .store
                    .expire_over_size(part, settings.retention_bytes as u64)
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
            match broker.store.expire_before(part, now - retention_ms) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %topic.meta.name, partition = part.index, records = n, "retention removed old segments")
                }
                Err(e) => {
                    tracing::error!(topic = %topic.meta.name, partition = part.index, error = %e, "retention failed")
                }
            }
        }
    }
}
