//! DeleteAcls (v1-3): removes the ACL bindings matching each filter and says which; needs
//! ALTER on the cluster.

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Field, Schema, Ty, ALL};

use super::Session;
use super::{cluster_allowed, errors, str_bytes, Call, KafkaApi, Operation, Pending};

/// DeleteAcls, declared for the API table.
pub struct DeleteAcls;

impl KafkaApi for DeleteAcls {
    const NAME: &'static str = "DeleteAcls";
    type Request = DeleteAclsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 3;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DeleteAclsRequest) -> Pending {
        let fail = |code: ResponseError, msg: &str| {
            DeleteAclsResponse::default().with_filter_results(
                req.filters
                    .iter()
                    .map(|_| {
                        DeleteAclsFilterResult::default()
                            .with_error_code(code.code())
                            .with_error_message(Some(str_bytes(msg)))
                    })
                    .collect(),
            )
        };
        if !cluster_allowed(session, Operation::Alter) {
            return call.ready(&fail(
                ResponseError::ClusterAuthorizationFailed,
                "DeleteAcls needs ALTER on the cluster",
            ));
        }
        let mut filters = Vec::new();
        for fl in &req.filters {
            match super::describe_acls::filter(
                fl.resource_type_filter,
                fl.resource_name_filter.as_ref().map(|s| s.to_string()),
                fl.pattern_type_filter,
                fl.principal_filter.as_ref().map(|s| s.to_string()),
                fl.host_filter.as_ref().map(|s| s.to_string()),
                fl.operation,
                fl.permission_type,
            ) {
                Some(x) => filters.push(x),
                None => return call.ready(&fail(
                    ResponseError::InvalidRequest,
                    "unknown resource type, pattern type, operation or permission code in a filter",
                )),
            }
        }
        let services = session.services.clone();
        let principal = session.principal.clone();
        super::blocking(call, "DeleteAcls", move || {
            match services.acl.delete(&filters) {
                Ok(removed) => DeleteAclsResponse::default().with_filter_results(
                    removed
                        .into_iter()
                        .map(|acls| {
                            for a in &acls {
                                tracing::info!(by = %principal, acl = ?a, "ACL deleted");
                            }
                            DeleteAclsFilterResult::default().with_matching_acls(
                                acls.into_iter()
                                    .map(|a| {
                                        DeleteAclsMatchingAcl::default()
                                            .with_resource_type(a.resource_type.code())
                                            .with_resource_name(str_bytes(&a.resource_name))
                                            .with_pattern_type(a.pattern.code())
                                            .with_principal(str_bytes(&a.principal))
                                            .with_host(str_bytes(&a.host))
                                            .with_operation(a.operation.code())
                                            .with_permission_type(a.permission.code())
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
                Err(e) => DeleteAclsResponse::default().with_filter_results(
                    filters
                        .iter()
                        .map(|_| {
                            DeleteAclsFilterResult::default()
                                .with_error_code(errors::code(&e).code())
                                .with_error_message(Some(str_bytes(&e.to_string())))
                        })
                        .collect(),
                ),
            }
        })
    }
}

const DELETE_ACLS_FILTER: &[Field] = &[
    f(Ty::I8, 0, ALL),  // resource_type_filter
    f(Ty::Str, 0, ALL), // resource_name_filter
    f(Ty::I8, 0, ALL),  // pattern_type_filter
    f(Ty::Str, 0, ALL), // principal_filter
    f(Ty::Str, 0, ALL), // host_filter
    f(Ty::I8, 0, ALL),  // operation
    f(Ty::I8, 0, ALL),  // permission_type
];

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::Array(DELETE_ACLS_FILTER), 0, ALL), // filters
    ],
    2,
);

impl crate::api::ErrorCodes for DeleteAclsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.filter_results.iter().map(|r| r.error_code))
    }
}
