//! Domain and storage errors as Kafka error codes: the one place where they are mapped.

use kafka_protocol::ResponseError;
use kafkabox_storage::{AppendError, StoreError};

use crate::services::produce::ProduceError;
use crate::services::Error;

/// Kafka's error code for a domain error.
pub fn code(e: &Error) -> ResponseError {
    use ResponseError as R;
    match e {
        Error::InvalidTopic(_) => R::InvalidTopicException,
        Error::TopicExists(_) => R::TopicAlreadyExists,
        Error::UnknownTopic(_) | Error::UnknownTopicOrPartition(_) => R::UnknownTopicOrPartition,
        Error::InvalidPartitions(_) => R::InvalidPartitions,
        Error::InvalidReplicationFactor(_) => R::InvalidReplicationFactor,
        Error::InvalidReplicaAssignment(_) => R::InvalidReplicaAssignment,
        Error::InvalidConfig(_) => R::InvalidConfig,
        Error::InvalidRequest(_) => R::InvalidRequest,
        Error::OffsetOutOfRange(_) => R::OffsetOutOfRange,
        Error::PolicyViolation(_) => R::PolicyViolation,
        Error::InvalidGroupId(_) => R::InvalidGroupId,
        Error::GroupIdNotFound(_) => R::GroupIdNotFound,
        Error::NonEmptyGroup(_) => R::NonEmptyGroup,
        Error::GroupAuthorization(_) => R::GroupAuthorizationFailed,
        Error::UnknownMemberId(_) => R::UnknownMemberId,
        Error::MemberIdRequired(_) => R::MemberIdRequired,
        Error::IllegalGeneration { .. } => R::IllegalGeneration,
        Error::RebalanceInProgress => R::RebalanceInProgress,
        Error::InconsistentGroupProtocol(_) => R::InconsistentGroupProtocol,
        Error::InvalidSessionTimeout(_) => R::InvalidSessionTimeout,
        Error::FencedInstanceId(_) => R::FencedInstanceId,
        Error::GroupMaxSizeReached(_) => R::GroupMaxSizeReached,
        // Kafka has no bound on the number of groups, so no code of its own. INVALID_GROUP_ID
        // is an answer every group API (JoinGroup, OffsetCommit, ...) may give, and clients
        // treat it as fatal: the application hears "this group id cannot be used here" instead
        // of retrying forever (COORDINATOR_NOT_AVAILABLE would be retried without end;
        // GROUP_MAX_SIZE_REACHED speaks of members; POLICY_VIOLATION is not expected by the
        // group APIs' clients).
        Error::TooManyGroups(..) => R::InvalidGroupId,
        Error::CoordinatorNotAvailable(_) => R::CoordinatorNotAvailable,
        Error::OffsetMetadataTooLarge(_) => R::OffsetMetadataTooLarge,
        Error::GroupSubscribedToTopic(_) => R::GroupSubscribedToTopic,
        Error::Unsupported(_) => R::UnsupportedVersion,
        Error::FencedMemberEpoch { .. } => R::FencedMemberEpoch,
        Error::StaleMemberEpoch { .. } => R::StaleMemberEpoch,
        Error::UnsupportedAssignor(_) => R::UnsupportedAssignor,
        Error::WrongGroupType(..) => R::GroupIdNotFound,
        Error::SecurityDisabled(_) => R::SecurityDisabled,
        Error::ResourceNotFound(_) => R::ResourceNotFound,
        Error::UnacceptableCredential(_) => R::UnacceptableCredential,
        Error::DuplicateResource(_) => R::DuplicateResource,
        Error::ClusterAuthorization(_) => R::ClusterAuthorizationFailed,
        Error::TopicAuthorization(_) => R::TopicAuthorizationFailed,
        Error::Internal(_) => R::UnknownServerError,
        Error::InvalidProducerIdMapping(_) => R::InvalidProducerIdMapping,
        Error::ProducerFenced(_) => R::ProducerFenced,
        Error::InvalidProducerEpoch(_) => R::InvalidProducerEpoch,
        Error::ConcurrentTransactions(_) => R::ConcurrentTransactions,
        Error::InvalidTxnState(_) => R::InvalidTxnState,
        Error::InvalidTransactionTimeout(_) => R::InvalidTransactionTimeout,
        Error::TransactionalIdNotFound(_) => R::TransactionalIdNotFound,
        Error::TransactionalIdAuthorization(_) => R::TransactionalIdAuthorizationFailed,
        Error::NotEnoughReplicas(_) => R::NotEnoughReplicas,
        Error::Storage(e) => storage(e),
    }
}

/// Kafka's error code for a storage failure (logged here, once).
pub fn storage(e: &StoreError) -> ResponseError {
    match e {
        StoreError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        StoreError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        StoreError::PartitionLimit { .. } => ResponseError::PolicyViolation,
        // Logged once when writes start being refused (storage's free-space reserve).
        StoreError::DiskFull { .. } => ResponseError::KafkaStorageError,
        _ => {
            // A damaged partition fails every fetch a consumer retries: one line per 10 s.
            static LOG: std::sync::Mutex<Option<crate::services::log_limit::RateLimitedLog>> =
                std::sync::Mutex::new(None);
            let allowed = LOG
                .lock()
                .ok()
                .and_then(|mut l| l.get_or_insert_with(Default::default).allow());
            if let Some(suppressed) = allowed {
                tracing::error!(error = %e, suppressed, "storage failure");
            }
            ResponseError::KafkaStorageError
        }
    }
}

/// [`code`] for a transaction API at `version`: PRODUCER_FENCED is answered as
/// INVALID_PRODUCER_EPOCH below `fenced_since`, the first version that may carry it (KIP-588).
pub fn txn_code(e: &Error, version: i16, fenced_since: i16) -> ResponseError {
    match code(e) {
        ResponseError::ProducerFenced if version < fenced_since => {
            ResponseError::InvalidProducerEpoch
        }
        c => c,
    }
}

/// Kafka's error code and message for a refused append.
pub fn append(e: &AppendError, producer_id: i64) -> (ResponseError, String) {
    match e {
        AppendError::OutOfOrderSequence { expected, got } => (
            ResponseError::OutOfOrderSequenceNumber,
            format!(
                "Out of order sequence number for producer {producer_id}: expected {expected}, got {got}."
            ),
        ),
        AppendError::InvalidProducerEpoch { .. } => {
            (ResponseError::InvalidProducerEpoch, e.to_string())
        }
        AppendError::UnknownProducerId(_) => (ResponseError::UnknownProducerId, e.to_string()),
        AppendError::InvalidTxnState(m) => (ResponseError::InvalidTxnState, m.clone()),
        AppendError::CoordinatorFenced { .. } => {
            (ResponseError::TransactionCoordinatorFenced, e.to_string())
        }
        AppendError::Store(s) => (storage(s), format!("Storage error: {s}")),
    }
}

/// Kafka's error code and message for a refused produce.
pub fn produce(e: &ProduceError) -> (ResponseError, String) {
    match e {
        ProduceError::UnknownTopicOrPartition(m) => {
            (ResponseError::UnknownTopicOrPartition, m.clone())
        }
        ProduceError::NotWritable(m) => (ResponseError::TopicAuthorizationFailed, m.clone()),
        ProduceError::InvalidRecord { message, .. } => {
            (ResponseError::InvalidRecord, message.clone())
        }
        // Kafka's answer to a producer id it has no record of (for this principal): the client
        // asks for a new id.
        ProduceError::ForeignProducerId(m) => (ResponseError::UnknownProducerId, m.clone()),
        ProduceError::Batch(b) => (b.kafka_error(), b.to_string()),
        ProduceError::Append { error, producer_id } => append(error, *producer_id),
        ProduceError::Transaction(e) => (code(e), e.to_string()),
    }
}
