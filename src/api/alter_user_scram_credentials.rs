//! AlterUserScramCredentials (v0): sets (from a client-salted password) and deletes users'
//! SCRAM credentials while the box runs; needs ALTER on the cluster. Kafka's checks: iterations
//! 4096..=16384, a non-empty salt and salted password of the hash's length, one change per
//! user and mechanism per request.

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{cluster_allowed, errors, str_bytes, Call, KafkaApi, Operation, Pending};
use crate::services::users::{
    check_name, Credential, Mechanism, Scram, MAX_ITERATIONS, MIN_ITERATIONS,
};

/// AlterUserScramCredentials, declared for the API table.
pub struct AlterUserScramCredentials;

type Change = (String, Mechanism, Option<Credential>);

impl KafkaApi for AlterUserScramCredentials {
    const NAME: &'static str = "AlterUserScramCredentials";
    type Request = AlterUserScramCredentialsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 0;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: AlterUserScramCredentialsRequest) -> Pending {
        let names: Vec<String> = req
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(req.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
        let mut users: Vec<String> = Vec::new();
        for n in &names {
            if !users.contains(n) {
                users.push(n.clone());
            }
        }
        let result = |user: &str, code: Option<ResponseError>, msg: Option<String>| {
            AlterUserScramCredentialsResult::default()
                .with_user(str_bytes(user))
                .with_error_code(code.map_or(0, |c| c.code()))
                .with_error_message(msg.map(|m| str_bytes(&m)))
        };
        if !cluster_allowed(session, Operation::Alter) {
            let resp = AlterUserScramCredentialsResponse::default().with_results(
                users
                    .iter()
                    .map(|u| {
                        result(
                            u,
                            Some(ResponseError::ClusterAuthorizationFailed),
                            Some("AlterUserScramCredentials needs ALTER on the cluster".into()),
                        )
                    })
                    .collect(),
            );
            return call.ready(&resp);
        }
        // Per user: its changes, or why they are all refused.
        let mut errors_by_user: std::collections::HashMap<String, (ResponseError, String)> =
            Default::default();
        let mut changes: Vec<Change> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut refuse = |user: &str, code: ResponseError, msg: String| {
            errors_by_user
                .entry(user.to_string())
                .or_insert((code, msg));
        };
        for d in &req.deletions {
            let name = d.name.to_string();
            match Scram::from_kafka_type(d.mechanism) {
                None => refuse(
                    &name,
                    ResponseError::UnsupportedSaslMechanism,
                    format!("unknown SCRAM mechanism {}", d.mechanism),
                ),
                Some(s) => {
                    if !seen.insert((name.clone(), d.mechanism)) {
                        refuse(
                            &name,
                            ResponseError::DuplicateResource,
                            format!("more than one change for user {name} and {}", s.name()),
                        );
                    }
                    changes.push((name, mechanism(s), None));
                }
            }
        }
        for u in &req.upsertions {
            let name = u.name.to_string();
            let Some(s) = Scram::from_kafka_type(u.mechanism) else {
                refuse(
                    &name,
                    ResponseError::UnsupportedSaslMechanism,
                    format!("unknown SCRAM mechanism {}", u.mechanism),
                );
                continue;
            };
            if !seen.insert((name.clone(), u.mechanism)) {
                refuse(
                    &name,
                    ResponseError::DuplicateResource,
                    format!("more than one change for user {name} and {}", s.name()),
                );
                continue;
            }
            if let Err(e) = check_name(&name) {
                refuse(&name, ResponseError::UnacceptableCredential, e.to_string());
                continue;
            }
            let iterations = u.iterations;
            if iterations < MIN_ITERATIONS as i32 || iterations > MAX_ITERATIONS as i32 {
                refuse(&name, ResponseError::UnacceptableCredential, format!(
                    "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
                ));
                continue;
            }
            if u.salt.is_empty() || u.salt.len() > 1024 || u.salted_password.len() != s.output_len()
            {
                refuse(&name, ResponseError::UnacceptableCredential, format!(
                    "a {} credential needs a salt (1 to 1024 bytes) and a salted password of {} bytes",
                    s.name(),
                    s.output_len()
                ));
                continue;
            }
            let cred =
                Credential::from_salted(s, u.salt.to_vec(), iterations as u32, &u.salted_password);
            changes.push((name, mechanism(s), Some(cred)));
        }
        let users_svc = session.services.users.clone();
        let by = session.principal.clone();
        super::blocking(call, "AlterUserScramCredentials", move || {
            let mut results = Vec::new();
            let mut to_apply = Vec::new();
            for user in &users {
                if let Some((code, msg)) = errors_by_user.get(user) {
                    results.push(result(user, Some(*code), Some(msg.clone())));
                    continue;
                }
                let mine: Vec<Change> = changes.iter().filter(|c| c.0 == *user).cloned().collect();
                // Deleting a credential that does not exist is RESOURCE_NOT_FOUND, as in Kafka.
                let existing = users_svc.get(user).ok().flatten().unwrap_or_default();
                if let Some((_, m, _)) = mine
                    .iter()
                    .find(|(_, m, c)| c.is_none() && !existing.credentials.contains_key(m))
                {
                    results.push(result(
                        user,
                        Some(ResponseError::ResourceNotFound),
                        Some(format!(
                            "Attempt to delete a user credential that does not exist: {user} {}",
                            m.name()
                        )),
                    ));
                    continue;
                }
                to_apply.extend(mine);
                results.push(result(user, None, None));
            }
            if !to_apply.is_empty() {
                if let Err(e) = users_svc.apply(&to_apply) {
                    for r in results.iter_mut().filter(|r| r.error_code == 0) {
                        r.error_code = errors::code(&e).code();
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                } else {
                    for (u, m, c) in &to_apply {
                        tracing::info!(%by, user = %u, mechanism = m.name(), change = if c.is_some() { "set" } else { "deleted" }, "SCRAM credential changed");
                    }
                }
            }
            AlterUserScramCredentialsResponse::default().with_results(results)
        })
    }
}

fn mechanism(s: Scram) -> Mechanism {
    match s {
        Scram::Sha256 => Mechanism::ScramSha256,
        Scram::Sha512 => Mechanism::ScramSha512,
    }
}

const SCRAM_CREDENTIAL_DELETION: &[Field] = &[
    f(Ty::Str, 0, ALL), // name
    f(Ty::I8, 0, ALL),  // mechanism
];
const SCRAM_CREDENTIAL_UPSERTION: &[Field] = &[
    f(Ty::Str, 0, ALL),   // name
    f(Ty::I8, 0, ALL),    // mechanism
    f(Ty::I32, 0, ALL),   // iterations
    f(Ty::Bytes, 0, ALL), // salt
    f(Ty::Bytes, 0, ALL), // salted_password
];

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(SCRAM_CREDENTIAL_DELETION), 0, ALL), // deletions
        f(Ty::Array(SCRAM_CREDENTIAL_UPSERTION), 0, ALL), // upsertions
    ],
    0,
);

impl crate::api::ErrorCodes for AlterUserScramCredentialsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.results.iter().map(|r| r.error_code))
    }
}
