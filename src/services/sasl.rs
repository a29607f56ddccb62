//! The server side of SASL PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, 7677) over the
//! stored users ([`super::users`]). Bytes in, bytes out: the Kafka API layer carries them in
//! SaslAuthenticate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use super::users::{constant_time_eq, Credential, Mechanism, PasswordCheck, Scram, Users};

/// Kafka's message for every failed authentication (the same for an unknown user and a wrong
/// password, so the answer does not tell which users exist).
pub fn failure_message(mechanism: &str) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )
}

/// The first wait of an address after one failed authentication; each further failure
/// doubles it, up to [`SLOWDOWN_MAX`].
pub const SLOWDOWN_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts of one address.
pub const SLOWDOWN_MAX: Duration = Duration::from_secs(5);
/// An address without a failure for this long is forgotten (starts again without a wait).
pub const SLOWDOWN_FORGET: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond, the one whose last failure is oldest is forgotten.
pub const SLOWDOWN_ADDRESSES: usize = 10_000;
/// The longest an attempt waits for its turn behind others from its address (attempts in
/// parallel queue up); one that would wait longer is refused: its connection closes.
pub const SLOWDOWN_MAX_WAIT: Duration = Duration::from_secs(20);

/// Failed authentications per client address, to slow password guessing down: after a failure,
/// the next attempt from that address waits min(100 ms x 2^(failures - 1), 5 s) before its
/// credentials are read, and attempts made in parallel take turns, one per such interval (so
/// opening many connections does not guess faster). A success, or 60 s without a failure,
/// forgets the address. IPv6 addresses count by /64 (what one host usually has). The listener
/// waits (asynchronously, [`Slowdown::admit`]); SaslAuthenticate records the outcomes.
#[derive(Debug, Default)]
pub struct Slowdown {
    by_address: std::sync::Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the latest attempt admitted from this address was let through.
    last_turn: Instant,
}

/// When an attempt may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Now,
    After(Duration),
    /// Too many attempts from this address are already waiting: close the connection.
    Refused,
}

/// The wait after `failures` failures in a row.
pub fn slowdown_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    SLOWDOWN_FIRST
        .saturating_mul(1 << doublings)
        .min(SLOWDOWN_MAX)
}

/// The key an address counts under: IPv4 (also when mapped into IPv6) as is, IPv6 by /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        },
    }
}

impl Slowdown {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt from `ip` may check its credentials now, or after how long. Called
    /// once per connection, when its SASL exchange begins; the wait is the caller's (an async
    /// sleep: no thread is held).
    pub fn admit(&self, ip: IpAddr) -> Admission {
        let key = address_key(ip);
        let now = Instant::now();
        let mut map = self.lock();
        let Some(f) = map.get_mut(&key) else {
            return Admission::Now;
        };
        if now.saturating_duration_since(f.last) >= SLOWDOWN_FORGET {
            map.remove(&key);
            return Admission::Now;
        }
        let delay = slowdown_delay(f.count);
        let turn = (now + delay).max(f.last_turn + delay);
        let wait = turn.saturating_duration_since(now);
        if wait > SLOWDOWN_MAX_WAIT {
            return Admission::Refused;
        }
        f.last_turn = turn;
        if wait.is_zero() {
            Admission::Now
        } else {
            Admission::After(wait)
        }
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let key = address_key(ip);
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(f) = map.get_mut(&key) {
            if now.saturating_duration_since(f.last) >= SLOWDOWN_FORGET {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            return;
        }
        if map.len() >= SLOWDOWN_ADDRESSES {
            // Forget the stale first; if that is not enough, the oldest failure. O(n), but
            // only when full, and each new address costs its sender a failed authentication.
            map.retain(|_, f| now.saturating_duration_since(f.last) < SLOWDOWN_FORGET);
            if map.len() >= SLOWDOWN_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            key,
            Failures {
                count: 1,
                last: now,
                last_turn: now,
            },
        );
    }

    /// Records a successful authentication from `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        let key = address_key(ip);
        let mut map = self.lock();
        map.remove(&key);
    }

    /// Addresses remembered (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one step of an exchange gives.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge; the client answers with another SaslAuthenticate.
    Continue(Vec<u8>),
    /// Authenticated as `principal` (`User:NAME`); `reply` is the last server message.
    Done { principal: String, reply: Vec<u8> },
    /// Refused; `reason` is for the log only (the client gets [`failure_message`]).
    Failed { reason: String },
}

/// One connection's authentication in progress.
#[derive(Debug)]
pub enum Exchange {
    Plain,
    Scram(ScramServer),
}

impl Exchange {
    /// An exchange of `mechanism`, if it is one kafkabox implements.
    pub fn new(mechanism: &str) -> Option<Exchange> {
        match mechanism {
            "PLAIN" => Some(Exchange::Plain),
            m => Scram::parse(m).map(|s| Exchange::Scram(ScramServer::new(s))),
        }
    }

    pub fn mechanism(&self) -> &'static str {
        match self {
            Exchange::Plain => "PLAIN",
            Exchange::Scram(s) => s.scram.name(),
        }
    }

    /// Handles the client's next message. Runs PBKDF2 for PLAIN: call off the async runtime.
    pub fn step(&mut self, users: &Users, input: &[u8]) -> Step {
        match self {
            Exchange::Plain => plain(users, input),
            Exchange::Scram(s) => s.step(users, input),
        }
    }
}

fn failed(reason: impl Into<String>) -> Step {
    Step::Failed {
        reason: reason.into(),
    }
}

/// PLAIN: `[authzid] NUL authcid NUL password`.
fn plain(users: &Users, input: &[u8]) -> Step {
    let Ok(text) = std::str::from_utf8(input) else {
        return failed("PLAIN message is not UTF-8");
    };
    let parts: Vec<&str> = text.split('\0').collect();
    let [authzid, user, password] = parts[..] else {
        return failed("PLAIN message is not authzid NUL user NUL password");
    };
    if user.is_empty() || password.is_empty() {
        return failed("PLAIN with an empty user name or password");
    }
    if !authzid.is_empty() && authzid != user {
        return failed(format!(
            "PLAIN: user {user} asked to act as {authzid}; authorization ids other than the user's own are not supported"
        ));
    }
    match users.check_password(user, password) {
        Ok(PasswordCheck::Matches) => Step::Done {
            principal: format!("User:{user}"),
            reply: Vec::new(),
        },
        Ok(PasswordCheck::WrongPassword) => failed(format!("PLAIN: wrong password for '{user}'")),
        Ok(PasswordCheck::UnknownUser) => failed(format!("PLAIN: unknown user '{user}'")),
        Err(e) => failed(format!("PLAIN: cannot read the users: {e}")),
    }
}

/// Characters of the server's part of a SCRAM nonce (24 random bytes in base64).
const SERVER_NONCE_CHARS: usize = 32;

/// SCRAM's server state.
#[derive(Debug)]
pub struct ScramServer {
    scram: Scram,
    state: ScramState,
}

#[derive(Debug)]
enum ScramState {
    First,
    Final {
        user: String,
        /// Whether `credential` is the user's own (false: a stand-in for an unknown user, which
        /// no proof matches; the exchange goes on so it looks like a wrong password).
        known: bool,
        credential: Credential,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
        nonce: String,
        gs2_header: String,
    },
    Finished,
}

impl ScramServer {
    fn new(scram: Scram) -> ScramServer {
        ScramServer {
            scram,
            state: ScramState::First,
        }
    }

    fn step(&mut self, users: &Users, input: &[u8]) -> Step {
        let Ok(text) = std::str::from_utf8(input) else {
            self.state = ScramState::Finished;
            return failed("SCRAM message is not UTF-8");
        };
        match std::mem::replace(&mut self.state, ScramState::Finished) {
            ScramState::First => self.client_first(users, text),
            ScramState::Final {
                user,
                known,
                credential,
                auth_prefix,
                nonce,
                gs2_header,
            } => {
                let step =
                    self.client_final(text, &user, &credential, &auth_prefix, &nonce, &gs2_header);
                match step {
                    // Unreachable (no proof matches a stand-in's keys), but never a login.
                    Step::Done { .. } if !known => failed(format!("SCRAM: unknown user '{user}'")),
                    Step::Failed { reason } if !known => failed(format!(
                        "SCRAM: unknown user '{user}' (or no {} credential): {reason}",
                        self.scram.name()
                    )),
                    step => step,
                }
            }
            ScramState::Finished => failed("SCRAM message after the exchange ended"),
        }
    }

    /// client-first-message: gs2-header client-first-message-bare, gs2-header = "n,," or
    /// "n,a=authzid,".
    fn client_first(&mut self, users: &Users, text: &str) -> Step {
        let mut it = text.splitn(3, ',');
        let (Some(cb), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return failed("SCRAM client-first message is malformed");
        };
        if cb != "n" {
            return failed(format!(
                "SCRAM channel binding '{cb}' is not supported (only 'n')"
            ));
        }
        let gs2_header = format!("{cb},{authz},");
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = sasl_name(v),
                Some(("r", v)) => client_nonce = Some(v.to_string()),
                Some(("m", _)) => return failed("SCRAM mandatory extension not supported"),
                Some(("tokenauth", "true")) => {
                    return failed("SCRAM delegation tokens are not supported")
                }
                _ => {} // Kafka's other extensions are ignored.
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return failed("SCRAM client-first message lacks n= or r=");
        };
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return failed("SCRAM client nonce is empty or not printable");
        }
        if let Some(a) = authz.strip_prefix("a=") {
            if sasl_name(a).as_deref() != Some(user.as_str()) {
                return failed(format!(
                    "SCRAM: user {user} asked to act as {a}; authorization ids other than the user's own are not supported"
                ));
            }
        } else if !authz.is_empty() {
            return failed("SCRAM gs2 header is malformed");
        }
        let mech = match self.scram {
            Scram::Sha256 => Mechanism::ScramSha256,
            Scram::Sha512 => Mechanism::ScramSha512,
        };
        // An unknown user, or one without a credential of this mechanism, gets a server-first
        // message like anyone's (a stable salt, the usual iterations) and fails at the proof,
        // as a wrong password does: the exchange does not tell which users exist.
        let (known, credential) = match users.get(&user) {
            Ok(Some(u)) => match u.credentials.get(&mech) {
                Some(c) => (true, c.clone()),
                None => (false, users.fake_credential(mech, &user)),
            },
            Ok(None) => (false, users.fake_credential(mech, &user)),
            Err(e) => return failed(format!("SCRAM: cannot read the users: {e}")),
        };
        let mut server_nonce = [0u8; 24];
        if ring::rand::SystemRandom::new()
            .fill(&mut server_nonce)
            .is_err()
        {
            return failed("no random source for a SCRAM nonce");
        }
        let nonce = format!("{client_nonce}{}", super::users::b64(&server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            super::users::b64(&credential.salt),
            credential.iterations
        );
        self.state = ScramState::Final {
            user,
            known,
            auth_prefix: format!("{bare},{server_first}"),
            credential,
            nonce,
            gs2_header,
        };
        Step::Continue(server_first.into_bytes())
    }

    /// client-final-message: "c=" base64(gs2-header) ",r=" nonce [extensions] ",p=" proof.
    fn client_final(
        &mut self,
        text: &str,
        user: &str,
        credential: &Credential,
        auth_prefix: &str,
        nonce: &str,
        gs2_header: &str,
    ) -> Step {
        use base64::Engine as _;
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return failed("SCRAM client-final message lacks p=");
        };
        let mut channel = None;
        let mut got_nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => channel = Some(v),
                Some(("r", v)) => got_nonce = Some(v),
                _ => {}
            }
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        if channel.and_then(|c| b64.decode(c).ok()).as_deref() != Some(gs2_header.as_bytes()) {
            return failed("SCRAM channel binding does not match the gs2 header");
        }
        // Kafka checks only that the nonce ends with the server's part (librdkafka up to 2.x
        // repeats its own nonce in front of the server's whole one), and so does kafkabox; the
        // signature covers what the client sent either way.
        let (client_part, server_part) = nonce.split_at(nonce.len() - SERVER_NONCE_CHARS);
        if !got_nonce.is_some_and(|n| n.starts_with(client_part) && n.ends_with(server_part)) {
            return failed("SCRAM nonce does not match the server's");
        }
        let Ok(proof) = b64.decode(proof) else {
            return failed("SCRAM proof is not base64");
        };
        let auth_message = format!("{auth_prefix},{without_proof}");
        let signature = self
            .scram
            .hmac(&credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != signature.len() {
            return failed(format!("SCRAM: wrong password for '{user}'"));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !constant_time_eq(&self.scram.hash(&client_key), &credential.stored_key) {
            return failed(format!("SCRAM: wrong password for '{user}'"));
        }
        let server_signature = self
            .scram
            .hmac(&credential.server_key, &[auth_message.as_bytes()]);
        Step::Done {
            principal: format!("User:{user}"),
            reply: format!("v={}", super::users::b64(&server_signature)).into_bytes(),
        }
    }
}

/// RFC 5802's saslname: "=2C" is ',' and "=3D" is '='; any other '=' is malformed.
fn sasl_name(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdown_doubles_up_to_five_seconds() {
        assert_eq!(slowdown_delay(0), Duration::ZERO);
        assert_eq!(slowdown_delay(1), Duration::from_millis(100));
        assert_eq!(slowdown_delay(2), Duration::from_millis(200));
        assert_eq!(slowdown_delay(6), Duration::from_millis(3200));
        assert_eq!(slowdown_delay(7), SLOWDOWN_MAX);
        assert_eq!(slowdown_delay(u32::MAX), SLOWDOWN_MAX);
    }

    #[test]
    fn slowdown_is_per_address_and_reset_by_success() {
        let s = Slowdown::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(s.admit(a), Admission::Now);
        s.failed(a);
        s.failed(a);
        match s.admit(a) {
            Admission::After(d) => assert!(d > Duration::from_millis(150), "{d:?}"),
            other => panic!("{other:?}"),
        }
        // A second attempt in parallel waits for its own turn after the first.
        match s.admit(a) {
            Admission::After(d) => assert!(d > Duration::from_millis(350), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.admit(b), Admission::Now);
        s.succeeded(a);
        assert_eq!(s.admit(a), Admission::Now);
        assert!(s.is_empty());
    }

    #[test]
    fn slowdown_counts_ipv6_by_prefix() {
        let s = Slowdown::default();
        s.failed("2001:db8::1".parse().unwrap());
        assert_ne!(s.admit("2001:db8::2".parse().unwrap()), Admission::Now);
        assert_eq!(s.admit("2001:db8:0:1::1".parse().unwrap()), Admission::Now);
        s.failed("::ffff:10.0.0.1".parse().unwrap());
        assert_ne!(s.admit("10.0.0.1".parse().unwrap()), Admission::Now);
    }

    #[test]
    fn slowdown_remembers_a_bounded_number_of_addresses() {
        let s = Slowdown::default();
        for i in 0..(SLOWDOWN_ADDRESSES as u32 + 10) {
            s.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        assert_eq!(s.len(), SLOWDOWN_ADDRESSES);
    }

    #[test]
    fn sasl_names() {
        assert_eq!(sasl_name("alice").as_deref(), Some("alice"));
        assert_eq!(sasl_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(sasl_name("a=b"), None);
        assert_eq!(sasl_name(""), None);
    }
}
