//! DescribeAcls (v1-3): the ACL bindings matching a filter, grouped by resource; needs
//! DESCRIBE on the cluster.

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::ResponseError;
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::Session;
use super::{cluster_allowed, errors, str_bytes, Call, KafkaApi, Operation, Pending};
use crate::services::acl::{AclFilter, PatternType, Permission, ResourceType};

/// DescribeAcls, declared for the API table.
pub struct DescribeAcls;

impl KafkaApi for DescribeAcls {
    const NAME: &'static str = "DescribeAcls";
    type Request = DescribeAclsRequest;
    const MIN: i16 = 1;
    const MAX: i16 = 3;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeAclsRequest) -> Pending {
        let mut resp = DescribeAclsResponse::default();
        if !cluster_allowed(session, Operation::Describe) {
            resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
            resp.error_message = Some(str_bytes("DescribeAcls needs DESCRIBE on the cluster"));
            return call.ready(&resp);
        }
        let filter = filter(
            req.resource_type_filter,
            req.resource_name_filter.as_ref().map(|s| s.to_string()),
            req.pattern_type_filter,
            req.principal_filter.as_ref().map(|s| s.to_string()),
            req.host_filter.as_ref().map(|s| s.to_string()),
            req.operation,
            req.permission_type,
        );
        let Some(filter) = filter else {
            resp.error_code = ResponseError::InvalidRequest.code();
            resp.error_message = Some(str_bytes(
                "unknown resource type, pattern type, operation or permission code in the filter",
            ));
            return call.ready(&resp);
        };
        match session.services.acl.describe(&filter) {
            Ok(acls) => {
                let mut resources: Vec<DescribeAclsResource> = Vec::new();
                for a in acls {
                    let desc = AclDescription::default()
                        .with_principal(str_bytes(&a.principal))
                        .with_host(str_bytes(&a.host))
                        .with_operation(a.operation.code())
                        .with_permission_type(a.permission.code());
                    match resources.iter_mut().find(|r| {
                        r.resource_type == a.resource_type.code()
                            && r.resource_name.as_str() == a.resource_name
                            && r.pattern_type == a.pattern.code()
                    }) {
                        Some(r) => r.acls.push(desc),
                        None => resources.push(
                            DescribeAclsResource::default()
                                .with_resource_type(a.resource_type.code())
                                .with_resource_name(str_bytes(&a.resource_name))
                                .with_pattern_type(a.pattern.code())
                                .with_acls(vec![desc]),
                        ),
                    }
                }
                resp.resources = resources;
            }
            Err(e) => {
                resp.error_code = errors::code(&e).code();
                resp.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        call.ready(&resp)
    }
}

/// A filter from its wire fields; `None` when a code is unknown.
pub fn filter(
    resource_type: i8,
    name: Option<String>,
    pattern: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
) -> Option<AclFilter> {
    Some(AclFilter {
        resource_type: ResourceType::from_code(resource_type)?,
        resource_name: name,
        pattern: PatternType::from_code(pattern)?,
        principal,
        host,
        operation: Operation::from_code(operation)?,
        permission: Permission::from_code(permission)?,
    })
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::I8, 0, ALL),  // resource_type_filter
        f(Ty::Str, 0, ALL), // resource_name_filter
        f(Ty::I8, 0, ALL),  // pattern_type_filter
        f(Ty::Str, 0, ALL), // principal_filter
        f(Ty::Str, 0, ALL), // host_filter
        f(Ty::I8, 0, ALL),  // operation
        f(Ty::I8, 0, ALL),  // permission_type
    ],
    2,
);

impl crate::api::ErrorCodes for DescribeAclsResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
