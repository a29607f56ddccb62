//! The server side of SASL PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, 7677) over the
//! stored users ([`super::users`]). Bytes in, bytes out: the Kafka API layer carries them in
//! SaslAuthenticate.

use ring::rand::SecureRandom;

use super::users::{constant_time_eq, Credential, Mechanism, Scram, Users};

/// Kafka's message for every failed authentication (the same for an unknown user and a wrong
/// password, so the answer does not tell which users exist).
pub fn failure_message(mechanism: &str) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )
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
        Ok(true) => Step::Done {
            principal: format!("User:{user}"),
            reply: Vec::new(),
        },
        Ok(false) => failed(format!(
            "PLAIN: unknown user or wrong password for '{user}'"
        )),
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
                credential,
                auth_prefix,
                nonce,
                gs2_header,
            } => self.client_final(text, &user, &credential, &auth_prefix, &nonce, &gs2_header),
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
                Some(("tokenauth", v)) if v == "true" => {
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
        let credential = match users.get(&user) {
            Ok(Some(u)) => match u.credentials.get(&mech) {
                Some(c) => c.clone(),
                None => {
                    return failed(format!(
                        "SCRAM: user '{user}' has no {} credential",
                        self.scram.name()
                    ))
                }
            },
            Ok(None) => return failed(format!("SCRAM: unknown user '{user}'")),
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
    fn sasl_names() {
        assert_eq!(sasl_name("alice").as_deref(), Some("alice"));
        assert_eq!(sasl_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(sasl_name("a=b"), None);
        assert_eq!(sasl_name(""), None);
    }
}
