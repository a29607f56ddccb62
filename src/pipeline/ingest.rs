//! [`IngestStats`]: per-source ingest status. The counters and the events received per minute
//! over the last hour live in the store and are updated in the same atomic write as the
//! dead-letter stage's offset, so the dashboard's chart has its history after a restart.

use std::sync::{Arc, Mutex};

use kafkabox_storage::Store;

/// Per-source ingest status: what a team checks after sending a few test events.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceStatus {
    pub received: u64,
    pub valid: u64,
    pub rejected: u64,
    /// Wall-clock ms of the last record seen from this source.
    pub last_seen_ms: i64,
    pub last_rejection: Option<String>,
    /// Events received per minute, the last [`MINUTES_KEPT`] minutes with any (oldest first).
    #[serde(default)]
    pub per_minute: Vec<MinuteCount>,
}

/// Ingest status by source (`"unknown"` when a record's source cannot be read), kept in the
/// store and updated in the same atomic write as the dead-letter stage's offset, so it counts
/// every record once across restarts and crashes.
#[derive(Debug, Clone)]
pub struct IngestStats {
    store: Store,
    /// Serialises read-modify-write of the counters across partitions.
    pub(super) lock: Arc<Mutex<()>>,
    /// Since the last periodic log line, in memory.
    recent: Arc<Mutex<Recent>>,
}

/// Minutes of per-source history kept for the dashboard's chart.
pub const MINUTES_KEPT: usize = 60;

#[derive(Debug, Default)]
struct Recent {
    valid: u64,
    rejected: u64,
}

/// Events received per minute from one source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MinuteCount {
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    pub received: u64,
}

const INGEST_PREFIX: &str = "ingest/";
/// Most sources reported.
const MAX_SOURCES: usize = 10_000;

impl IngestStats {
    pub fn new(store: Store) -> IngestStats {
        IngestStats {
            store,
            lock: Arc::default(),
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        match self.recent.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Valid and rejected events since the last call (for the periodic info line).
    pub fn take_interval(&self) -> (u64, u64) {
        let mut r = self.recent();
        let out = (r.valid, r.rejected);
        r.valid = 0;
        r.rejected = 0;
        out
    }

    /// Counts `observed` for the periodic log line (after it was committed).
    pub(super) fn observe(&self, observed: &[(Option<String>, Option<String>)]) {
        let mut r = self.recent();
        for (_, rejection) in observed {
            match rejection {
                None => r.valid += 1,
                Some(_) => r.rejected += 1,
            }
        }
    }

    /// The status of every source seen.
    pub fn snapshot(
        &self,
    ) -> Result<std::collections::BTreeMap<String, SourceStatus>, kafkabox_storage::StoreError>
    {
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in self
            .store
            .state_prefix(INGEST_PREFIX.as_bytes(), MAX_SOURCES)?
        {
            let source = String::from_utf8_lossy(&k[INGEST_PREFIX.len()..]).into_owned();
            if let Ok(status) = serde_json::from_slice(&v) {
                out.insert(source, status);
            }
        }
        Ok(out)
    }

    /// The state writes that add `observed` (source, rejection reason if rejected) to the
    /// stored counters. Call with `lock` held until the writes are committed.
    pub(super) fn writes(
        &self,
        observed: &[(Option<String>, Option<String>)],
    ) -> Result<Vec<kafkabox_storage::StateEntry>, kafkabox_storage::StoreError> {
        let now = crate::services::now_ms();
        let mut touched: std::collections::BTreeMap<String, SourceStatus> =
            std::collections::BTreeMap::new();
        for (source, rejection) in observed {
            let source = source.as_deref().unwrap_or("unknown").to_string();
            if !touched.contains_key(&source) {
                let key = format!("{INGEST_PREFIX}{source}");
                let current = self
                    .store
                    .state(key.as_bytes())?
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default();
                touched.insert(source.clone(), current);
            }
            if let Some(s) = touched.get_mut(&source) {
                s.received += 1;
                s.last_seen_ms = now;
                let minute_ms = now / 60_000 * 60_000;
                match s.per_minute.last_mut() {
                    Some(m) if m.minute_ms == minute_ms => m.received += 1,
                    _ => s.per_minute.push(MinuteCount {
                        minute_ms,
                        received: 1,
                    }),
                }
                let oldest = minute_ms - MINUTES_KEPT as i64 * 60_000;
                s.per_minute.retain(|m| m.minute_ms > oldest);
                match rejection {
                    None => s.valid += 1,
                    Some(r) => {
                        s.rejected += 1;
                        s.last_rejection = Some(r.clone());
                    }
                }
            }
        }
        Ok(touched
            .into_iter()
            .map(|(source, status)| {
                let value = serde_json::to_vec(&status).unwrap_or_default();
                (format!("{INGEST_PREFIX}{source}").into_bytes(), value)
            })
            .collect())
    }
}
