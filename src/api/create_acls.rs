//! CreateAcls (v1-3): adds ACL bindings (`services::acl`); needs ALTER on the cluster.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{cluster_allowed, errors, str_bytes, Call, KafkaApi, Operation, Pending};
use crate::services::acl::{Acl, PatternType, Permission, ResourceType};
use crate::services::Error;

/// CreateAcls, declared for the API table.
pub struct CreateAcls;

impl KafkaApi for CreateAcls {
    const NAME: &'static str = "CreateAcls";
    type Request = CreateAclsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 3;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: CreateAclsRequest) -> Pending {
        let fail = |code: ResponseError, msg: &str| {
            CreateAclsResponse::default().with_results(
                req.creations
                    .iter()
                    .map(|_| {
                        AclCreationResult::default()
                            .with_error_code(code.code())
                            .with_error_message(Some(str_bytes(msg)))
                    })
                    .collect(),
            )
        };
        if !cluster_allowed(session, Operation::Alter) {
            return call.ready(&fail(
                ResponseError::ClusterAuthorizationFailed,
                "CreateAcls needs ALTER on the cluster",
            ));
        }
        let mut acls = Vec::with_capacity(req.creations.len());
        let mut bad = Vec::new();
        for (i, c) in req.creations.iter().enumerate() {
            let parsed = (|| {
                Some(Acl {
                    resource_type: ResourceType::from_code(c.resource_type)?,
                    resource_name: c.resource_name.to_string(),
                    pattern: PatternType::from_code(c.resource_pattern_type)?,
                    principal: c.principal.to_string(),
                    host: c.host.to_string(),
                    operation: Operation::from_code(c.operation)?,
                    permission: Permission::from_code(c.permission_type)?,
                })
            })();
            match parsed {
                Some(a) => acls.push((i, a)),
                None => bad.push(i),
            }
        }
        let services = session.services.clone();
        let n = req.creations.len();
        let principal = session.principal.clone();
        super::blocking(call, "CreateAcls", move || {
            let mut results: Vec<AclCreationResult> = vec![AclCreationResult::default(); n];
            for i in bad {
                results[i] = AclCreationResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "unknown resource type, pattern type, operation or permission code",
                    )));
            }
            let (idx, list): (Vec<usize>, Vec<Acl>) = acls.into_iter().unzip();
            match services.acl.create(list.clone()) {
                Ok(outcomes) => {
                    for ((i, a), r) in idx.into_iter().zip(list).zip(outcomes) {
                        results[i] = match r {
                            Ok(()) => {
                                tracing::info!(by = %principal, acl = ?a, "ACL created");
                                AclCreationResult::default()
                            }
                            Err(e) => error_result(&e),
                        };
                    }
                }
                Err(e) => {
                    for i in idx {
                        results[i] = error_result(&e);
                    }
                }
            }
            CreateAclsResponse::default().with_results(results)
        })
    }
}

fn error_result(e: &Error) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(errors::code(e).code())
        .with_error_message(Some(str_bytes(&e.to_string())))
}

const ACL_CREATION: &[Field] = &[
    f(Ty::I8, 0, ALL),  // resource_type
    f(Ty::Str, 0, ALL), // resource_name
    f(Ty::I8, 0, ALL),  // resource_pattern_type
    f(Ty::Str, 0, ALL), // principal
    f(Ty::Str, 0, ALL), // host
    f(Ty::I8, 0, ALL),  // operation
    f(Ty::I8, 0, ALL),  // permission_type
];

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(ACL_CREATION), 0, ALL), // creations
    ],
    2,
);

impl crate::api::ErrorCodes for CreateAclsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.results.iter().map(|r| r.error_code))
    }
}
