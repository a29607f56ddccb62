//! Fault injection for tests: answer an API with an error, late, never (stall), or by closing
//! the connection; refuse new connections for a while. Set over the HTTP API
//! (`/api/v1/faults`), `kafkabox faults` and the Rust API (`ApplianceHandle::faults`); only on
//! an ephemeral data directory or with `faults.allow`. The API layer resolves names (`Produce`,
//! `NOT_LEADER_OR_FOLLOWER`) to keys and codes and applies what [`Faults::on_request`] picks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metrics::Metrics;

/// At most this many faults at once.
pub const MAX_FAULTS: usize = 1000;

/// A fault as asked for (HTTP body, CLI flags, Rust API): API and error by name or number,
/// exactly one action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// The API whose requests the fault applies to: Kafka's name (`Produce`) or key (`0`).
    /// Not used with `refuse_connections_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Answer with this error instead of carrying the request out: Kafka's name
    /// (`NOT_LEADER_OR_FOLLOWER`) or code (`6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Answer this many milliseconds late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Carry the request out, send no answer, close the connection (a lost acknowledgement).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disconnect: bool,
    /// Carry the request out and hold the answer until the fault is cleared (a disk that stopped
    /// acknowledging).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stall: bool,
    /// Close every new connection at once for this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_connections_ms: Option<u64>,
    /// Apply to this many requests, then end (default: until cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Apply to each matching request with this probability, 0 < p <= 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

impl FaultRequest {
    /// Answer `api` with `error`.
    pub fn error(api: &str, error: &str) -> FaultRequest {
        FaultRequest {
            api: Some(api.into()),
            error: Some(error.into()),
            ..FaultRequest::default()
        }
    }

    /// Answer `api` `ms` milliseconds late.
    pub fn latency(api: &str, ms: u64) -> FaultRequest {
        FaultRequest {
            api: Some(api.into()),
            latency_ms: Some(ms),
            ..FaultRequest::default()
        }
    }

    /// Carry out `api`'s requests but close the connection instead of answering.
    pub fn disconnect(api: &str) -> FaultRequest {
        FaultRequest {
            api: Some(api.into()),
            disconnect: true,
            ..FaultRequest::default()
        }
    }

    /// Hold `api`'s answers until cleared.
    pub fn stall(api: &str) -> FaultRequest {
        FaultRequest {
            api: Some(api.into()),
            stall: true,
            ..FaultRequest::default()
        }
    }

    /// Close new connections at once for `ms` milliseconds.
    pub fn refuse_connections(ms: u64) -> FaultRequest {
        FaultRequest {
            refuse_connections_ms: Some(ms),
            ..FaultRequest::default()
        }
    }

    /// Only the next `n` matching requests.
    pub fn count(mut self, n: u64) -> FaultRequest {
        self.count = Some(n);
        self
    }

    /// Each matching request with probability `p`.
    pub fn probability(mut self, p: f64) -> FaultRequest {
        self.probability = Some(p);
        self
    }
}

/// What a fault does, resolved (keys and codes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Error(i16),
    Latency(Duration),
    Disconnect,
    Stall,
    RefuseConnections(Duration),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Error(_) => "error",
            Action::Latency(_) => "latency",
            Action::Disconnect => "disconnect",
            Action::Stall => "stall",
            Action::RefuseConnections(_) => "refuse_connections",
        }
    }
}

/// A resolved fault: which API (key and name), what, how often.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    /// API key and name; `None` for connection faults.
    pub api: Option<(i16, &'static str)>,
    pub action: Action,
    /// The error's name, for listings and logs.
    pub error_name: Option<String>,
    pub count: Option<u64>,
    pub probability: f64,
}

/// An active fault, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub id: u64,
    #[serde(flatten)]
    pub request: FaultRequest,
    /// Requests (or connections) it has applied to so far.
    pub injected: u64,
    /// Applications left, when it has a count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

struct Active {
    id: u64,
    spec: FaultSpec,
    request: FaultRequest,
    injected: u64,
    /// When a connection fault ends.
    until: Option<Instant>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Injection {
    Error(i16),
    Latency(Duration),
    Disconnect,
    Stall,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("fault injection is off: this data directory is not ephemeral; start with --ephemeral, or with --allow-faults (faults.allow=true) to inject faults into a kept data directory")]
    NotAllowed,
    #[error("{0}")]
    Invalid(String),
    #[error("at most {MAX_FAULTS} faults at once; clear some first")]
    TooMany,
}

/// The active faults of one broker.
pub struct Faults {
    allowed: bool,
    /// Whether any fault is active: the only thing a request reads when none is.
    any: AtomicBool,
    inner: Mutex<Vec<Active>>,
    next_id: AtomicU64,
    rng: AtomicU64,
    /// Bumped when faults are cleared: stalled answers go out.
    released: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    log: Mutex<super::log_limit::RateLimitedLog>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("allowed", &self.allowed)
            .field("active", &self.any.load(Ordering::Relaxed))
            .finish()
    }
}

impl Faults {
    pub fn new(allowed: bool, metrics: Arc<Metrics>) -> Faults {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Faults {
            allowed,
            any: AtomicBool::new(false),
            inner: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            rng: AtomicU64::new(seed | 1),
            released: watch::channel(0).0,
            metrics,
            log: Mutex::new(super::log_limit::RateLimitedLog::new()),
        }
    }

    /// Whether faults may be injected here (ephemeral data dir or `faults.allow`).
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds a fault; returns it as listed.
    pub fn add(&self, spec: FaultSpec, request: FaultRequest) -> Result<Fault, FaultError> {
        if !self.allowed {
            return Err(FaultError::NotAllowed);
        }
        if !(spec.probability > 0.0 && spec.probability <= 1.0) {
            return Err(FaultError::Invalid(format!(
                "probability must be in (0, 1], got {}",
                spec.probability
            )));
        }
        if spec.count == Some(0) {
            return Err(FaultError::Invalid("count must be at least 1".into()));
        }
        let mut faults = self.lock();
        faults.retain(|a| a.until.is_none_or(|u| u > Instant::now()));
        if faults.len() >= MAX_FAULTS {
            return Err(FaultError::TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let until = match spec.action {
            Action::RefuseConnections(d) => {
                Some(Instant::now().checked_add(d).ok_or_else(|| {
                    FaultError::Invalid("refuse_connections_ms is too long".into())
                })?)
            }
            _ => None,
        };
        tracing::warn!(
            id,
            api = spec.api.map(|a| a.1),
            action = spec.action.name(),
            error = spec.error_name.as_deref(),
            count = spec.count,
            probability = spec.probability,
            "fault injected"
        );
        let active = Active {
            id,
            spec,
            request,
            injected: 0,
            until,
        };
        let listed = listing(&active);
        faults.push(active);
        self.any.store(true, Ordering::Release);
        self.metrics.faults_active.set(faults.len() as i64);
        Ok(listed)
    }

    /// The active faults, oldest first.
    pub fn list(&self) -> Vec<Fault> {
        let mut faults = self.lock();
        let now = Instant::now();
        faults.retain(|a| a.until.is_none_or(|u| u > now));
        faults.iter().map(listing).collect()
    }

    /// Clears every fault (stalled answers go out); returns how many there were.
    pub fn clear(&self) -> usize {
        let mut faults = self.lock();
        let n = faults.len();
        faults.clear();
        self.any.store(false, Ordering::Release);
        self.metrics.faults_active.set(0);
        drop(faults);
        self.released.send_modify(|g| *g += 1);
        tracing::warn!(cleared = n, "faults cleared");
        n
    }

    /// Clears fault `id`; false if there is none.
    pub fn remove(&self, id: u64) -> bool {
        let mut faults = self.lock();
        let before = faults.len();
        faults.retain(|a| a.id != id);
        let found = faults.len() < before;
        self.any.store(!faults.is_empty(), Ordering::Release);
        self.metrics.faults_active.set(faults.len() as i64);
        drop(faults);
        if found {
            self.released.send_modify(|g| *g += 1);
            tracing::warn!(id, "fault cleared");
        }
        found
    }

    /// Changes when faults are cleared (a stalled answer waits for it).
    pub fn released(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    fn chance(&self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        // splitmix64 over an atomic counter: good enough to pick requests at random.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// What to do with a request of API `key` (`name`): the first matching fault that fires.
    pub fn on_request(&self, key: i16, name: &'static str) -> Option<Injection> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut faults = self.lock();
        let mut fired = None;
        for a in faults.iter_mut() {
            if a.spec.api.map(|x| x.0) != Some(key) || !self.chance(a.spec.probability) {
                continue;
            }
            a.injected += 1;
            if let Some(c) = a.spec.count.as_mut() {
                *c -= 1;
            }
            fired = Some((a.id, a.spec.action));
            break;
        }
        let (id, action) = fired?;
        faults.retain(|a| a.spec.count != Some(0));
        if faults.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        self.metrics.faults_active.set(faults.len() as i64);
        drop(faults);
        self.counted(name, action);
        let limited = match self.log.lock() {
            Ok(mut l) => l.allow(),
            Err(p) => p.into_inner().allow(),
        };
        if let Some(suppressed) = limited {
            tracing::info!(
                id,
                api = name,
                action = action.name(),
                suppressed,
                "fault applied"
            );
        }
        match action {
            Action::Error(code) => Some(Injection::Error(code)),
            Action::Latency(d) => Some(Injection::Latency(d)),
            Action::Disconnect => Some(Injection::Disconnect),
            Action::Stall => Some(Injection::Stall),
            Action::RefuseConnections(_) => None,
        }
    }

    fn counted(&self, api: &'static str, action: Action) {
        self.metrics
            .faults_injected
            .get_or_create(&super::metrics::FaultLabels {
                api,
                action: action.name(),
            })
            .inc();
    }

    /// Whether a new connection is to be closed at once.
    pub fn refusing(&self) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut faults = self.lock();
        let now = Instant::now();
        let mut refusing = false;
        for a in faults.iter_mut() {
            if matches!(a.spec.action, Action::RefuseConnections(_))
                && a.until.is_some_and(|u| u > now)
            {
                a.injected += 1;
                refusing = true;
                break;
            }
        }
        faults.retain(|a| a.until.is_none_or(|u| u > now));
        if faults.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        drop(faults);
        if refusing {
            self.counted("connection", Action::RefuseConnections(Duration::ZERO));
        }
        refusing
    }
}

fn listing(a: &Active) -> Fault {
    Fault {
        id: a.id,
        request: a.request.clone(),
        injected: a.injected,
        remaining: a.spec.count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: Action, count: Option<u64>, p: f64) -> FaultSpec {
        FaultSpec {
            api: Some((0, "Produce")),
            action,
            error_name: None,
            count,
            probability: p,
        }
    }

    #[test]
    fn counts_run_out_and_clear_ends_all() {
        let f = Faults::new(true, Arc::default());
        assert_eq!(f.on_request(0, "Produce"), None);
        f.add(
            spec(Action::Error(6), Some(2), 1.0),
            FaultRequest::default(),
        )
        .unwrap();
        assert_eq!(f.on_request(1, "Fetch"), None);
        assert_eq!(f.on_request(0, "Produce"), Some(Injection::Error(6)));
        assert_eq!(f.on_request(0, "Produce"), Some(Injection::Error(6)));
        assert_eq!(f.on_request(0, "Produce"), None);
        assert!(f.list().is_empty());
        f.add(spec(Action::Stall, None, 1.0), FaultRequest::default())
            .unwrap();
        let released = f.released();
        assert_eq!(f.on_request(0, "Produce"), Some(Injection::Stall));
        assert_eq!(f.clear(), 1);
        assert!(released.has_changed().unwrap());
        assert_eq!(f.on_request(0, "Produce"), None);
    }

    #[test]
    fn probability_picks_some() {
        let f = Faults::new(true, Arc::default());
        f.add(spec(Action::Disconnect, None, 0.5), FaultRequest::default())
            .unwrap();
        let hits = (0..1000)
            .filter(|_| f.on_request(0, "Produce").is_some())
            .count();
        assert!((350..650).contains(&hits), "{hits}");
    }

    #[test]
    fn refused_unless_allowed_and_bounded() {
        let f = Faults::new(false, Arc::default());
        assert_eq!(
            f.add(spec(Action::Disconnect, None, 1.0), FaultRequest::default())
                .unwrap_err(),
            FaultError::NotAllowed
        );
        let f = Faults::new(true, Arc::default());
        for _ in 0..MAX_FAULTS {
            f.add(spec(Action::Disconnect, None, 1.0), FaultRequest::default())
                .unwrap();
        }
        assert_eq!(
            f.add(spec(Action::Disconnect, None, 1.0), FaultRequest::default())
                .unwrap_err(),
            FaultError::TooMany
        );
        assert!(f
            .add(spec(Action::Disconnect, None, 1.5), FaultRequest::default())
            .is_err());
    }

    #[test]
    fn refusing_connections_ends_by_itself() {
        let f = Faults::new(true, Arc::default());
        let mut s = spec(
            Action::RefuseConnections(Duration::from_millis(50)),
            None,
            1.0,
        );
        s.api = None;
        f.add(s, FaultRequest::default()).unwrap();
        assert!(f.refusing());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!f.refusing());
        assert!(f.list().is_empty());
    }
}
