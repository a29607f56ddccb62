//! Producer ids: allocation (InitProducerId), whether an id was issued and to whom, and the
//! data dir's secret that keys their HMACs (from which [`Store::derived_key`] derives other
//! keys).

use crate::keys::{read_u64, META_NEXT_PRODUCER, META_NEXT_PRODUCER_SEQ, META_PRODUCER_ID_SECRET};
use crate::{Store, StoreError};

/// Producer ids below this are sequential ones of older versions (from 1000 up).
const PRODUCER_ID_SEQ_SHIFT: u32 = 31;

impl Store {
    /// Allocates a new producer id (epoch 0) for `owner` (the principal asking, opaque here).
    /// Durable when this returns. An id is its sequence number (high 32 bits) and 31 bits of
    /// an HMAC of that number and the owner under the data dir's secret key: ids cannot be
    /// guessed from one another, and [`Store::producer_id_owned_by`] tells whether an id was
    /// handed to a given owner, without storing one entry per id.
    pub fn new_producer_id(&self, owner: &[u8]) -> Result<i64, StoreError> {
        let inner = &self.inner;
        let _admin = inner.admin.lock().map_err(|_| StoreError::Closed)?;
        let key = self.producer_id_secret()?;
        let seq = match inner.meta.get(META_NEXT_PRODUCER_SEQ)? {
            Some(v) => read_u64(&v)?,
            None => 1,
        };
        if seq >= 1 << 32 {
            return Err(StoreError::Corrupt(
                "every producer id of this data dir (2^32) has been handed out".into(),
            ));
        }
        inner
            .meta
            .insert(META_NEXT_PRODUCER_SEQ, &(seq + 1).to_be_bytes())?;
        inner.db.flush()?;
        Ok(producer_id_for(&key, seq, owner))
    }

    /// The data dir's producer-id secret (the key of producer ids' HMACs), created on first use,
    /// then kept in memory.
    fn producer_id_secret(&self) -> Result<[u8; 32], StoreError> {
        if let Some(k) = self.inner.producer_id_secret.get() {
            return Ok(*k);
        }
        let key = self.read_or_make_producer_id_secret()?;
        Ok(*self.inner.producer_id_secret.get_or_init(|| key))
    }

    fn read_or_make_producer_id_secret(&self) -> Result<[u8; 32], StoreError> {
        let meta = &self.inner.meta;
        if let Some(v) = meta.get(META_PRODUCER_ID_SECRET)? {
            return v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("producer id key is not 32 bytes".into()));
        }
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| StoreError::Corrupt("no random source for the producer id key".into()))?;
        meta.insert(META_PRODUCER_ID_SECRET, &key[..])?;
        self.inner.db.flush()?;
        Ok(key)
    }

    /// Whether `producer_id`'s sequence number was handed out by this data dir (to someone:
    /// the HMAC part is checked, with the owner, by [`Store::producer_id_owned_by`]).
    pub(crate) fn producer_id_issued(&self, producer_id: i64) -> bool {
        if producer_id < 0 {
            return false;
        }
        let (key, limit) = if producer_id < 1 << PRODUCER_ID_SEQ_SHIFT {
            (META_NEXT_PRODUCER, producer_id as u64)
        } else {
            (
                META_NEXT_PRODUCER_SEQ,
                (producer_id as u64) >> PRODUCER_ID_SEQ_SHIFT,
            )
        };
        match self.inner.meta.get(key) {
            Ok(Some(v)) => read_u64(&v).map(|next| limit < next).unwrap_or(false),
            _ => false,
        }
    }

    /// Whether `producer_id` was handed out to `owner` by [`Store::new_producer_id`]. Ids of
    /// older versions (sequential, owner unknown) count as everyone's.
    pub fn producer_id_owned_by(&self, producer_id: i64, owner: &[u8]) -> bool {
        if !self.producer_id_issued(producer_id) {
            return false;
        }
        if producer_id < 1 << PRODUCER_ID_SEQ_SHIFT {
            return true;
        }
        let seq = (producer_id as u64) >> PRODUCER_ID_SEQ_SHIFT;
        match self.producer_id_secret() {
            Ok(key) => producer_id == producer_id_for(&key, seq, owner),
            Err(_) => false,
        }
    }

    /// A 32-byte key for `purpose` (a fixed label naming its use), derived from the data dir's
    /// secret key as HMAC-SHA-256(secret, purpose): the same across restarts, unknowable without
    /// the data dir, and different for each purpose. The secret itself (the producer-id secret)
    /// never leaves the store. Used by SASL for the salts of unknown users; the labels cannot
    /// collide with producer ids' HMAC inputs that matter (those start with a sequence number
    /// below 2^32, i.e. four zero bytes, which a text label does not).
    pub fn derived_key(&self, purpose: &[u8]) -> Result<[u8; 32], StoreError> {
        let secret = match self.inner.producer_id_secret.get() {
            Some(k) => *k,
            None => {
                // Made at most once: under the lock that producer id allocation takes.
                let _admin = self.inner.admin.lock().map_err(|_| StoreError::Closed)?;
                self.producer_id_secret()?
            }
        };
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            purpose,
        );
        let mut out = [0u8; 32];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        Ok(out)
    }
}

/// The producer id of sequence number `seq` for `owner` under `key`.
fn producer_id_for(key: &[u8; 32], seq: u64, owner: &[u8]) -> i64 {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(&seq.to_be_bytes());
    ctx.update(owner);
    let tag = ctx.sign();
    let mac = u32::from_be_bytes(tag.as_ref()[..4].try_into().unwrap_or([0; 4])) & 0x7fff_ffff;
    ((seq << PRODUCER_ID_SEQ_SHIFT) | u64::from(mac)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[test]
    fn producer_ids_are_unguessable_and_bound_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path());
        let (a1, a2, b1);
        {
            let s = Store::open(cfg.clone()).unwrap();
            a1 = s.new_producer_id(b"User:alice").unwrap();
            a2 = s.new_producer_id(b"User:alice").unwrap();
            b1 = s.new_producer_id(b"User:bob").unwrap();
            assert!(a1 > 0 && a2 > 0 && b1 > 0);
            // Not a counter: the next id is not the previous one plus one.
            assert_ne!(a2, a1 + 1);
            assert!(s.producer_id_owned_by(a1, b"User:alice"));
            assert!(s.producer_id_owned_by(b1, b"User:bob"));
            assert!(!s.producer_id_owned_by(a1, b"User:bob"));
            assert!(!s.producer_id_owned_by(b1, b"User:alice"));
            // Ids never issued: a neighbour of a real one, a future sequence number, negatives.
            assert!(!s.producer_id_owned_by(a1 + 1, b"User:alice"));
            assert!(!s.producer_id_owned_by(a1 ^ 1, b"User:alice"));
            assert!(!s.producer_id_owned_by(1 << 40, b"User:alice"));
            assert!(!s.producer_id_owned_by(-1, b"User:alice"));
            s.close().unwrap();
        }
        // The key is the data dir's: the binding holds after a restart.
        let s = Store::open(cfg).unwrap();
        assert!(s.producer_id_owned_by(a2, b"User:alice"));
        assert!(!s.producer_id_owned_by(a2, b"User:bob"));
        let next = s.new_producer_id(b"User:alice").unwrap();
        assert!(![a1, a2, b1].contains(&next));
    }
}
