//! `/api/customers` (list and search), `/api/customers/{customer_id}` (the profile) and
//! `/api/customers/{customer_id}/events` (the recent timeline, newest first).

use super::{blocking, ok, ApiError, ApiResult, Req, Sources};

/// Most customers one answer lists.
pub const MAX_LIST: i64 = 1000;

pub async fn list(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&["q", "limit", "after"])?;
    let q = r.query.get("q").unwrap_or("").to_string();
    let after = r.query.get("after").map(str::to_string);
    let limit = r.query.int("limit", 100, 1, MAX_LIST)? as usize;
    let store = s.store.clone();
    blocking(move || {
        let (found, next) = crate::profile::search(&store, &q, after.as_deref(), limit)?;
        ok(serde_json::json!({ "customers": found, "next_after": next }))
    })
    .await
}

fn load(s: &Sources, id: &str) -> Result<serde_json::Value, ApiError> {
    match s.store.state(&crate::profile::profile_key(id))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                format!("stored profile of '{id}': {e}"),
            )
        }),
        None => Err(ApiError::not_found(format!(
            "no customer '{id}' (no valid event of theirs was handled)"
        ))),
    }
}

pub async fn profile(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let (s, id) = (s.clone(), r.param("customer_id").to_string());
    blocking(move || ok(load(&s, &id)?)).await
}

pub async fn events(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&["limit"])?;
    let limit = r.query.int(
        "limit",
        crate::profile::RECENT_EVENTS as i64,
        1,
        crate::profile::RECENT_EVENTS as i64,
    )? as usize;
    let (s, id) = (s.clone(), r.param("customer_id").to_string());
    blocking(move || {
        let doc = load(&s, &id)?;
        let mut recent: Vec<serde_json::Value> = doc
            .get("recent")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        recent.reverse();
        recent.truncate(limit);
        ok(serde_json::json!({ "customer_id": id, "events": recent }))
    })
    .await
}
