//! `/api/topics/{topic}/records`: GET browses a partition from an offset; POST produces JSON
//! records in the Confluent REST Proxy v2 JSON body (`{"records": [{"key": ..., "value": ...,
//! "partition": n}]}`), answered with offsets, through the same produce path as Kafka's
//! Produce (checks, reject policy, handlers, metrics), durable before the answer as acks=all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use hyper::{Method, StatusCode};
use kafkabox_protocol::batch::{self, HeaderRef, OutRecord, ProducerFields};

use super::{blocking, header_json, json, ok, shown, shown_key, ApiError, ApiResult, Req, Sources};
use crate::services::produce::ProduceError;

/// Most records one browse returns, and one produce body may carry.
pub const MAX_RECORDS: i64 = 1000;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), so a keyed record lands
/// on the partition a Java client's default partitioner would choose.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among `n`.
pub fn partition_for(key: &[u8], n: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % n.max(1)) as i32
}

pub async fn records(s: &Sources, r: Req) -> ApiResult {
    if r.method == Method::POST {
        produce(s, r).await
    } else {
        browse(s, r).await
    }
}

async fn browse(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&["partition", "offset", "limit"])?;
    let topic = r.param("topic").to_string();
    let partition = r.query.int("partition", 0, 0, i64::from(i32::MAX))? as i32;
    let offset = r.query.opt_int("offset", 0, i64::MAX)?;
    let limit = r.query.int("limit", 100, 1, MAX_RECORDS)? as usize;
    let s = s.clone();
    blocking(move || {
        let t = s
            .services
            .topics
            .get(&topic)
            .ok_or_else(|| ApiError::not_found(format!("no topic '{topic}'")))?;
        let part = t.partition(partition).ok_or_else(|| {
            ApiError::not_found(format!("topic '{topic}' has no partition {partition}"))
        })?;
        let o = s.store.offsets(part);
        // Without an offset: the last `limit` records.
        let from = offset.unwrap_or((o.log_end - limit as i64).max(o.log_start));
        let (recs, next) = s.services.read_records(&topic, partition, from, limit)?;
        let records: Vec<serde_json::Value> = recs
            .iter()
            .map(|rec| {
                let (key, key_enc) = shown_key(rec.key.as_deref());
                let (value, value_enc) = shown(rec.value.as_deref());
                serde_json::json!({
                    "partition": partition,
                    "offset": rec.offset,
                    "timestamp": rec.timestamp,
                    "key": key,
                    "key_encoding": key_enc,
                    "value": value,
                    "value_encoding": value_enc,
                    "headers": rec.headers.iter().map(|(k, v)| header_json(k, v.as_deref())).collect::<Vec<_>>(),
                })
            })
            .collect();
        ok(serde_json::json!({
            "topic": topic,
            "partition": partition,
            "log_start_offset": o.log_start,
            "log_end_offset": o.log_end,
            "next_offset": next.max(from),
            "records": records,
        }))
    })
    .await
}

#[derive(serde::Deserialize)]
struct ProduceBody {
    records: Vec<ProduceRecord>,
}

#[derive(serde::Deserialize)]
struct ProduceRecord {
    #[serde(default)]
    key: Option<serde_json::Value>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    partition: Option<i32>,
    /// Not in REST Proxy v2: `{"name": "value"}` record headers.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// A key as bytes: a JSON string is stored as its text (what Kafka clients send as a string
/// key, so it partitions alike), anything else as its JSON.
fn key_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// Round-robin position for records without key or partition.
static NEXT: AtomicU32 = AtomicU32::new(0);

async fn produce(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    // The content type was checked before routing (JSON, as for every body); the answer
    // names the REST Proxy's type when the request did.
    let ct = super::media_type(&r.content_type);
    let body: ProduceBody = r.json()?;
    if body.records.is_empty() {
        return Err(ApiError::bad_request("\"records\" is empty"));
    }
    if body.records.len() as i64 > MAX_RECORDS {
        return Err(ApiError::bad_request(format!(
            "{} records in one request; at most {MAX_RECORDS}",
            body.records.len()
        )));
    }
    let topic = r.param("topic").to_string();
    let services = s.services.clone();
    let t = services
        .topics
        .get(&topic)
        .ok_or_else(|| ApiError::not_found(format!("no topic '{topic}' (create it first)")))?;
    let n = t.partitions.len();
    // (partition, key, value, headers) per record, in request order.
    let mut encoded = Vec::with_capacity(body.records.len());
    for (i, rec) in body.records.iter().enumerate() {
        let key = rec.key.as_ref().filter(|k| !k.is_null()).map(key_bytes);
        let value = rec
            .value
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| v.to_string().into_bytes());
        let partition = match (rec.partition, &key) {
            (Some(p), _) if p < 0 || p as usize >= n => {
                return Err(ApiError::not_found(format!(
                    "record {i}: topic '{topic}' has no partition {p}"
                )))
            }
            (Some(p), _) => p,
            (None, Some(k)) => partition_for(k, n),
            (None, None) => (NEXT.fetch_add(1, Ordering::Relaxed) as usize % n) as i32,
        };
        let headers: Vec<(Vec<u8>, Vec<u8>)> = rec
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        encoded.push((partition, key, value, headers));
    }
    let content_type = if ct == "application/vnd.kafka.json.v2+json" {
        "application/vnd.kafka.v2+json"
    } else {
        "application/json"
    };
    let (offsets, seq, status) = blocking(move || {
        // One batch per partition, records in request order.
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, (p, ..)) in encoded.iter().enumerate() {
            by_partition.entry(*p).or_default().push(i);
        }
        let mut offsets = vec![serde_json::Value::Null; encoded.len()];
        let mut max_seq = None;
        let mut status = StatusCode::OK;
        for (p, idx) in by_partition {
            let headers: Vec<Vec<HeaderRef<'_>>> = idx
                .iter()
                .map(|i| {
                    encoded[*i]
                        .3
                        .iter()
                        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                        .collect()
                })
                .collect();
            let out: Vec<OutRecord<'_>> = idx
                .iter()
                .zip(&headers)
                .map(|(i, h)| OutRecord {
                    key: encoded[*i].1.as_deref(),
                    value: encoded[*i].2.as_deref(),
                    headers: h,
                })
                .collect();
            let bytes =
                batch::encode_records(&out, crate::services::now_ms(), ProducerFields::NONE);
            match services.produce(crate::services::acl::ANONYMOUS, &topic, p, &bytes) {
                Ok(done) => {
                    max_seq = Some(max_seq.map_or(done.write_seq, |m: u64| m.max(done.write_seq)));
                    for (j, i) in idx.iter().enumerate() {
                        offsets[*i] = serde_json::json!({
                            "partition": p,
                            "offset": done.base_offset + j as i64,
                            "error_code": null,
                            "error": null,
                        });
                    }
                }
                Err(e) => {
                    let (code, message) = crate::api::errors::produce(&e);
                    status = match e {
                        ProduceError::Append { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                        ProduceError::UnknownTopicOrPartition(_) => StatusCode::NOT_FOUND,
                        ProduceError::NotWritable(_) => StatusCode::FORBIDDEN,
                        _ if status == StatusCode::OK => StatusCode::UNPROCESSABLE_ENTITY,
                        _ => status,
                    };
                    for i in &idx {
                        offsets[*i] = serde_json::json!({
                            "partition": p,
                            "offset": null,
                            "error_code": code.code(),
                            "error": message,
                        });
                    }
                }
            }
        }
        Ok((offsets, max_seq, status))
    })
    .await?;
    if let Some(seq) = seq {
        if s.services.config.flush_on_acks_all {
            s.store.wait_durable(seq).await.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("flush to disk failed; the records may not be durable: {e}"),
                )
            })?;
        }
    }
    let mut resp = json(
        status,
        &serde_json::json!({
            "offsets": offsets,
            "key_schema_id": null,
            "value_schema_id": null,
        }),
    );
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2.
        for (input, want) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(input.as_bytes()), want, "{input}");
        }
    }
}
