//! DeleteGroups (v0-2): removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::Session;
use super::{errors, Call, KafkaApi, Pending, Reply};

/// DeleteGroups, declared for the API table.
pub struct DeleteGroups;

impl KafkaApi for DeleteGroups {
    const NAME: &'static str = "DeleteGroups";
    type Request = DeleteGroupsRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 2;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DeleteGroupsRequest) -> Pending {
        let groups = session.services.groups.clone();
        let services = session.services.clone();
        let access = super::Access::of(session);
        Box::pin(async move {
            let job = tokio::task::spawn_blocking(move || {
                req.groups_names
                    .iter()
                    .map(|id| {
                        if !access.allowed(
                            super::Operation::Delete,
                            super::ResourceType::Group,
                            id.0.as_str(),
                        ) {
                            return DeletableGroupResult::default()
                                .with_group_id(id.clone())
                                .with_error_code(
                                    kafka_protocol::ResponseError::GroupAuthorizationFailed.code(),
                                );
                        }
                        let code = match groups.delete(id.0.as_str()) {
                            Ok(()) => 0,
                            Err(e) => errors::code(&e).code(),
                        };
                        DeletableGroupResult::default()
                            .with_group_id(id.clone())
                            .with_error_code(code)
                    })
                    .collect::<Vec<_>>()
            });
            match job.await {
                Ok(mut results) => {
                    if let Err(e) = services.groups.records_durable().await {
                        let code = errors::storage(&e).code();
                        for r in results.iter_mut().filter(|r| r.error_code == 0) {
                            r.error_code = code;
                        }
                    }
                    call.respond(&DeleteGroupsResponse::default().with_results(results))
                }
                Err(e) => {
                    tracing::error!(error = %e, "DeleteGroups task failed");
                    Reply::Close
                }
            }
        })
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::ArrayStr, 0, ALL), // groups_names
    ],
    2,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::DeleteGroupsResponse {
    fn first_error(&self) -> i16 {
        crate::api::first(self.results.iter().map(|r| r.error_code))
    }
}
