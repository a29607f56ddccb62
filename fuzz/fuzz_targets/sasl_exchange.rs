//! The server side of SASL (PLAIN, SCRAM-SHA-256/512) fed hostile client messages: no input
//! may panic, and none may authenticate without the password. The first byte picks the
//! mechanism; messages are separated by 0xFF; `%N` in a later message is replaced by the nonce
//! of the server's last challenge, so the fuzzer reaches the proof check of SCRAM's final
//! message.
#![no_main]

use std::sync::OnceLock;

use kafkabox::services::sasl::{Exchange, Step};
use kafkabox::services::users::{Credential, Mechanism, Users};
use kafkabox_storage::{Store, StoreConfig};
use libfuzzer_sys::fuzz_target;

fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kafkabox-fuzz-sasl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = StoreConfig::new(&dir);
        config.min_free_bytes = 0;
        let store = Store::open(config).expect("store");
        let users = Users::new(store);
        let mut changes = Vec::new();
        for m in [Mechanism::ScramSha256, Mechanism::ScramSha512, Mechanism::Plain] {
            let c = Credential::new(m.scram(), "the-password", 4096).expect("credential");
            changes.push(("alice".to_string(), m, Some(c)));
        }
        users.apply(&changes).expect("user");
        users
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mechanism = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"][pick as usize % 3];
    let mut exchange = Exchange::new(mechanism).expect("a mechanism kafkabox implements");
    let mut nonce = String::new();
    for message in rest.split(|b| *b == 0xff).take(4) {
        let mut msg = message.to_vec();
        if let Some(i) = msg.windows(2).position(|w| w == b"%N") {
            msg.splice(i..i + 2, nonce.bytes());
        }
        match exchange.step(users(), &msg) {
            Step::Continue(challenge) => {
                let text = String::from_utf8(challenge).expect("challenges are text");
                nonce = text
                    .split(',')
                    .find_map(|a| a.strip_prefix("r="))
                    .unwrap_or_default()
                    .to_string();
            }
            Step::Done { principal, .. } => {
                // Only the right password authenticates (PLAIN carries it in the clear).
                assert_eq!(principal, "User:alice");
                if mechanism == "PLAIN" {
                    assert!(msg.ends_with(b"\0the-password"), "{:?}", String::from_utf8_lossy(&msg));
                }
                return;
            }
            Step::Failed { .. } => return,
        }
    }
});
