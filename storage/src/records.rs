//! Records the store keeps for others, opaque to it: consumer-group records (tree `groups`),
//! security records (tree `security`), appliance state (under its own prefix in the meta `log`
//! tree) and the broker configs set at runtime (meta `meta` tree).

use std::sync::atomic::Ordering;

use crate::keys::{app_key, APP_STATE_PREFIX, META_BROKER_CONFIGS};
use crate::{KeyValue, StateEntry, Store, StoreError};

impl Store {
    /// The broker configs set at runtime (opaque to the store), if any.
    pub fn broker_configs(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .meta
            .get(META_BROKER_CONFIGS)?
            .map(|v| v.to_vec()))
    }

    /// Stores the broker configs set at runtime. Durable when this returns.
    pub fn set_broker_configs(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.meta.insert(META_BROKER_CONFIGS, bytes)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Security records (users' credentials, ACLs; opaque to the store) whose keys start with
    /// `prefix`, in key order.
    pub fn security_records(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.security.scan_prefix(prefix) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes and removes security records in one atomic write (`None` removes); durable when
    /// this returns.
    pub fn put_security_records(
        &self,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        self.inner.space.reserve(4096)?;
        let mut b = sled::Batch::default();
        for (k, v) in records {
            match v {
                Some(v) => b.insert(k.as_slice(), v.as_slice()),
                None => b.remove(k.as_slice()),
            }
        }
        self.inner.security.apply_batch(b)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Every stored consumer-group record (id, opaque bytes), in id order.
    pub fn group_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.groups.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Stores a consumer-group record. Returns the write sequence for [`Store::wait_durable`].
    pub fn put_group_record(&self, id: &str, record: &[u8]) -> Result<u64, StoreError> {
        self.inner.groups.insert(id.as_bytes(), record)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Removes a consumer-group record.
    pub fn remove_group_record(&self, id: &str) -> Result<u64, StoreError> {
        self.inner.groups.remove(id.as_bytes())?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Appliance state stored under `key` by [`Store::commit_with_state`].
    pub fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.state.get(app_key(key))?.map(|v| v.to_vec()))
    }

    /// Appliance state whose keys start with `prefix`, in key order, at most `limit` entries.
    pub fn state_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<StateEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.state.scan_prefix(app_key(prefix)).take(limit) {
            let (k, v) = item?;
            out.push((k[APP_STATE_PREFIX.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Like [`Store::state_prefix`], from the first key after `after` (exclusive) on: a page of a
    /// longer scan.
    pub fn state_after(
        &self,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        let start = app_key(after);
        let mut out = Vec::new();
        for item in self
            .inner
            .state
            .range(start.clone()..)
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |(k, _)| k.as_ref() != start.as_slice())
            })
            .take_while(|r| {
                r.as_ref().map_or(true, |(k, _)| {
                    k[APP_STATE_PREFIX.len()..].starts_with(prefix)
                })
            })
            .take(limit)
        {
            let (k, v) = item?;
            out.push((k[APP_STATE_PREFIX.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes appliance state entries in one atomic write; returns the write sequence number
    /// for [`Store::wait_durable`].
    pub fn put_state(&self, state: &[StateEntry]) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in state {
            b.insert(app_key(k), v.as_slice());
        }
        self.inner.state.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Removes appliance state entries in one atomic write; returns the write sequence number
    /// for [`Store::wait_durable`].
    pub fn remove_state(&self, keys: &[Vec<u8>]) -> Result<u64, StoreError> {
        let mut b = sled::Batch::default();
        for k in keys {
            b.remove(app_key(k));
        }
        self.inner.state.apply_batch(b)?;
        Ok(self.inner.written.fetch_add(1, Ordering::SeqCst) + 1)
    }
}
