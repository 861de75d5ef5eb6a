//! The one error type of this crate, classified so the runtime (and you) can decide what to do.

use std::fmt;

/// Called with every error a runtime or relay reports.
pub(crate) type ErrorHook = std::sync::Arc<dyn Fn(&Error) + Send + Sync>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in Kafka a failure happened: enough to find the message again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Consumer group of the handler.
    pub group: String,
    /// Topic of the message.
    pub topic: String,
    /// Partition of the message.
    pub partition: i32,
    /// Offset of the message (or of the first message of the batch).
    pub offset: i64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {} topic {} partition {} offset {}", self.group, self.topic, self.partition, self.offset)
    }
}

/// What to do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same work may succeed if tried again (a lost connection, a deadlock,
    /// a serialization failure, a broker that is not reachable for a moment).
    Retriable,
    /// The current unit of work must be rolled back and redone from the last committed
    /// position; the component itself is still usable.
    Abortable,
    /// Retrying cannot help: a wrong setting, a message that cannot be decoded, ownership
    /// of a partition lost to another instance. Needs a person or a restart.
    Fatal,
}

/// Every error exactly reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting would break the exactly-once guarantee; refused when the runtime is built.
    #[error("setting `{key}` = `{value}` is refused: {reason}")]
    UnsafeSetting {
        /// The setting's name.
        key: String,
        /// The value that was asked for; `[redacted]` when the setting is a secret
        /// ([`redact::is_secret_key`](crate::redact::is_secret_key)).
        value: String,
        /// Why it would break the guarantee.
        reason: &'static str,
    },
    /// The configuration is incomplete or contradicts itself.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Kafka broker refused the client's credentials (SASL): the mechanism, user name or
    /// password is wrong, or the user does not exist. Retrying with the same ones cannot help,
    /// so the runtime stops on it.
    #[error(
        "kafka refused the login (SASL authentication failed): {reason}; check `sasl.mechanism`, `sasl.username` \
         and `sasl.password`"
    )]
    KafkaAuthentication {
        /// librdkafka's account of it (it names the broker and mechanism, never the password).
        reason: String,
    },
    /// The TLS handshake with a Kafka broker failed: its certificate is not signed by a
    /// trusted CA or does not name the host, or the listener does not speak TLS. The runtime
    /// stops on it.
    #[error(
        "kafka TLS handshake failed: {reason}; check `ssl.ca.location` (or `ssl.ca.pem`), that the broker's \
         certificate names the host you connect to, and that the listener speaks TLS"
    )]
    KafkaTls {
        /// librdkafka's account of it.
        reason: String,
    },
    /// A Kafka broker refused an operation because the client's principal has no ACL for
    /// it: reading a topic or the consumer group, writing a topic, using the transactional
    /// id, or acting on the cluster. Retrying cannot help until an administrator grants it,
    /// so the runtime and the outbox relay stop on it; nothing committed is lost, and what
    /// was not committed is redone after the restart. The Security chapter lists the ACLs
    /// exactly needs.
    #[error(
        "kafka refused {resource} to this client's principal: {reason}; grant the ACL for it (the Security \
         chapter lists the ACLs exactly needs)"
    )]
    KafkaAuthorization {
        /// What was refused, as precisely as it is known: `topic `orders``, `group `g``,
        /// `transactional id `tx``, or only the kind (`a topic`).
        resource: String,
        /// librdkafka's account of it.
        reason: String,
    },
    /// The Kafka client failed. A refused client setting keeps its name, never its value
    /// (it may be a secret).
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Creating or upgrading exactly's tables failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database role lacks a right that creating, upgrading or checking exactly's
    /// tables needs: typically a service role without DDL rights asked to migrate. Run
    /// `exactly migrate` as the owner role instead.
    #[error("role `{role}` lacks {missing}, which migrating exactly's tables needs: {remedy}")]
    MigrateNotPermitted {
        /// The role connected (`current_user`).
        role: String,
        /// The missing right.
        missing: String,
        /// What to do instead.
        remedy: &'static str,
    },
    /// Another instance owns the partition now: this instance's work on it was rolled back.
    #[error("fenced at {location}: the partition was reassigned (claim epoch {epoch} is no longer current)")]
    Fenced {
        /// Where.
        location: Location,
        /// The claim epoch this instance held.
        epoch: i64,
    },
    /// The instance lost its partitions without a clean revocation (its session expired, e.g.
    /// it was paused, or it was fenced): its open Kafka transaction was aborted.
    #[error(
        "group {group} lost its partitions (session expired or fenced): the open transaction was aborted, its output discarded"
    )]
    AssignmentLost {
        /// The consumer group.
        group: String,
    },
    /// A message's key or payload could not be decoded; the partition does not advance past it.
    #[error("cannot decode the {part} at {location}: {source}")]
    Decode {
        /// Where.
        location: Location,
        /// `"key"` or `"payload"`.
        part: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message was moved to the dead letters (undecodable, or out of retries); its
    /// partition goes on past it.
    #[error("dead-lettered {location} after {attempts} attempt(s): {reason}")]
    DeadLettered {
        /// Where.
        location: Location,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The handler returned an error; the batch was rolled back.
    #[error("handler failed at {location}: {source}")]
    Handler {
        /// Where.
        location: Location,
        /// What the handler said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Kafka call did not return within its timeout plus a grace period: librdkafka can
    /// block in `send_offsets_to_transaction` past its timeout when the group coordinator
    /// goes away (confluentinc/librdkafka#5456, #5511). The producer is abandoned (its call
    /// may never return) and a new one fences it; the work is redone from the committed
    /// offsets.
    #[error(
        "the Kafka call {call} did not return within {waited:?} (librdkafka ignores its timeout when the group \
         coordinator goes away); the producer is abandoned and rebuilt"
    )]
    KafkaCallStuck {
        /// The call.
        call: &'static str,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// A database transaction of a Database-mode partition (or the claim of a partition)
    /// did not finish within the runtime's
    /// [`database_transaction_timeout`](crate::RuntimeBuilder::database_transaction_timeout).
    /// The database stopped answering (a server or network gone without closing the
    /// connection never does), or the handler took that long. The work was abandoned, its
    /// connection dropped, and it is retried from the stored position.
    #[error(
        "{during}{} did not finish within {after:?}: the database stopped answering (a server or network gone \
         without closing the connection never answers) or the handler took that long; it was abandoned and is \
         retried from the stored position (raise `database_transaction_timeout` if handlers need longer)",
        at(location.as_ref())
    )]
    DatabaseTimedOut {
        /// What was under way: `the batch`, `dead-lettering the message`, `claiming group
        /// g topic t partition 0`, ...
        during: String,
        /// The partition, at its first unprocessed message, when known.
        location: Option<Location>,
        /// The deadline it ran past.
        after: std::time::Duration,
    },
    /// The operations HTTP server ([`RuntimeBuilder::serve_http`](crate::RuntimeBuilder::serve_http))
    /// cannot listen on its address.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it cannot be bound.
        #[source]
        source: std::io::Error,
    },
    /// The stored position of a partition is no longer in Kafka's log (deleted by retention):
    /// messages between it and the log's start were never processed.
    #[error("the stored position at {location} is out of range of the log: those messages are gone from Kafka")]
    OffsetOutOfRange {
        /// Where (the stored offset).
        location: Location,
    },
}

impl From<rdkafka::error::KafkaError> for Error {
    /// Keeps a refused client setting's name and drops its value, which may be a secret (a
    /// misspelt `sasl.pasword` is not known to be one): librdkafka's description may quote
    /// it too.
    /// An authorization failure (a missing ACL) becomes [`Error::KafkaAuthorization`].
    fn from(error: rdkafka::error::KafkaError) -> Self {
        if let Some(resource) = crate::kafka_client::refused_resource(&error) {
            return Error::KafkaAuthorization { resource: resource.to_owned(), reason: error.to_string() };
        }
        Error::Kafka(crate::redact::kafka_error(error))
    }
}

impl Error {
    /// [`Error::UnsafeSetting`] for `key` = `value`, the value redacted if `key` is a secret.
    pub(crate) fn unsafe_setting(key: &str, value: &str, reason: &'static str) -> Self {
        Error::UnsafeSetting { key: key.to_owned(), value: crate::redact::value(key, value).to_owned(), reason }
    }

    /// What to do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::UnsafeSetting { .. }
            | Error::Config(_)
            | Error::Migrate(_)
            | Error::MigrateNotPermitted { .. }
            | Error::Fenced { .. }
            | Error::Decode { .. }
            | Error::OffsetOutOfRange { .. }
            | Error::Listen { .. }
            | Error::KafkaAuthentication { .. }
            | Error::KafkaTls { .. }
            | Error::KafkaAuthorization { .. } => ErrorClass::Fatal,
            Error::Kafka(e) => kafka_class(e),
            Error::KafkaCallStuck { .. } | Error::DatabaseTimedOut { .. } => ErrorClass::Retriable,
            Error::Database(e) => database_class(e),
            Error::Handler { .. } | Error::AssignmentLost { .. } | Error::DeadLettered { .. } => ErrorClass::Abortable,
        }
    }

    /// A copy of this error when Kafka refused the client access (credentials, TLS or an
    /// ACL): errors no part of the runtime can work around, so it stops on them.
    pub(crate) fn refused_access(&self) -> Option<Error> {
        match self {
            Error::KafkaAuthentication { reason } => Some(Error::KafkaAuthentication { reason: reason.clone() }),
            Error::KafkaTls { reason } => Some(Error::KafkaTls { reason: reason.clone() }),
            Error::KafkaAuthorization { resource, reason } => {
                Some(Error::KafkaAuthorization { resource: resource.clone(), reason: reason.clone() })
            }
            _ => None,
        }
    }

    /// The same error, naming `resource` when it is a refused authorization of that kind
    /// (`resource` is only used when `kind` is the kind the error names).
    pub(crate) fn naming(self, kind: &str, resource: impl FnOnce() -> String) -> Self {
        match self {
            Error::KafkaAuthorization { resource: known, reason } if known == kind => {
                Error::KafkaAuthorization { resource: resource(), reason }
            }
            other => other,
        }
    }

    /// Whether trying the same work again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.class() == ErrorClass::Retriable
    }

    /// Where in Kafka the error happened, when it concerns a message.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Fenced { location, .. }
            | Error::Decode { location, .. }
            | Error::Handler { location, .. }
            | Error::DeadLettered { location, .. }
            | Error::OffsetOutOfRange { location } => Some(location),
            Error::DatabaseTimedOut { location, .. } => location.as_ref(),
            _ => None,
        }
    }
}

/// ` at <location>`, or nothing.
fn at(location: Option<&Location>) -> String {
    location.map(|location| format!(" at {location}")).unwrap_or_default()
}

fn kafka_class(error: &rdkafka::error::KafkaError) -> ErrorClass {
    use rdkafka::error::{KafkaError, RDKafkaError};
    let classify = |e: &RDKafkaError| {
        if e.is_fatal() {
            ErrorClass::Fatal
        } else if e.txn_requires_abort() {
            ErrorClass::Abortable
        } else {
            ErrorClass::Retriable
        }
    };
    match error {
        KafkaError::Transaction(e) => classify(e),
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => ErrorClass::Fatal,
        _ => ErrorClass::Retriable,
    }
}

pub(crate) fn database_class(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            ErrorClass::Retriable
        }
        sqlx::Error::Database(e) => match e.code().as_deref() {
            // serialization_failure, deadlock_detected, admin/crash shutdown, cannot_connect_now
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03") => ErrorClass::Retriable,
            Some(code) if code.starts_with("08") => ErrorClass::Retriable, // connection exceptions
            _ => ErrorClass::Abortable,
        },
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => ErrorClass::Retriable,
        _ => ErrorClass::Abortable,
    }
}
