//! Fault injection's half in the API layer: API and error names to keys and codes (checking
//! that the API takes injected errors), and the hook [`super::dispatch`] runs for every
//! request while a fault is set (`services::faults` keeps them).

use std::time::Duration;

use crate::services::faults::{Action, FaultRequest, FaultSpec};

use super::{error_name, supported, APIS};

/// The longest injected latency.
const MAX_LATENCY_MS: u64 = 600_000;
/// The longest time new connections are refused.
const MAX_MS: u64 = 86_400_000;

/// The API key and name of `name`: Kafka's name (`Produce`, any case) or its key (`0`).
pub fn api_by_name(name: &str) -> Option<(i16, &'static str)> {
    let n = name.trim();
    let entry = match n.parse::<i16>() {
        Ok(key) => supported(key),
        Err(_) => APIS.iter().find(|a| a.name.eq_ignore_ascii_case(n)),
    }?;
    Some((entry.key, entry.name))
}

/// The code of error `name`: Kafka's name (`NOT_LEADER_OR_FOLLOWER`, any case) or its code.
pub fn error_by_name(name: &str) -> Option<(i16, String)> {
    let n = name.trim();
    if let Ok(code) = n.parse::<i16>() {
        return kafka_protocol::ResponseError::try_from_code(code)
            .map(|_| (code, error_name(code).into_owned()));
    }
    let wanted = n.to_ascii_uppercase();
    (-1..=200)
        .filter(|c| *c != 0)
        .find(|c| {
            kafka_protocol::ResponseError::try_from_code(*c).is_some()
                && error_name(*c) == wanted.as_str()
        })
        .map(|c| (c, wanted))
}

/// The names of the APIs that can be answered with an injected error.
pub fn erring_apis() -> Vec<&'static str> {
    APIS.iter()
        .filter(|a| a.takes_errors)
        .map(|a| a.name)
        .collect()
}

/// Checks and resolves a fault request.
pub fn resolve(r: &FaultRequest) -> Result<FaultSpec, String> {
    let actions = [
        r.error.is_some(),
        r.latency_ms.is_some(),
        r.disconnect,
        r.stall,
        r.refuse_connections_ms.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if actions != 1 {
        return Err("a fault needs exactly one of error, latency_ms, disconnect, stall, refuse_connections_ms".into());
    }
    let probability = r.probability.unwrap_or(1.0);
    if let Some(ms) = r.refuse_connections_ms {
        if ms > MAX_MS {
            return Err(format!(
                "refuse_connections_ms is at most {MAX_MS} (24 hours)"
            ));
        }
        if r.api.is_some() {
            return Err("refuse_connections_ms applies to connections, not to an api".into());
        }
        return Ok(FaultSpec {
            api: None,
            action: Action::RefuseConnections(Duration::from_millis(ms)),
            error_name: None,
            count: None,
            probability,
        });
    }
    let api_name = r
        .api
        .as_deref()
        .ok_or("the fault needs an api: Kafka's name of the API (e.g. Produce) or its key")?;
    let api = api_by_name(api_name).ok_or_else(|| {
        format!(
            "unknown api '{api_name}'; kafkabox answers: {}",
            APIS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        )
    })?;
    let mut error_name = None;
    let action = if let Some(e) = &r.error {
        let (code, name) = error_by_name(e).ok_or_else(|| {
            format!("unknown error '{e}'; use Kafka's name (e.g. NOT_LEADER_OR_FOLLOWER) or code")
        })?;
        if !supported(api.0).is_some_and(|a| a.takes_errors) {
            return Err(format!(
                "{} does not take injected errors (latency_ms, disconnect and stall apply to every API); errors: {}",
                api.1,
                erring_apis().join(", ")
            ));
        }
        error_name = Some(name);
        Action::Error(code)
    } else if let Some(ms) = r.latency_ms {
        if ms > MAX_LATENCY_MS {
            return Err(format!(
                "latency_ms is at most {MAX_LATENCY_MS} (10 minutes)"
            ));
        }
        Action::Latency(Duration::from_millis(ms))
    } else if r.disconnect {
        Action::Disconnect
    } else {
        Action::Stall
    };
    Ok(FaultSpec {
        api: Some(api),
        action,
        error_name,
        count: r.count,
        probability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(api_by_name("produce"), Some((0, "Produce")));
        assert_eq!(api_by_name("1"), Some((1, "Fetch")));
        assert_eq!(api_by_name("Nope"), None);
        assert_eq!(
            error_by_name("not_leader_or_follower"),
            Some((6, "NOT_LEADER_OR_FOLLOWER".into()))
        );
        assert_eq!(error_by_name("7"), Some((7, "REQUEST_TIMED_OUT".into())));
        assert_eq!(error_by_name("NO_SUCH_ERROR"), None);
        let e = resolve(&FaultRequest::error(
            "SaslHandshake",
            "UNKNOWN_SERVER_ERROR",
        ))
        .unwrap_err();
        assert!(e.contains("does not take injected errors"), "{e}");
        let e = resolve(&FaultRequest::default()).unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = resolve(&FaultRequest::refuse_connections(u64::MAX)).unwrap_err();
        assert!(e.contains("at most 86400000"), "{e}");
        let e = resolve(&FaultRequest::latency("Fetch", u64::MAX)).unwrap_err();
        assert!(e.contains("at most 600000"), "{e}");
        let s = resolve(&FaultRequest::error("Produce", "REQUEST_TIMED_OUT").count(2)).unwrap();
        assert_eq!(s.action, Action::Error(7));
        assert_eq!(s.count, Some(2));
    }
}
