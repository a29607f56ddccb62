//! The one error type of the domain services. Each variant is a reason a user can act on; the
//! Kafka API layer maps it to Kafka's error code in one place (`api::errors`), the HTTP API to a
//! status.

use kafkabox_storage::StoreError;

/// Why a service refused or failed an operation. The text is the message clients see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    TopicExists(String),
    #[error("{0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    OffsetOutOfRange(String),
    #[error("{0}")]
    PolicyViolation(String),
    // Consumer groups.
    #[error("invalid group id '{0}'")]
    InvalidGroupId(String),
    #[error("group '{0}' does not exist")]
    GroupIdNotFound(String),
    #[error("group '{0}' is not empty")]
    NonEmptyGroup(String),
    #[error("group '{0}' is kafkabox's own and read-only to clients")]
    GroupAuthorization(String),
    #[error("unknown member id '{0}'")]
    UnknownMemberId(String),
    #[error("the member must rejoin with the member id the broker gave it")]
    MemberIdRequired(String),
    #[error("generation {got} is not the group's current generation {current}")]
    IllegalGeneration { current: i32, got: i32 },
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("{0}")]
    InconsistentGroupProtocol(String),
    #[error("{0}")]
    InvalidSessionTimeout(String),
    #[error("static member '{0}' was replaced by a newer instance")]
    FencedInstanceId(String),
    #[error("group '{0}' has reached group.max.size members")]
    GroupMaxSizeReached(String),
    #[error("cannot create group '{0}': the broker already holds group.max.count ({1}) groups; delete unused groups or raise group.max.count")]
    TooManyGroups(String, usize),
    #[error("the group coordinator is not available: {0}")]
    CoordinatorNotAvailable(String),
    #[error("offset metadata of {0} bytes is over offset.metadata.max.bytes")]
    OffsetMetadataTooLarge(usize),
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("the group is subscribed to topic '{0}'")]
    GroupSubscribedToTopic(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("member epoch {got} is fenced; the member is at {current} and must rejoin")]
    FencedMemberEpoch { current: i32, got: i32 },
    #[error("member epoch {got} is stale; the member is at {current}")]
    StaleMemberEpoch { current: i32, got: i32 },
    #[error("{0}")]
    UnsupportedAssignor(String),
    #[error("group '{0}' is a {1} group")]
    WrongGroupType(String, &'static str),
    // Security.
    #[error("{0}")]
    SecurityDisabled(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    UnacceptableCredential(String),
    #[error("{0}")]
    DuplicateResource(String),
    #[error("{0}")]
    ClusterAuthorization(String),
    #[error("{0}")]
    TopicAuthorization(String),
    #[error("{0}")]
    Internal(String),
    /// INVALID_PRODUCER_ID_MAPPING (49): the producer id is not the transactional id's.
    #[error("{0}")]
    InvalidProducerIdMapping(String),
    /// PRODUCER_FENCED (90): a newer instance of the transactional id has started (answered
    /// as INVALID_PRODUCER_EPOCH to the request versions that predate KIP-588).
    #[error("{0}")]
    ProducerFenced(String),
    /// INVALID_PRODUCER_EPOCH (47).
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// CONCURRENT_TRANSACTIONS (51): the transaction is being completed; retry.
    #[error("{0}")]
    ConcurrentTransactions(String),
    /// INVALID_TXN_STATE (48).
    #[error("{0}")]
    InvalidTxnState(String),
    /// INVALID_TRANSACTION_TIMEOUT (50).
    #[error("{0}")]
    InvalidTransactionTimeout(String),
    /// TRANSACTIONAL_ID_NOT_FOUND (105).
    #[error("{0}")]
    TransactionalIdNotFound(String),
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53).
    #[error("{0}")]
    TransactionalIdAuthorization(String),
    /// NOT_ENOUGH_REPLICAS (19): Kafka's retriable answer to a produce while the
    /// transaction's markers are being written.
    #[error("{0}")]
    NotEnoughReplicas(String),
    #[error(transparent)]
    Storage(StoreError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            // A limit the operator set, not a storage failure.
            StoreError::PartitionLimit { .. } => Error::PolicyViolation(e.to_string()),
            other => Error::Storage(other),
        }
    }
}
