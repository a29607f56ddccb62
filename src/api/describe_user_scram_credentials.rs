//! DescribeUserScramCredentials (v0): each user's SCRAM mechanisms and iteration counts (never
//! a salt or key); needs DESCRIBE on the cluster.

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{cluster_allowed, errors, str_bytes, Call, KafkaApi, Operation, Pending};
use crate::services::users::{Mechanism, User};

/// DescribeUserScramCredentials, declared for the API table.
pub struct DescribeUserScramCredentials;

impl KafkaApi for DescribeUserScramCredentials {
    const NAME: &'static str = "DescribeUserScramCredentials";
    type Request = DescribeUserScramCredentialsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 0;
    const SCHEMA: Schema = SCHEMA;

    fn handle(
        session: &mut Session,
        call: Call,
        req: DescribeUserScramCredentialsRequest,
    ) -> Pending {
        let mut resp = DescribeUserScramCredentialsResponse::default();
        if !cluster_allowed(session, Operation::Describe) {
            resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
            resp.error_message = Some(str_bytes(
                "DescribeUserScramCredentials needs DESCRIBE on the cluster",
            ));
            return call.ready(&resp);
        }
        let users = &session.services.users;
        let infos = |u: &User| -> Vec<CredentialInfo> {
            u.credentials
                .iter()
                .filter(|(m, _)| **m != Mechanism::Plain)
                .map(|(m, c)| {
                    CredentialInfo::default()
                        .with_mechanism(m.scram().kafka_type())
                        .with_iterations(c.iterations as i32)
                })
                .collect()
        };
        // Null or empty: every user (Kafka's rule).
        match req.users.as_ref().filter(|u| !u.is_empty()) {
            None => match users.list() {
                Ok(all) => {
                    resp.results = all
                        .iter()
                        .filter(|(_, u)| !infos(u).is_empty())
                        .map(|(n, u)| {
                            DescribeUserScramCredentialsResult::default()
                                .with_user(str_bytes(n))
                                .with_credential_infos(infos(u))
                        })
                        .collect()
                }
                Err(e) => {
                    resp.error_code = errors::code(&e).code();
                    resp.error_message = Some(str_bytes(&e.to_string()));
                }
            },
            Some(names) => {
                let mut seen = std::collections::HashSet::new();
                for n in names {
                    let name = n.name.as_str();
                    let mut r =
                        DescribeUserScramCredentialsResult::default().with_user(n.name.clone());
                    if !seen.insert(name) {
                        r.error_code = ResponseError::DuplicateResource.code();
                        r.error_message = Some(str_bytes(&format!("user {name} asked for twice")));
                    } else {
                        match users.get(name) {
                            Ok(Some(u)) if !infos(&u).is_empty() => r.credential_infos = infos(&u),
                            Ok(_) => {
                                r.error_code = ResponseError::ResourceNotFound.code();
                                r.error_message = Some(str_bytes(&format!(
                                    "Attempt to describe a user credential that does not exist: {name}"
                                )));
                            }
                            Err(e) => {
                                r.error_code = errors::code(&e).code();
                                r.error_message = Some(str_bytes(&e.to_string()));
                            }
                        }
                    }
                    resp.results.push(r);
                }
            }
        }
        call.ready(&resp)
    }
}

const USER_NAME: &[Field] = &[
    f(Ty::Str, 0, ALL), // name
];

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(USER_NAME), 0, ALL), // users
    ],
    0,
);

impl crate::api::ErrorCodes for DescribeUserScramCredentialsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(
            std::iter::once(self.error_code).chain(self.results.iter().map(|r| r.error_code)),
        )
    }
}
