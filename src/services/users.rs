//! Users of SASL listeners: salted credentials (RFC 5802: salt, iteration count, StoredKey,
//! ServerKey; never the password) per mechanism, kept in the store's security records under
//! `user/<name>`. Managed offline by `kafkabox users` and online by
//! AlterUserScramCredentials; read by SASL PLAIN and SCRAM.

use std::collections::BTreeMap;

use base64::Engine as _;
use kafkabox_storage::Store;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

const PREFIX: &[u8] = b"user/";

/// Kafka's bounds on SCRAM iterations (ScramMechanism: 4096 ..= 16384).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// The iterations `kafkabox users add` uses unless told otherwise, and those of the stand-in
/// credential of an unknown user (so its SCRAM answer and PLAIN work look like a real user's).
pub const DEFAULT_ITERATIONS: u32 = 8192;

/// The label of the key (derived from the data dir's secret, `Store::derived_key`) that the
/// salts of unknown users are made with.
const FAKE_SALT_KEY_PURPOSE: &[u8] = b"kafkabox sasl fake salt";

/// Users stored at most (each record is a few hundred bytes).
pub const MAX_USERS: usize = 100_000;

/// The longest user name (Kafka's SCRAM user names are free-form; this keeps records bounded).
pub const MAX_NAME_BYTES: usize = 256;

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scram {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Scram {
    pub fn name(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(s: &str) -> Option<Scram> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Scram::Sha256),
            "SCRAM-SHA-512" => Some(Scram::Sha512),
            _ => None,
        }
    }

    /// Kafka's ScramMechanism type (DescribeUserScramCredentials): 1 = SHA-256, 2 = SHA-512.
    pub fn kafka_type(self) -> i8 {
        match self {
            Scram::Sha256 => 1,
            Scram::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Scram> {
        match t {
            1 => Some(Scram::Sha256),
            2 => Some(Scram::Sha512),
            _ => None,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Scram::Sha256 => hmac::HMAC_SHA256,
            Scram::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Scram::Sha256 => &digest::SHA256,
            Scram::Sha512 => &digest::SHA512,
        }
    }

    pub fn output_len(self) -> usize {
        self.digest_alg().output_len()
    }

    pub fn hmac(self, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let k = hmac::Key::new(self.hmac_alg(), key);
        let mut ctx = hmac::Context::with_key(&k);
        for d in data {
            ctx.update(d);
        }
        ctx.sign().as_ref().to_vec()
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with HMAC of this hash.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let alg = match self {
            Scram::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Scram::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = vec![0u8; self.output_len()];
        let iterations =
            std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(alg, iterations, salt, password, &mut out);
        out
    }
}

/// How a credential may be used: by SCRAM with its hash (and PLAIN), or by PLAIN only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// A password for PLAIN only (kept salted and hashed as SCRAM-SHA-512 would).
    #[serde(rename = "PLAIN")]
    Plain,
}

impl Mechanism {
    pub fn parse(s: &str) -> Option<Mechanism> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            "PLAIN" => Some(Mechanism::Plain),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The hash its stored credential uses.
    pub fn scram(self) -> Scram {
        match self {
            Mechanism::ScramSha256 => Scram::Sha256,
            Mechanism::ScramSha512 | Mechanism::Plain => Scram::Sha512,
        }
    }
}

/// One stored credential (RFC 5802's server-side values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(scram: Scram, salt: Vec<u8>, iterations: u32, salted: &[u8]) -> Credential {
        let client_key = scram.hmac(salted, &[b"Client Key"]);
        Credential {
            stored_key: scram.hash(&client_key),
            server_key: scram.hmac(salted, &[b"Server Key"]),
            salt,
            iterations,
        }
    }

    /// From a password, with a new random salt.
    pub fn new(scram: Scram, password: &str, iterations: u32) -> Result<Credential> {
        let mut salt = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::Internal("no random source for a salt".into()))?;
        let salted = scram.salted_password(password.as_bytes(), &salt, iterations);
        Ok(Credential::from_salted(scram, salt, iterations, &salted))
    }

    /// Whether `password` is this credential's (PLAIN), compared in constant time.
    pub fn matches(&self, scram: Scram, password: &str) -> bool {
        let salted = scram.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = scram.hmac(&salted, &[b"Client Key"]);
        constant_time_eq(&scram.hash(&client_key), &self.stored_key)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// A user's stored credentials, by mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub credentials: BTreeMap<Mechanism, Credential>,
}

/// Every user by name, as read from the store (shared by the cache's readers).
type UserMap = std::sync::Arc<BTreeMap<String, User>>;

/// The stored users (over the store's security records), with an in-memory copy: an
/// authentication reads no database (a client retrying a wrong password as fast as it can
/// costs a lookup in a map). Changes go through [`Users::apply`] / [`Users::remove`], which
/// write the store first; clones share the copy.
#[derive(Debug, Clone)]
pub struct Users {
    store: Store,
    cache: std::sync::Arc<std::sync::RwLock<Option<UserMap>>>,
    /// The key unknown users' salts are derived with, read from the store on first use.
    fake_salt_key: std::sync::Arc<SecretKey>,
}

/// A key read once and never shown (its `Debug` prints no bytes: `Services` is `Debug`).
#[derive(Default)]
struct SecretKey(std::sync::OnceLock<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// What a PLAIN password check found. The work done is the same for an unknown user as for a
/// wrong password; only the server's log tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Matches,
    WrongPassword,
    /// No such user, or one without any credential.
    UnknownUser,
}

/// A counting semaphore for the blocking pool (std only): at most `limit` key derivations at
/// once, so password guessers on many connections cannot occupy every core, while checks still
/// run side by side instead of single file behind a queue of guessers.
#[derive(Debug)]
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A taken slot; dropping it frees the slot.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots {
            free: std::sync::Mutex::new(limit.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits (on a blocking-pool thread: never call on a runtime worker) for a free slot.
    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        drop(free);
        self.0.freed.notify_one();
    }
}

/// The process-wide limit on concurrent PBKDF2 work: one per core
/// (`std::thread::available_parallelism`).
fn pbkdf2_slots() -> &'static Slots {
    static SLOTS: std::sync::OnceLock<Slots> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        Slots::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    })
}

fn key(name: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Kafka's checks of a user name: not empty, bounded.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidRequest(
            "a user name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidRequest(format!(
            "a user name may have at most {MAX_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidRequest(
            "a user name must not contain control characters".into(),
        ));
    }
    Ok(())
}

fn load(store: &Store) -> Result<BTreeMap<String, User>> {
    let mut out = BTreeMap::new();
    for (k, v) in store.security_records(PREFIX)? {
        let name = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
        let user: User = serde_json::from_slice(&v)
            .map_err(|e| Error::Internal(format!("user record of {name}: {e}")))?;
        out.insert(name, user);
    }
    Ok(out)
}

impl Users {
    pub fn new(store: Store) -> Users {
        Users {
            store,
            cache: Default::default(),
            fake_salt_key: Default::default(),
        }
    }

    /// The key unknown users' salts are derived with: from the data dir's secret, so the same
    /// name gets the same salt across restarts (a salt that changed would give the name away as
    /// unknown). Should the store fail to give it, a random key serves this process (logged):
    /// salts then change at a restart, but no exchange fails because of it.
    fn fake_salt_key(&self) -> [u8; 32] {
        *self.fake_salt_key.0.get_or_init(|| {
            match self.store.derived_key(FAKE_SALT_KEY_PURPOSE) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the data dir's secret key; unknown SASL users get salts that change at each restart");
                    let mut k = [0u8; 32];
                    let _ = ring::rand::SystemRandom::new().fill(&mut k);
                    k
                }
            }
        })
    }

    /// The stand-in credential of `name` for `mechanism` when there is no real one (RFC 5802
    /// section 5.1's advice): a salt that is HMAC-SHA-256(key, "kafkabox-scram-salt" ||
    /// mechanism || NUL || name), the same on every attempt and as long as real salts (32
    /// bytes), [`DEFAULT_ITERATIONS`], and keys no password matches. SCRAM answers with it as
    /// with a real credential and PLAIN derives against it, so an unknown user looks and costs
    /// like a wrong password.
    pub fn fake_credential(&self, mechanism: Mechanism, name: &str) -> Credential {
        let key = self.fake_salt_key();
        let salt = Scram::Sha256.hmac(
            &key,
            &[
                b"kafkabox-scram-salt",
                mechanism.name().as_bytes(),
                b"\0",
                name.as_bytes(),
            ],
        );
        let len = mechanism.scram().output_len();
        let mut keys = vec![0u8; 2 * len];
        if ring::rand::SystemRandom::new().fill(&mut keys).is_err() {
            // No random source: keys from the secret key serve as well (no one can find a
            // password for them without it).
            keys = Scram::Sha512.hmac(&key, &[b"kafkabox-fake-keys", name.as_bytes()]);
            keys.resize(2 * len, 0x5a);
        }
        let server_key = keys.split_off(len);
        Credential {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: keys,
            server_key,
        }
    }

    /// Every user, read from the store on first use.
    fn all(&self) -> Result<std::sync::Arc<BTreeMap<String, User>>> {
        if let Some(all) = self.cache.read().ok().and_then(|c| c.clone()) {
            return Ok(all);
        }
        let mut guard = self
            .cache
            .write()
            .map_err(|_| Error::Internal("users lock".into()))?;
        if let Some(all) = guard.clone() {
            return Ok(all);
        }
        let all = std::sync::Arc::new(load(&self.store)?);
        *guard = Some(all.clone());
        Ok(all)
    }

    /// The user `name`, if stored.
    pub fn get(&self, name: &str) -> Result<Option<User>> {
        Ok(self.all()?.get(name).cloned())
    }

    /// Every stored user, by name.
    pub fn list(&self) -> Result<Vec<(String, User)>> {
        Ok(self
            .all()?
            .iter()
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect())
    }

    /// Applies credential changes in one durable write: `Some` sets a mechanism's credential,
    /// `None` removes it (a user left with none is removed).
    pub fn apply(&self, changes: &[(String, Mechanism, Option<Credential>)]) -> Result<()> {
        let all = self.all()?;
        // One writer at a time: the copy and the store change together.
        let mut guard = self
            .cache
            .write()
            .map_err(|_| Error::Internal("users lock".into()))?;
        let current = guard.clone().unwrap_or(all);
        let mut next: BTreeMap<String, User> = current.as_ref().clone();
        for (name, mech, cred) in changes {
            check_name(name)?;
            let user = next.entry(name.clone()).or_default();
            match cred {
                Some(c) => {
                    user.credentials.insert(*mech, c.clone());
                }
                None => {
                    user.credentials.remove(mech);
                }
            }
        }
        next.retain(|_, u| !u.credentials.is_empty());
        if next.len() > MAX_USERS && next.len() > current.len() {
            return Err(Error::PolicyViolation(format!(
                "at most {MAX_USERS} users may be stored"
            )));
        }
        let mut touched: Vec<&String> = changes.iter().map(|(n, _, _)| n).collect();
        touched.sort();
        touched.dedup();
        let mut records = Vec::with_capacity(touched.len());
        for name in touched {
            let v = match next.get(name) {
                Some(u) => Some(serde_json::to_vec(u).map_err(|e| Error::Internal(e.to_string()))?),
                None => None,
            };
            records.push((key(name), v));
        }
        self.store.put_security_records(&records)?;
        *guard = Some(std::sync::Arc::new(next));
        Ok(())
    }

    /// Removes a user and all its credentials; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let Some(user) = self.get(name)? else {
            return Ok(false);
        };
        let changes: Vec<(String, Mechanism, Option<Credential>)> = user
            .credentials
            .keys()
            .map(|m| (name.to_string(), *m, None))
            .collect();
        self.apply(&changes)?;
        Ok(true)
    }

    /// PLAIN: whether `password` is `name`'s (a PLAIN credential, else any SCRAM one). An
    /// unknown user costs the same key derivation, against [`Users::fake_credential`], as a
    /// wrong password of a user added with the defaults (SCRAM-SHA-512, [`DEFAULT_ITERATIONS`]),
    /// so the time taken does not tell which users exist. The derivations (PBKDF2, 4096 to
    /// 16384 rounds: milliseconds of CPU) run at most one per core at a time, so clients
    /// trying passwords on many connections cannot take every core, and a real user's check
    /// waits for a free core, not for every guess queued before it. Call on the blocking pool.
    pub fn check_password(&self, name: &str, password: &str) -> Result<PasswordCheck> {
        let user = self.get(name)?;
        let fake;
        let (known, credentials): (bool, Vec<(Mechanism, &Credential)>) = match &user {
            Some(u) if !u.credentials.is_empty() => {
                (true, u.credentials.iter().map(|(m, c)| (*m, c)).collect())
            }
            _ => {
                fake = self.fake_credential(Mechanism::Plain, name);
                (false, vec![(Mechanism::Plain, &fake)])
            }
        };
        let _slot = pbkdf2_slots().take();
        for (mech, cred) in credentials {
            if cred.matches(mech.scram(), password) && known {
                return Ok(PasswordCheck::Matches);
            }
        }
        Ok(if known {
            PasswordCheck::WrongPassword
        } else {
            PasswordCheck::UnknownUser
        })
    }
}

/// base64 as SCRAM and the CLI write it.
pub fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil".
    #[test]
    fn rfc7677_keys() {
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let salted = Scram::Sha256.salted_password(b"pencil", &salt, 4096);
        let c = Credential::from_salted(Scram::Sha256, salt, 4096, &salted);
        // ServerSignature of the RFC's exchange, computed from the ServerKey.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = Scram::Sha256.hmac(&c.server_key, &[auth.as_bytes()]);
        assert_eq!(b64(&sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(c.matches(Scram::Sha256, "pencil"));
        assert!(!c.matches(Scram::Sha256, "pencil2"));
    }
}
