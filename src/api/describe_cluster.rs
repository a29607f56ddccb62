//! DescribeCluster (v0-2): one broker, also the controller; authorized operations (KIP-430)
//! when asked.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafkabox_protocol::precheck::{f, Schema, Ty, ALL};

use super::metadata::CLUSTER_OPERATIONS;
use super::Session;
use super::{str_bytes, Call, KafkaApi, Pending, NODE_ID};

/// DescribeCluster, declared for the API table.
pub struct DescribeCluster;

impl KafkaApi for DescribeCluster {
    const NAME: &'static str = "DescribeCluster";
    type Request = DescribeClusterRequest;
    const MIN: i16 = 0;
    const MAX: i16 = 2;
    const SCHEMA: Schema = SCHEMA;

    fn handle(session: &mut Session, call: Call, req: DescribeClusterRequest) -> Pending {
        if !super::cluster_allowed(session, super::Operation::Describe) {
            let resp = DescribeClusterResponse::default()
                .with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(str_bytes(
                    "DescribeCluster needs DESCRIBE on the cluster",
                )));
            return call.ready(&resp);
        }
        let (host, port) = session.advertised();
        let mut resp = DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(session.services.cluster_id()))
            .with_controller_id(BrokerId(NODE_ID))
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(NODE_ID))
                .with_host(str_bytes(&host))
                .with_port(i32::from(port))]);
        if call.version >= 1 {
            resp.endpoint_type = req.endpoint_type;
        }
        if req.include_cluster_authorized_operations {
            resp.cluster_authorized_operations = super::Access::of(session).operations(
                super::ResourceType::Cluster,
                crate::services::acl::CLUSTER_NAME,
                CLUSTER_OPERATIONS,
            );
        }
        call.ready(&resp)
    }
}

const SCHEMA: Schema = Schema::new(
    &[
        f(Ty::I8, 0, ALL), // include_cluster_authorized_operations
        f(Ty::I8, 1, ALL), // endpoint_type
        f(Ty::I8, 2, ALL), // include_fenced_brokers
    ],
    0,
);

impl crate::api::ErrorCodes for kafka_protocol::messages::DescribeClusterResponse {
    fn first_error(&self) -> i16 {
        self.error_code
    }
}
