//! The Kafka API layer: one file per Kafka API. Each file declares its versions and the
//! precheck schema of its request next to its handler (a [`KafkaApi`] impl); [`APIS`] lists
//! them once, and ApiVersions, the decoder and the dispatch are all derived from that table.
//! Handlers translate between wire types and the domain services (`crate::services`); they hold
//! no domain logic of their own. Domain errors become Kafka error codes in [`errors`].

pub mod errors;

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod emulate;
pub mod end_txn;
pub mod faults;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod session;
pub mod sync_group;
pub mod txn_offset_commit;

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Message, Request, StrBytes};
use kafkabox_protocol::precheck::Schema;
use kafkabox_protocol::{DecodeError, RequestPrefix};
use kafkabox_storage::Topic;
use tracing::{debug, warn, Instrument};

pub use crate::services::acl::{Operation, ResourceType};
pub use session::{Auth, Session};

use crate::services::faults::Injection;
pub use crate::services::{LEADER_EPOCH, NODE_ID};

/// What a request turns into once handled.
#[derive(Debug)]
pub enum Reply {
    /// A response frame, size prefix included, and the first non-zero error code in it (0 if
    /// none), for the request metrics.
    Frame(BytesMut, i16),
    /// No response (acks=0 produce).
    Nothing,
    /// Close the connection (Kafka's answer to what it cannot parse, and to a failed acks=0
    /// produce).
    Close,
}

/// A response still being worked on (waiting for a flush, a long poll, a rebalance ...). The
/// listener awaits them in request order.
pub type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Wraps a finished reply.
pub fn ready(r: Reply) -> Pending {
    Box::pin(std::future::ready(r))
}

/// The header fields a handler needs to answer.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub correlation_id: i32,
    pub version: i16,
}

impl Call {
    /// Encodes a response; an encoding failure is a bug, logged, and closes the connection.
    pub fn respond<R: Encodable + HeaderVersion + ErrorCodes>(self, body: &R) -> Reply {
        match kafkabox_protocol::encode_response(self.correlation_id, self.version, body) {
            Ok(b) => Reply::Frame(b, body.first_error()),
            Err(e) => {
                tracing::error!(error = %e, "could not encode a response; closing the connection");
                Reply::Close
            }
        }
    }

    /// [`Call::respond`], already finished.
    pub fn ready<R: Encodable + HeaderVersion + ErrorCodes>(self, body: &R) -> Pending {
        ready(self.respond(body))
    }
}

/// The error codes of a response, for the request metrics (each API's file implements it for
/// its response type).
pub trait ErrorCodes {
    /// The first non-zero error code anywhere in the response, 0 when there is none.
    fn first_error(&self) -> i16;
}

/// The first non-zero code of `codes`, or 0.
pub fn first(codes: impl IntoIterator<Item = i16>) -> i16 {
    codes.into_iter().find(|c| *c != 0).unwrap_or(0)
}

/// [`ErrorCodes`] for a response whose error codes are per partition, under `topics`.
macro_rules! partition_error_codes {
    ($response:ty) => {
        impl $crate::api::ErrorCodes for $response {
            fn first_error(&self) -> i16 {
                $crate::api::first(
                    self.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code),
                )
            }
        }
    };
}
pub(crate) use partition_error_codes;

/// Kafka's name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`), `NONE` for 0 (borrowed: the
/// answer to nearly every request allocates nothing here).
pub fn error_name(code: i16) -> std::borrow::Cow<'static, str> {
    if code == 0 {
        return "NONE".into();
    }
    std::borrow::Cow::Owned(match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
        None => format!("CODE_{code}"),
    })
}

/// Runs blocking work (store writes, scans, batch decoding) off the runtime's threads and
/// answers with the response it builds; a failed task is logged and closes the connection.
pub fn blocking<R, F>(call: Call, what: &'static str, work: F) -> Pending
where
    R: Encodable + HeaderVersion + ErrorCodes + Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    Box::pin(async move {
        match tokio::task::spawn_blocking(work).await {
            Ok(resp) => call.respond(&resp),
            Err(e) => {
                tracing::error!(error = %e, "{what} task failed");
                Reply::Close
            }
        }
    })
}

/// One Kafka API: its request type (which fixes the API key), the versions kafkabox answers,
/// the schema its request bodies are walked with before decoding, and the handler.
pub trait KafkaApi {
    type Request: Request + Send + 'static;
    /// Lowest and highest version answered; within the crate's range (checked at compile time).
    const MIN: i16;
    const MAX: i16;
    /// Kafka's name of the API, e.g. `Produce`.
    const NAME: &'static str;
    /// The bounded pre-check of a request body (see `kafkabox_protocol::precheck`).
    const SCHEMA: Schema;
    /// Runs in request order, one request of a connection at a time, on a thread of the
    /// blocking pool (the listener's `spawn_blocking`, so it may touch sled); what waits (a
    /// flush, a long poll, a rebalance) goes into the returned future, which the listener
    /// awaits on the runtime.
    fn handle(session: &mut Session, call: Call, req: Self::Request) -> Pending;
    /// Whether [`KafkaApi::error_response`] answers (fault injection, `api::faults`).
    const TAKES_ERRORS: bool = false;
    /// The answer to `req` with error `code` wherever the API puts errors, the request not
    /// carried out (an injected fault). `None` when the API takes no injected errors.
    fn error_response(_call: Call, _req: &Self::Request, _code: i16) -> Option<Reply> {
        None
    }
}

/// A row of [`APIS`].
#[derive(Clone, Copy)]
pub struct ApiEntry {
    pub key: i16,
    /// Kafka's name of the API (`Produce`), for metrics and logs.
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    /// Whether an injected error can answer it.
    pub takes_errors: bool,
    run: fn(&mut Session, Call, Bytes, Option<i16>) -> Result<Pending, DecodeError>,
    decode: fn(i16, Bytes) -> Result<(), DecodeError>,
}

impl std::fmt::Debug for ApiEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiEntry({}, {}..={})", self.key, self.min, self.max)
    }
}

const fn entry<A: KafkaApi>() -> ApiEntry {
    let range = <A::Request as Message>::VERSIONS;
    assert!(A::MIN >= range.min && A::MAX <= range.max && A::MIN <= A::MAX);
    ApiEntry {
        key: <A::Request as Request>::KEY,
        name: A::NAME,
        min: A::MIN,
        max: A::MAX,
        takes_errors: A::TAKES_ERRORS,
        run: run::<A>,
        decode: decode::<A>,
    }
}

fn decode<A: KafkaApi>(version: i16, body: Bytes) -> Result<(), DecodeError> {
    let key = ApiKey::try_from(<A::Request as Request>::KEY)
        .map_err(|()| DecodeError::UnknownApiKey(<A::Request as Request>::KEY))?;
    kafkabox_protocol::decode_body::<A::Request>(key, &A::SCHEMA, body, version).map(|_| ())
}

/// Decodes a whole request frame exactly as [`dispatch`] does, without handling it (for the
/// fuzz targets).
pub fn decode_frame(frame: Bytes) -> Result<(), DecodeError> {
    let prefix = RequestPrefix::parse(&frame).ok_or(DecodeError::TooShort(frame.len()))?;
    let key = ApiKey::try_from(prefix.api_key)
        .map_err(|()| DecodeError::UnknownApiKey(prefix.api_key))?;
    let api = supported(prefix.api_key).ok_or(DecodeError::UnsupportedApi { key })?;
    if prefix.api_version < api.min || prefix.api_version > api.max {
        return Err(DecodeError::UnsupportedVersion {
            key,
            version: prefix.api_version,
            min: api.min,
            max: api.max,
        });
    }
    let framed = kafkabox_protocol::decode_header(frame, key)?;
    (api.decode)(prefix.api_version, framed.body)
}

/// Decodes the request and handles it, or answers it with `injected_error` (a fault).
fn run<A: KafkaApi>(
    session: &mut Session,
    call: Call,
    body: Bytes,
    injected_error: Option<i16>,
) -> Result<Pending, DecodeError> {
    let key = ApiKey::try_from(<A::Request as Request>::KEY)
        .map_err(|()| DecodeError::UnknownApiKey(<A::Request as Request>::KEY))?;
    let req = kafkabox_protocol::decode_body::<A::Request>(key, &A::SCHEMA, body, call.version)?;
    if let Some(code) = injected_error {
        if let Some(reply) = A::error_response(call, &req, code) {
            return Ok(ready(reply));
        }
    }
    Ok(A::handle(session, call, req))
}

/// Every API kafkabox answers: ApiVersions advertises exactly this table.
pub static APIS: &[ApiEntry] = &[
    entry::<produce::Produce>(),
    entry::<fetch::Fetch>(),
    entry::<list_offsets::ListOffsets>(),
    entry::<metadata::Metadata>(),
    entry::<offset_commit::OffsetCommit>(),
    entry::<offset_fetch::OffsetFetch>(),
    entry::<find_coordinator::FindCoordinator>(),
    entry::<join_group::JoinGroup>(),
    entry::<heartbeat::Heartbeat>(),
    entry::<leave_group::LeaveGroup>(),
    entry::<sync_group::SyncGroup>(),
    entry::<describe_groups::DescribeGroups>(),
    entry::<list_groups::ListGroups>(),
    entry::<sasl_handshake::SaslHandshake>(),
    entry::<api_versions::ApiVersions>(),
    entry::<create_topics::CreateTopics>(),
    entry::<delete_topics::DeleteTopics>(),
    entry::<delete_records::DeleteRecords>(),
    entry::<init_producer_id::InitProducerId>(),
    entry::<offset_for_leader_epoch::OffsetForLeaderEpoch>(),
    entry::<add_partitions_to_txn::AddPartitionsToTxn>(),
    entry::<add_offsets_to_txn::AddOffsetsToTxn>(),
    entry::<end_txn::EndTxn>(),
    entry::<txn_offset_commit::TxnOffsetCommit>(),
    entry::<describe_acls::DescribeAcls>(),
    entry::<create_acls::CreateAcls>(),
    entry::<delete_acls::DeleteAcls>(),
    entry::<describe_configs::DescribeConfigs>(),
    entry::<alter_configs::AlterConfigs>(),
    entry::<create_partitions::CreatePartitions>(),
    entry::<delete_groups::DeleteGroups>(),
    entry::<incremental_alter_configs::IncrementalAlterConfigs>(),
    entry::<offset_delete::OffsetDelete>(),
    entry::<describe_log_dirs::DescribeLogDirs>(),
    entry::<sasl_authenticate::SaslAuthenticate>(),
    entry::<describe_user_scram_credentials::DescribeUserScramCredentials>(),
    entry::<alter_user_scram_credentials::AlterUserScramCredentials>(),
    entry::<describe_cluster::DescribeCluster>(),
    entry::<describe_producers::DescribeProducers>(),
    entry::<describe_transactions::DescribeTransactions>(),
    entry::<list_transactions::ListTransactions>(),
    entry::<consumer_group_heartbeat::ConsumerGroupHeartbeat>(),
    entry::<consumer_group_describe::ConsumerGroupDescribe>(),
];

/// The row of an API key, if kafkabox answers it.
pub fn supported(key: i16) -> Option<&'static ApiEntry> {
    APIS.iter().find(|a| a.key == key)
}

/// Decodes a frame and runs the synchronous part of its handler, in arrival order. Returns the
/// pending response and whether to close the connection after it.
pub fn dispatch(session: &mut Session, frame: Bytes) -> (Pending, bool) {
    let prefix = RequestPrefix::parse(&frame);
    if !session.authenticated() {
        // Before SASL authentication only ApiVersions, SaslHandshake and SaslAuthenticate are
        // answered; Kafka closes the connection on anything else.
        let key = prefix.map(|p| p.api_key);
        let allowed = [
            ApiKey::ApiVersions as i16,
            ApiKey::SaslHandshake as i16,
            ApiKey::SaslAuthenticate as i16,
        ];
        if !key.is_some_and(|k| allowed.contains(&k)) {
            debug!(
                api_key = key,
                "request before SASL authentication; closing the connection as Kafka does"
            );
            return (ready(Reply::Close), true);
        }
    }
    match decode_and_run(session, frame) {
        Ok(out) => out,
        Err(DecodeError::UnsupportedVersion {
            key: ApiKey::ApiVersions,
            version,
            ..
        }) => {
            let correlation_id = prefix.map(|p| p.correlation_id).unwrap_or(0);
            debug!(
                version,
                "ApiVersions at an unsupported version; answering v0 UNSUPPORTED_VERSION"
            );
            let range = session
                .apis
                .range(ApiKey::ApiVersions as i16)
                .unwrap_or((0, 0));
            (
                ready(Reply::Frame(
                    kafkabox_protocol::api_versions_fallback(correlation_id, range),
                    kafka_protocol::ResponseError::UnsupportedVersion.code(),
                )),
                false,
            )
        }
        Err(e) => {
            warn!(
                api_key = prefix.map(|p| p.api_key),
                api_version = prefix.map(|p| p.api_version),
                correlation_id = prefix.map(|p| p.correlation_id),
                error = %e,
                "cannot handle request; closing the connection as Kafka does"
            );
            (ready(Reply::Close), true)
        }
    }
}

/// The pending answer, and whether the connection closes after it (an injected disconnect).
fn decode_and_run(session: &mut Session, frame: Bytes) -> Result<(Pending, bool), DecodeError> {
    let prefix = RequestPrefix::parse(&frame).ok_or(DecodeError::TooShort(frame.len()))?;
    let key = ApiKey::try_from(prefix.api_key)
        .map_err(|()| DecodeError::UnknownApiKey(prefix.api_key))?;
    let api = supported(prefix.api_key).ok_or(DecodeError::UnsupportedApi { key })?;
    // What ApiVersions advertised (all of `api`'s versions, or an emulated release's part).
    let (min, max) = session
        .apis
        .range(prefix.api_key)
        .ok_or(DecodeError::UnsupportedApi { key })?;
    let version = prefix.api_version;
    if version < min || version > max {
        return Err(DecodeError::UnsupportedVersion {
            key,
            version,
            min,
            max,
        });
    }
    let framed = kafkabox_protocol::decode_header(frame, key)?;
    if let Some(c) = framed.client_id {
        if c != session.client_id {
            session.client_id = c;
        }
    }
    session.requests += 1;
    let span = tracing::debug_span!(
        "request",
        api_key = ?key,
        api_version = version,
        correlation_id = prefix.correlation_id,
        client_id = %session.client_id
    );
    let _enter = span.enter();
    let call = Call {
        correlation_id: prefix.correlation_id,
        version,
    };
    let injection = session.services.faults.on_request(api.key, api.name);
    let injected_error = match injection {
        Some(Injection::Error(code)) => Some(code),
        _ => None,
    };
    let mut pending = (api.run)(session, call, framed.body, injected_error)?;
    let mut close = false;
    match injection {
        Some(Injection::Latency(d)) => {
            pending = Box::pin(async move {
                let reply = pending.await;
                tokio::time::sleep(d).await;
                reply
            });
        }
        Some(Injection::Stall) => {
            let mut released = session.services.faults.released();
            let mut shutdown = session.services.shutdown.clone();
            pending = Box::pin(async move {
                let reply = pending.await;
                tokio::select! {
                    _ = released.changed() => {}
                    _ = shutdown.changed() => {}
                }
                reply
            });
        }
        Some(Injection::Disconnect) => {
            // Carried out, never answered: the acknowledgement is lost.
            pending = Box::pin(async move {
                let _ = pending.await;
                Reply::Close
            });
            close = true;
        }
        Some(Injection::Error(_)) | None => {}
    }
    let metrics = session.services.metrics.clone();
    let (name, started) = (api.name, std::time::Instant::now());
    Ok((
        Box::pin(
            async move {
                let reply = pending.await;
                let error = match &reply {
                    Reply::Frame(_, code) => error_name(*code),
                    Reply::Nothing => "NONE".into(),
                    Reply::Close => "CONNECTION_CLOSED".into(),
                };
                metrics.request(name, error, started.elapsed().as_secs_f64());
                reply
            }
            .instrument(span.clone()),
        ) as Pending,
        close,
    ))
}

/// Whether the session's principal may do `op` on a resource (always, unless ACLs are
/// enforced); a refusal is counted and logged at debug.
pub fn allowed(session: &Session, op: Operation, resource: ResourceType, name: &str) -> bool {
    // Without an authorizer (the default) this is on every Produce and Fetch: no allocation.
    !session.services.acl.enabled() || Access::of(session).allowed(op, resource, name)
}

/// Who a request is from, for ACL checks made where the session is not at hand (in a
/// handler's future or blocking job).
#[derive(Debug, Clone)]
pub struct Access {
    services: std::sync::Arc<crate::services::Services>,
    principal: String,
    host: std::net::IpAddr,
}

impl Access {
    pub fn of(session: &Session) -> Access {
        Access {
            services: session.services.clone(),
            principal: session.principal.clone(),
            host: session.peer.ip(),
        }
    }

    /// [`allowed`]: a refusal is counted and logged.
    pub fn allowed(&self, op: Operation, resource: ResourceType, name: &str) -> bool {
        let ok = self
            .services
            .acl
            .authorize(&self.principal, self.host, op, resource, name);
        if !ok {
            self.denied(op, resource, name);
        }
        ok
    }

    /// Whether allowed, without counting a refusal (KIP-430 authorized operations, filters).
    pub fn may(&self, op: Operation, resource: ResourceType, name: &str) -> bool {
        self.services
            .acl
            .authorize(&self.principal, self.host, op, resource, name)
    }

    /// KIP-430's authorized operations of a resource, as bits of operation codes.
    pub fn operations(&self, resource: ResourceType, name: &str, ops: &[Operation]) -> i32 {
        ops.iter()
            .filter(|op| self.may(**op, resource, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    fn denied(&self, op: Operation, resource: ResourceType, name: &str) {
        self.services
            .metrics
            .authorization_denied
            .get_or_create(&crate::services::metrics::DeniedLabels {
                resource: resource.name(),
            })
            .inc();
        debug!(
            principal = %self.principal,
            operation = op.name(),
            resource = resource.name(),
            name = %crate::services::truncate(name, 256),
            "denied by the ACLs"
        );
    }
}

/// `Some(GROUP_AUTHORIZATION_FAILED)` when the session may not do `op` on group `group`: the
/// top-level error code of a group request's answer.
pub fn group_refused(session: &Session, op: Operation, group: &str) -> Option<i16> {
    (!allowed(session, op, ResourceType::Group, group))
        .then(|| kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
}

/// [`allowed`] on the cluster resource.
pub fn cluster_allowed(session: &Session, op: Operation) -> bool {
    allowed(
        session,
        op,
        ResourceType::Cluster,
        crate::services::acl::CLUSTER_NAME,
    )
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub fn topic_uuid(t: &Topic) -> uuid::Uuid {
    uuid::Uuid::from_bytes(t.meta.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_key() {
        let mut keys: Vec<i16> = APIS.iter().map(|a| a.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), APIS.len());
    }
}
