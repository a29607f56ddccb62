//! `/api/topics` (list, create) and `/api/topics/{topic}` (describe, delete).

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use kafkabox_storage::Topic;

use super::{blocking, json, ok, ApiError, ApiResult, Req, Sources, MAX_ITEMS};

fn topic_json(s: &Sources, t: &Topic, detail: bool) -> serde_json::Value {
    let mut size_total = 0u64;
    let partitions: Vec<serde_json::Value> = t
        .partitions
        .iter()
        .take(MAX_ITEMS)
        .map(|p| {
            let o = s.store.offsets(p);
            let mut v = serde_json::json!({
                "partition": p.index,
                "log_start_offset": o.log_start,
                "log_end_offset": o.log_end,
            });
            if let Some((from, reason)) = s.store.damage_seen(p) {
                v["damaged"] = serde_json::json!({"from_offset": from, "reason": reason});
            }
            if detail {
                let size = s.store.partition_size(p).unwrap_or(0);
                size_total += size;
                v["size_bytes"] = serde_json::json!(size);
            }
            v
        })
        .collect();
    let records: i64 = partitions
        .iter()
        .map(|p| {
            p["log_end_offset"].as_i64().unwrap_or(0) - p["log_start_offset"].as_i64().unwrap_or(0)
        })
        .sum();
    let mut v = serde_json::json!({
        "name": t.meta.name,
        "topic_id": uuid::Uuid::from_bytes(t.meta.id).to_string(),
        "partition_count": t.partitions.len(),
        "records": records,
        "partitions": partitions,
    });
    if detail {
        let configs: serde_json::Map<String, serde_json::Value> = s
            .services
            .topics
            .describe_configs(t, None)
            .into_iter()
            .map(|c| {
                (
                    c.name,
                    c.value
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        v["size_bytes"] = serde_json::json!(size_total);
        v["configs"] = serde_json::Value::Object(configs);
    }
    v
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    #[serde(default)]
    partitions: Option<u32>,
    #[serde(default)]
    configs: BTreeMap<String, serde_json::Value>,
}

/// GET: every topic with its partitions' offsets; POST: create one.
pub async fn topics(s: &Sources, r: Req) -> ApiResult {
    let s = s.clone();
    if r.method == Method::POST {
        r.query.only(&[])?;
        let t: NewTopic = r.json()?;
        let new = crate::services::topics::NewTopic {
            name: t.name.clone(),
            partitions: match t.partitions {
                None => -1,
                Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
            },
            replication_factor: -1,
            assignments: Vec::new(),
            configs: t
                .configs
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s),
                        other => Some(other.to_string()),
                    };
                    (k, v)
                })
                .collect(),
        };
        return blocking(move || {
            let (partitions, configs) = s.services.topics.check_new(&new)?;
            let created = s.services.topics.create(&t.name, partitions, configs)?;
            Ok(json(StatusCode::CREATED, &topic_json(&s, &created, true)))
        })
        .await;
    }
    r.query.only(&[])?;
    blocking(move || {
        let list: Vec<serde_json::Value> = s
            .services
            .topics
            .list()
            .iter()
            .take(MAX_ITEMS)
            .map(|t| topic_json(&s, t, false))
            .collect();
        ok(serde_json::json!(list))
    })
    .await
}

/// GET: partitions with offsets and size on disk, configs; DELETE: delete the topic.
pub async fn topic(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let s = s.clone();
    let name = r.param("topic").to_string();
    if r.method == Method::DELETE {
        return blocking(move || {
            s.services.topics.delete(&name)?;
            ok(serde_json::json!({ "deleted": name }))
        })
        .await;
    }
    blocking(move || match s.services.topics.get(&name) {
        Some(t) => ok(topic_json(&s, &t, true)),
        None => Err(ApiError::not_found(format!("no topic '{name}'"))),
    })
    .await
}
