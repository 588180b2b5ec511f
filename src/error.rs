//! The crate's error type, and how to tell what an error means for the caller.
//!
//! Every fallible call in kafka-kit returns [`Result<T>`](Result), whose error is [`Error`]. It wraps
//! rdkafka's [`KafkaError`] and the errors of kafka-kit's own layers, and answers the three questions
//! a caller has to answer after a failure:
//!
//! - [`Error::is_retriable`]: will the same call probably succeed if made again?
//! - [`Error::is_fatal`]: is this client instance unusable from now on (fenced, fatal idempotence
//!   error)? Create a new one.
//! - [`Error::txn_requires_abort`]: must the current transaction be aborted before going on?
//!
//! A message that could not be produced is never lost silently: sending returns a
//! [`ProduceError`](crate::producer::ProduceError) that holds this error *and* the message (key,
//! payload, headers) and the caller's context, so it can be retried, logged or dead-lettered.
//!
//! # Example
//!
//! ```
//! use kafka_kit::Error;
//! use rdkafka::error::{KafkaError, RDKafkaErrorCode};
//!
//! let err = Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
//! assert!(err.is_retriable());
//! assert!(!err.is_fatal());
//! assert_eq!(err.code(), Some(RDKafkaErrorCode::QueueFull));
//! ```

use std::io;
use std::path::PathBuf;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::ConfigError;
use crate::headers::HeaderError;

/// The result type of kafka-kit: `Result<T, kafka_kit::Error>` unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kafka-kit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before any client was created.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka (through rdkafka) reported an error. Shown as rdkafka shows it, which names the
    /// operation and librdkafka's code (`transparent`: `source()` is the `KafkaError`'s own).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A header was present but could not be read as the type asked for.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A value could not be encoded as JSON.
    #[error("could not encode the value as JSON")]
    Encode(#[source] serde_json::Error),
    /// A record's value could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A large payload could not be stored, fetched or verified.
    #[error(transparent)]
    ClaimCheck(#[from] ClaimCheckError),
    /// A Schema Registry call, or a value's schema-registry encoding or decoding, failed.
    #[cfg(feature = "schema-registry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "schema-registry")))]
    #[error(transparent)]
    SchemaRegistry(#[from] crate::schema_registry::SchemaRegistryError),
    /// A checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A record failed for good in a processing loop that has no dead-letter topic. It was not
    /// committed: it is read again after a restart.
    #[error(
        "processing {topic}[{partition}]@{offset} failed after {attempts} attempts: {message}"
    )]
    Processing {
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// How many times the handler ran (0: the value could not be decoded).
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// A background task kafka-kit runs (a blocking librdkafka call, a processing lane) panicked
    /// or was cancelled.
    #[error("a background task failed")]
    Background(#[source] tokio::task::JoinError),
    /// The producer was closed (or dropped) before the message's delivery report arrived.
    #[error("the producer was closed before the delivery report arrived")]
    Closed,
    /// A transactional producer hit a fatal error earlier (most often: it was fenced by a newer
    /// instance with the same `transactional.id`) and refuses to be used again. Create a new one.
    #[error("transactional producer `{transactional_id}` can no longer be used: {cause}; create a new one")]
    Unusable {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The fatal error that ended it.
        cause: String,
    },
    /// Application code that kafka-kit called (a rebalance hook, a checkpoint store, a handler)
    /// panicked, or one of kafka-kit's own threads did. The panic was caught: the client is still
    /// there, but the processing loops stop with this error, since the application's state is no
    /// longer known.
    #[error("{callback} panicked: {message}")]
    Panicked {
        /// What panicked, e.g. `RebalanceListener::on_assigned`.
        callback: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The test support (the embedded broker, a test cluster) failed.
    #[error("test support: {0}")]
    Testing(String),
}

impl Error {
    /// The librdkafka error code behind this error, if there is one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Error::Kafka(e) => e.rdkafka_error_code(),
            _ => None,
        }
    }

    /// Whether making the same call again may succeed (a transient broker, network or local-queue
    /// condition). Retrying a retriable error keeps ordering only with an idempotent producer.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka(KafkaError::Transaction(e)) => e.is_retriable(),
            Error::Kafka(_) => self.code().is_some_and(is_retriable_code),
            #[cfg(feature = "schema-registry")]
            Error::SchemaRegistry(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// Whether the client instance can no longer be used: it was fenced by a newer instance with
    /// the same transactional id, or librdkafka raised a fatal error. Create a new client.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Kafka(KafkaError::Transaction(e)) => e.is_fatal(),
            Error::Kafka(KafkaError::MessageConsumptionFatal(_)) => true,
            Error::Kafka(_) => self.code().is_some_and(is_fatal_code),
            Error::Unusable { .. } => true,
            _ => false,
        }
    }

    /// What a transactional producer should do after this error from one of its calls:
    /// retry the same call, abort the transaction (and rewind its input), or give up on the
    /// producer. Fatal wins over abort, abort over retry; an error of a transaction call that is
    /// none of them (librdkafka's own advice) is fatal. Any other error (a failed delivery, a
    /// transform that failed) aborts.
    pub fn recovery(&self) -> Recovery {
        if self.is_fatal() {
            Recovery::Fatal
        } else if self.txn_requires_abort() {
            Recovery::Abort
        } else if self.is_retriable() {
            Recovery::Retry
        } else if let Error::Kafka(KafkaError::Transaction(_)) = self {
            Recovery::Fatal
        } else {
            Recovery::Abort
        }
    }

    /// Whether the current transaction must be aborted before the producer can go on.
    pub fn txn_requires_abort(&self) -> bool {
        match self {
            Error::Kafka(KafkaError::Transaction(e)) => e.txn_requires_abort(),
            _ => false,
        }
    }
}

impl Error {
    /// Whether a loop reading a consumer should stop on this error: it is fatal, or application
    /// code kafka-kit called panicked ([`Error::Panicked`]). Anything else a consumer reports (a
    /// broker restarting, a group the broker does not know yet) is transient: log it and read
    /// on. kafka-kit's own loops ([`AtLeastOnce`](crate::consumer::processing::AtLeastOnce),
    /// [`ExactlyOnce`](crate::transaction::ExactlyOnce)) do exactly that.
    ///
    /// ```
    /// use kafka_kit::Error;
    /// use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    ///
    /// let transient = Error::from(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupIdNotFound));
    /// assert!(!transient.ends_processing());
    /// let panicked = Error::Panicked { callback: "RebalanceListener::on_assigned", message: "boom".into() };
    /// assert!(panicked.ends_processing());
    /// ```
    pub fn ends_processing(&self) -> bool {
        self.is_fatal() || matches!(self, Error::Panicked { .. })
    }

    /// A caught panic as an error, with its message when it has one.
    pub(crate) fn panicked(callback: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(callback, message = %message, "kafka_kit: caught a panic");
        Error::Panicked { callback, message }
    }
}

/// Runs application code, catching a panic as [`Error::Panicked`].
pub(crate) fn catch_panic<T>(callback: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| Error::panicked(callback, &*payload))
}

/// A record's value could not be decoded.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not decode the record at {topic}[{partition}]@{offset}: {reason}")]
pub struct DecodeError {
    /// The record's topic.
    pub topic: String,
    /// The record's partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// What was wrong.
    pub reason: String,
}

/// Error loading or saving checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the store failed.
    #[error("checkpoint store {path} could not be read or written")]
    Io {
        /// The file or directory that could not be read or written.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The store's contents could not be understood.
    #[error("checkpoint store {path} is corrupt: {reason}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    /// A negative offset was given to save (offsets are next-to-read, so >= 0).
    #[error(
        "cannot checkpoint offset {offset} of {topic}[{partition}]: offsets to save are next-to-read, never negative"
    )]
    NegativeOffset {
        /// Topic of the rejected offset.
        topic: String,
        /// Partition of the rejected offset.
        partition: i32,
        /// The rejected offset.
        offset: i64,
    },
}

/// What went wrong with a large payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimCheckError {
    /// The store failed.
    #[error("blob store: {location}: {reason}")]
    Store {
        /// The blob's location.
        location: String,
        /// What failed.
        reason: String,
    },
    /// The reference names a blob the store does not have.
    #[error("blob {location} is missing")]
    Missing {
        /// The blob's location.
        location: String,
    },
    /// The blob's size differs from the reference's.
    #[error("blob {location} has {actual} bytes, the reference says {expected}")]
    SizeMismatch {
        /// The blob's location.
        location: String,
        /// The size in the reference.
        expected: u64,
        /// The blob's size.
        actual: u64,
    },
    /// The blob's checksum differs from the reference's: it was changed or corrupted.
    #[error("blob {location} has SHA-256 {actual}, the reference says {expected}")]
    ChecksumMismatch {
        /// The blob's location.
        location: String,
        /// The checksum in the reference.
        expected: String,
        /// The blob's checksum.
        actual: String,
    },
    /// The message is marked as a reference, but its payload is not one.
    #[error("not a valid blob reference: {0}")]
    BadReference(String),
}

/// How to go on after an error in a transaction: see [`Error::recovery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Make the same call again: the condition is transient.
    Retry,
    /// Abort the transaction, rewind the input to the last committed positions, and go on.
    Abort,
    /// The producer can no longer be used (fenced, or a fatal librdkafka error).
    Fatal,
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Encode(e)
    }
}

/// Codes for conditions that go away on their own: leadership moves, timeouts, full queues.
fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        QueueFull
            | MessageTimedOut
            | OperationTimedOut
            | TimedOutQueue
            | BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | Retry
            | WaitingForCoordinator
            | UnknownTopicOrPartition
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | KafkaStorageError
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | PreferredLeaderNotAvailable
            | RebalanceInProgress
            | ConcurrentTransactions
            | ThrottlingQuotaExceeded
            | UnstableOffsetCommit
    )
}

/// Codes after which the client instance is unusable.
fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Fatal
            | Fenced
            | ProducerFenced
            | InvalidProducerEpoch
            | TransactionalIdAuthorizationFailed
            | FencedInstanceId
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_codes() {
        let queue_full = Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
        assert!(queue_full.is_retriable() && !queue_full.is_fatal());

        let too_large = Error::from(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert!(!too_large.is_retriable() && !too_large.is_fatal());

        let fenced = Error::from(KafkaError::MessageProduction(
            RDKafkaErrorCode::ProducerFenced,
        ));
        assert!(fenced.is_fatal() && !fenced.is_retriable());
        assert!(!fenced.txn_requires_abort());

        assert_eq!(Error::Closed.code(), None);
        assert!(!Error::Closed.is_retriable());
    }

    #[test]
    fn error_stays_small() {
        // Every `Result` carries it. The largest variant is rdkafka's `KafkaError` (80 bytes),
        // left unboxed so that callers can match on it (`Error::Kafka(KafkaError::Transaction(e))`);
        // the others are smaller, so boxing them would not shrink `Error`. Box a new variant that
        // would make it grow.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
        assert!(std::mem::size_of::<Result<()>>() <= 80);
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        use std::error::Error as _;
        let kafka = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        let err = Error::from(kafka.clone());
        assert_eq!(err.to_string(), kafka.to_string());
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let json_text = json.to_string();
        let err = Error::from(json);
        assert!(!err.to_string().contains(&json_text), "{err}");
        assert_eq!(err.source().map(ToString::to_string), Some(json_text));
    }

    #[test]
    fn recovery_of_errors() {
        let r = |code| Error::from(KafkaError::MessageProduction(code)).recovery();
        assert_eq!(r(RDKafkaErrorCode::RequestTimedOut), Recovery::Retry);
        // A delivery that failed for good taints the transaction: abort it.
        assert_eq!(r(RDKafkaErrorCode::MessageSizeTooLarge), Recovery::Abort);
        assert_eq!(r(RDKafkaErrorCode::ProducerFenced), Recovery::Fatal);
        let unusable = Error::Unusable {
            transactional_id: "t".into(),
            cause: "fenced".into(),
        };
        assert_eq!(unusable.recovery(), Recovery::Fatal);
        assert!(unusable
            .to_string()
            .contains("`t` can no longer be used: fenced"));
    }
}
