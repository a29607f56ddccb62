//! `/ready`, `/api/sources` (ingest per source, with events per minute), `/api/groups`
//! (consumer groups and handler stages with their lag), `/api/forward` (the edge forwarder).

use hyper::StatusCode;

use super::{blocking, json, ok, ApiResult, Req, Sources, MAX_ITEMS};

/// Ready: the store is open and the Kafka listener bound (both before this listener starts),
/// the stages were started, none has stopped or retried without progress for longer than
/// `stage.stall.timeout.ms`, and the broker is not shutting down.
pub fn ready(s: &Sources, r: &Req) -> ApiResult {
    r.query.only(&[])?;
    if *s.services.shutdown.borrow() {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": "shutting down"}),
        ));
    }
    let stages: std::collections::BTreeSet<String> = s
        .lag
        .snapshot()
        .into_iter()
        .map(|(stage, ..)| stage)
        .collect();
    let warnings = warnings(s);
    if let Some(reason) = s.health.unready(s.services.config.stage_stall_timeout) {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": reason, "stages": stages, "warnings": warnings}),
        ));
    }
    ok(serde_json::json!({"ready": true, "stages": stages, "warnings": warnings}))
}

/// What a person should know although the box is ready: writes refused for disk space, stages
/// retrying (not yet for `stage.stall.timeout.ms`).
fn warnings(s: &Sources) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((free, min)) = s.store.short_of_space() {
        out.push(format!(
            "the data dir's disk has {free} bytes free, too few above storage.free.bytes.min ({min}) for the writes that come: writes are refused with KAFKA_STORAGE_ERROR until space is freed; reads go on"
        ));
    }
    // Those retrying for longer make the box unready, and say so in the reason.
    let stalled_since = crate::services::now_ms()
        - i64::try_from(s.services.config.stage_stall_timeout.as_millis()).unwrap_or(i64::MAX);
    for h in s.health.snapshot() {
        if out.len() >= 10 {
            break;
        }
        if let crate::pipeline::StageState::Retrying {
            since_ms,
            error,
            attempts,
        } = &h.state
        {
            if *since_ms <= stalled_since {
                continue;
            }
            out.push(format!(
                "stage {} retrying on {}/{} since {} ({attempts} attempts): {error}",
                h.stage,
                h.topic,
                h.partition,
                crate::services::time_text(*since_ms)
            ));
        }
    }
    out
}

/// Per source: received, valid, rejected, last seen, last rejection and events received per
/// minute over the last hour (all stored, exact across restarts).
pub fn sources(s: &Sources, r: &Req) -> ApiResult {
    r.query.only(&[])?;
    let stored = s.stats.snapshot()?;
    let oldest =
        crate::services::now_ms() / 60_000 * 60_000 - crate::pipeline::MINUTES_KEPT as i64 * 60_000;
    let out: serde_json::Map<String, serde_json::Value> = stored
        .into_iter()
        .map(|(source, mut status)| {
            status.per_minute.retain(|m| m.minute_ms > oldest);
            (source, serde_json::to_value(&status).unwrap_or_default())
        })
        .collect();
    ok(serde_json::Value::Object(out))
}

/// Every consumer group (Kafka's and the handler stages, `kafkabox.<stage>`) with its
/// committed offsets and lag per partition.
/// `GET /api/transactions`: every transactional id with its state, producer, partitions and
/// the age of its open transaction.
pub async fn transactions(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let s = s.clone();
    blocking(move || {
        let now = crate::services::now_ms();
        let list: Vec<serde_json::Value> = s
            .services
            .transactions
            .list()
            .into_iter()
            .take(MAX_ITEMS)
            .map(|v| {
                let m = &v.meta;
                let open = matches!(
                    m.state,
                    crate::services::transactions::TxnState::Ongoing
                        | crate::services::transactions::TxnState::PrepareCommit
                        | crate::services::transactions::TxnState::PrepareAbort
                );
                serde_json::json!({
                    "transactional_id": v.transactional_id,
                    "state": m.state.name(),
                    "producer_id": m.producer_id,
                    "producer_epoch": m.epoch,
                    "timeout_ms": m.timeout_ms,
                    "partitions": m.partitions.iter().map(|(t, p)| serde_json::json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                    "groups": m.offsets.keys().collect::<Vec<_>>(),
                    "started_ms": if m.start_ms >= 0 { serde_json::json!(m.start_ms) } else { serde_json::Value::Null },
                    "age_ms": if open && m.start_ms >= 0 { serde_json::json!(now - m.start_ms) } else { serde_json::Value::Null },
                })
            })
            .collect();
        Ok(serde_json::json!({ "transactions": list }))
    })
    .await
    .and_then(ok)
}

pub async fn groups(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let s = s.clone();
    blocking(move || Ok(groups_json(&s))).await.and_then(ok)
}

fn groups_json(s: &Sources) -> serde_json::Value {
    use crate::services::groups::isolation::Isolation::ReadCommitted;
    let groups = s.services.groups.list();
    // Per stage: its workers that are not simply running (retrying, stopped).
    let mut troubles: std::collections::HashMap<String, Vec<serde_json::Value>> =
        std::collections::HashMap::new();
    for h in s.health.snapshot() {
        if h.state != crate::pipeline::StageState::Running {
            let list = troubles.entry(h.stage.clone()).or_default();
            if list.len() < MAX_ITEMS {
                list.push(serde_json::to_value(&h).unwrap_or_default());
            }
        }
    }
    let out: Vec<serde_json::Value> = groups
        .iter()
        .take(MAX_ITEMS)
        .map(|g| {
            let committed = s
                .services
                .groups
                .fetch_offsets(&g.group_id, None)
                .unwrap_or_default();
            let isolation = s.services.groups.isolation(&g.group_id);
            let committed_reads = isolation == Some(ReadCommitted);
            let mut total_lag = 0i64;
            let partitions: Vec<serde_json::Value> = committed
                .iter()
                .take(MAX_ITEMS)
                .map(|(topic, p, c)| {
                    let t = s.store.topic(topic);
                    let part = t.as_ref().and_then(|t| t.partition(*p));
                    let end = part.map(|part| s.store.offsets(part).log_end);
                    let stable = part.and_then(|part| {
                        let end = s.store.offsets(part).log_end;
                        s.store.last_stable_offset(part).ok().map(|l| l.min(end))
                    });
                    let offset = c.as_ref().map(|c| c.offset).unwrap_or(-1);
                    // A read_committed group cannot read past the last stable offset.
                    let upto = if committed_reads { stable.or(end) } else { end };
                    let lag = upto.map(|e| (e - offset.max(0)).max(0));
                    total_lag += lag.unwrap_or(0);
                    serde_json::json!({
                        "topic": topic,
                        "partition": p,
                        "committed_offset": offset,
                        "log_end_offset": end,
                        "last_stable_offset": stable,
                        "lag": lag,
                    })
                })
                .collect();
            serde_json::json!({
                "group_id": g.group_id,
                "state": g.state,
                "type": g.group_type,
                "protocol_type": g.protocol_type,
                "stage": g.group_id.strip_prefix("kafkabox.").is_some(),
                // The stage's workers that retry or stopped (empty: every one is running).
                "problems": g
                    .group_id
                    .strip_prefix("kafkabox.")
                    .and_then(|stage| troubles.get(stage))
                    .cloned()
                    .unwrap_or_default(),
                // Lag is against the last stable offset for read_committed groups, against
                // the log end otherwise (and while no member has fetched: null).
                "isolation": isolation.map(|i| i.name()),
                "lag": total_lag,
                "offsets": partitions,
            })
        })
        .collect();
    serde_json::json!(out)
}

/// The edge forwarder (`upstream.bootstrap`): where to, what it delivered, its lag per
/// partition and its last failure; `upstream` null when the box forwards nothing.
pub fn forward(s: &Sources, r: &Req) -> ApiResult {
    r.query.only(&[])?;
    let m = &s.services.metrics;
    let partitions: Vec<(String, i32, i64)> = s
        .lag
        .snapshot()
        .into_iter()
        .filter(|(stage, ..)| stage == "forward")
        .map(|(_, topic, partition, lag)| (topic, partition, lag))
        .collect();
    let mut topics: Vec<&str> = partitions.iter().map(|(t, ..)| t.as_str()).collect();
    topics.dedup();
    let count = |f: &prometheus_client::metrics::family::Family<
        crate::services::metrics::TopicLabels,
        prometheus_client::metrics::counter::Counter,
    >|
     -> u64 {
        topics
            .iter()
            .map(|t| {
                f.get_or_create(&crate::services::metrics::TopicLabels {
                    topic: t.to_string(),
                })
                .get()
            })
            .sum()
    };
    let last_error = s
        .services
        .forward_error
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .map(|(at, message)| serde_json::json!({"at_ms": at, "message": message}));
    let outlook = s
        .services
        .forward_outlook
        .lock()
        .ok()
        .and_then(|o| o.clone())
        .map(|o| {
            serde_json::json!({
                "backlog_records": o.backlog_records,
                "free_bytes": o.free_bytes,
                "warn_below_bytes": o.warn_below_bytes,
                "refuse_below_bytes": o.refuse_below_bytes,
                "full_in_seconds": o.full_in_seconds,
                "warning": o.warning,
            })
        });
    ok(serde_json::json!({
        "upstream": s.services.config.upstream,
        "records": count(&m.forwarded_records),
        "bytes": count(&m.forwarded_bytes),
        "errors": count(&m.forward_errors),
        "lag": partitions.iter().map(|(.., l)| *l).sum::<i64>(),
        "last_error": last_error,
        "disk": outlook,
        "partitions": partitions
            .iter()
            .take(MAX_ITEMS)
            .map(|(t, p, l)| serde_json::json!({"topic": t, "partition": p, "lag": l}))
            .collect::<Vec<_>>(),
    }))
}
