//! `/api/faults`: inject, list and clear faults (tests; `services::faults`).

use hyper::{Method, StatusCode};

use super::{json, ok, ApiError, ApiResult, Req, Sources};
use crate::services::faults::{FaultError, FaultRequest};

fn refused(e: FaultError) -> ApiError {
    let status = match e {
        FaultError::NotAllowed => StatusCode::FORBIDDEN,
        FaultError::TooMany => StatusCode::CONFLICT,
        FaultError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

/// GET: the faults in effect; POST: inject one; DELETE: clear them all.
pub fn faults(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let faults = &s.services.faults;
    match r.method {
        Method::POST => {
            let request: FaultRequest = r.json()?;
            let spec = crate::api::faults::resolve(&request).map_err(ApiError::bad_request)?;
            let fault = faults.add(spec, request).map_err(refused)?;
            Ok(json(
                StatusCode::CREATED,
                &serde_json::to_value(fault).unwrap_or_default(),
            ))
        }
        Method::DELETE => ok(serde_json::json!({ "cleared": faults.clear() })),
        _ => ok(serde_json::json!({
            "allowed": faults.allowed(),
            "faults": faults.list(),
        })),
    }
}

/// DELETE: clear one fault.
pub fn fault(s: &Sources, r: Req) -> ApiResult {
    r.query.only(&[])?;
    let id = r.param("id");
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("fault id '{id}' is not a number")))?;
    if s.services.faults.remove(n) {
        ok(serde_json::json!({ "cleared": 1 }))
    } else {
        Err(ApiError::not_found(format!(
            "no fault {n} (it may have run out its count)"
        )))
    }
}
