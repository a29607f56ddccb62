//! `/api/dlq` (dead letters, newest first, filtered), `/api/dlq/replay` and `/api/dlq/skip`.

use hyper::StatusCode;

use super::{blocking, header_json, json, ok, shown, shown_key, ApiError, ApiResult, Req, Sources};
use crate::pipeline::dead_letters::{DeadLetter, Filter, Status, MAX_LIST};

fn dead_letter_json(d: &DeadLetter) -> serde_json::Value {
    let (key, key_enc) = shown_key(d.key.as_deref());
    let (value, value_enc) = shown(d.value.as_deref());
    serde_json::json!({
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "timestamp": d.timestamp,
        "reason": d.reason,
        "source": d.source,
        "stage": d.stage,
        "original": d.origin,
        "key": key,
        "key_encoding": key_enc,
        "value": value,
        "value_encoding": value_enc,
        "headers": d.headers.iter().map(|(k, v)| header_json(k, v.as_deref())).collect::<Vec<_>>(),
        "replayable": d.replayable,
        "status": d.resolution.as_ref().map_or("pending", |r| r.action.as_str()),
        "resolved_at": d.resolution.as_ref().map(|r| r.at_ms),
    })
}

const FILTERS: &[&str] = &[
    "topic", "source", "reason", "stage", "since", "until", "status", "limit",
];

fn filter_from(get: impl Fn(&str) -> Option<String>, limit: usize) -> Result<Filter, ApiError> {
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name}='{v}': expected milliseconds since the epoch"
                    ))
                })
            })
            .transpose()
    };
    Ok(Filter {
        topic: get("topic"),
        source: get("source"),
        reason: get("reason"),
        stage: get("stage"),
        since_ms: time("since")?,
        until_ms: time("until")?,
        status: match get("status") {
            None => Status::Any,
            Some(v) => v.parse::<Status>().map_err(ApiError::bad_request)?,
        },
        limit,
    })
}

pub async fn list(s: &Sources, r: Req) -> ApiResult {
    r.query.only(FILTERS)?;
    let limit = r.query.int("limit", 100, 1, MAX_LIST as i64)? as usize;
    let filter = filter_from(|k| r.query.get(k).map(str::to_string), limit)?;
    let dl = s.dead_letters.clone();
    blocking(move || {
        let found = dl.list(&filter)?;
        ok(serde_json::json!({
            "dead_letters": found.iter().map(dead_letter_json).collect::<Vec<_>>(),
        }))
    })
    .await
}

/// The body of replay and skip: one dead letter (`topic`, `partition`, `offset`), or every
/// pending one whose reason contains `reason` (with the other filters).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    reason: Option<String>,
    source: Option<String>,
    stage: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<usize>,
}

async fn select(s: &Sources, r: &Req) -> Result<Vec<DeadLetter>, ApiError> {
    r.query.only(&[])?;
    let sel: Selection = r.json()?;
    let dl = s.dead_letters.clone();
    match (&sel.topic, sel.partition, sel.offset) {
        (Some(topic), Some(p), Some(o)) => {
            if sel.reason.is_some() || sel.source.is_some() || sel.stage.is_some() {
                return Err(ApiError::bad_request(
                    "give either topic, partition and offset, or reason (with optional filters)",
                ));
            }
            let topic = topic.clone();
            blocking(move || Ok(vec![dl.get(&topic, p, o)?])).await
        }
        (_, None, None) => {
            let Some(reason) = sel.reason.clone().filter(|r| !r.is_empty()) else {
                return Err(ApiError::bad_request(
                    "give topic, partition and offset of one dead letter, or the reason of all to act on",
                ));
            };
            let get = move |k: &str| -> Option<String> {
                match k {
                    "topic" => sel.topic.clone(),
                    "source" => sel.source.clone(),
                    "reason" => Some(reason.clone()),
                    "stage" => sel.stage.clone(),
                    "since" => sel.since.map(|v| v.to_string()),
                    "until" => sel.until.map(|v| v.to_string()),
                    "status" => Some("pending".into()),
                    _ => None,
                }
            };
            let filter = filter_from(get, sel.limit.unwrap_or(MAX_LIST).min(MAX_LIST))?;
            let mut found = blocking(move || Ok(dl.list(&filter)?)).await?;
            // Replay in the order they were dead-lettered.
            found.reverse();
            Ok(found)
        }
        _ => Err(ApiError::bad_request(
            "one dead letter needs all of topic, partition and offset",
        )),
    }
}

fn answer(outcomes: Vec<crate::pipeline::dead_letters::Outcome>) -> ApiResult {
    let failed = outcomes.iter().any(|o| o.result == "failed");
    let refused = outcomes.iter().any(|o| o.result == "refused");
    let done = outcomes
        .iter()
        .filter(|o| o.result == "replayed" || o.result == "skipped")
        .count();
    let status = if outcomes.len() == 1 && refused {
        StatusCode::CONFLICT
    } else if failed && done == 0 {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &serde_json::json!({ "done": done, "results": outcomes }),
    ))
}

pub async fn replay(s: &Sources, r: Req) -> ApiResult {
    let targets = select(s, &r).await?;
    answer(s.dead_letters.replay(targets).await)
}

pub async fn skip(s: &Sources, r: Req) -> ApiResult {
    let targets = select(s, &r).await?;
    answer(s.dead_letters.skip(targets).await)
}
