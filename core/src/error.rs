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
    /// The current unit of work must be rolled back; the component itself is still usable.
    /// A handler's failure and a message that cannot be decoded are of this class: the
    /// message is retried (or not, if it cannot be decoded) and then dead-lettered, and its
    /// partition goes on.
    Abortable,
    /// Retrying cannot help the component that reported it: a wrong setting, refused
    /// credentials or ACLs, ownership of a partition lost to another instance. Needs a
    /// person or a restart (or, for a lost partition, its new owner carries on).
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
    /// The database connections do not keep their server session from one transaction to
    /// the next, as behind a pooler in transaction or statement mode (PgBouncer's
    /// `pool_mode = transaction`); found when the runtime is built, which it refuses.
    #[error(
        "the database connections do not keep their session between transactions ({found}), as behind a pooler in \
         transaction or statement mode: exactly's statements are prepared once per session and the outbox relay elects \
         its leader with a session-level advisory lock, so another client's session would run them; connect to \
         PostgreSQL directly or through a pooler in session mode (PgBouncer `pool_mode = session`)"
    )]
    SessionNotKept {
        /// What the check saw.
        found: String,
    },
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
        /// What was refused, as precisely as it is known.
        resource: KafkaResource,
        /// librdkafka's account of it.
        reason: String,
    },
    /// librdkafka gave up on a group's consumer (a fatal consumer error): it fetches nothing
    /// and takes no part in its group any more, so the runtime stops on it, rather than go
    /// on with a group that gets no partitions. Nothing committed is lost, and what was not
    /// committed is done again by whoever takes the partitions over.
    ///
    /// The usual cause is static membership (`group.instance.id`): under the consumer group
    /// protocol ([`GroupProtocol::Consumer`](crate::GroupProtocol::Consumer)) an instance
    /// restarted after a crash is refused while its predecessor, with the same id, is still
    /// a member (until the broker's session timeout removes it); under the classic protocol
    /// the older of two members with the same id is the one fenced.
    #[error("the consumer of group {group} cannot go on: {reason}; {remedy}")]
    KafkaConsumerFailed {
        /// The consumer group.
        group: String,
        /// librdkafka's account of it.
        reason: String,
        /// What to do about it.
        remedy: &'static str,
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
    /// A message's key or payload could not be decoded. Decoding cannot succeed later, so
    /// the message goes to the dead letters at once and its partition goes on past it.
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
    /// The handler returned an error or panicked; the work it was part of (a Database-mode
    /// batch, or a Kafka-mode message's output) was rolled back, and the message is tried
    /// again as the retry policy says, then dead-lettered.
    #[error("handler failed at {location}: {source}")]
    Handler {
        /// Where.
        location: Location,
        /// What the handler said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Kafka-mode handler call did not finish within the producer's
    /// `transaction.timeout.ms` (60 s unless set): by then Kafka has aborted the
    /// transaction its output would have joined. The call was abandoned (its future
    /// dropped), and it counts as a failed try: tried again as the retry policy says, then
    /// dead-lettered.
    #[error(
        "handler did not finish at {location} within {after:?}, the producer's transaction.timeout.ms, after which \
         Kafka aborts the transaction its output would join; it was abandoned and counts as a failed try"
    )]
    HandlerTimedOut {
        /// Where.
        location: Location,
        /// The deadline it ran past.
        after: std::time::Duration,
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
    /// The stored position of a partition is not where this instance left it, though its
    /// claim epoch is still current: someone changed it by hand (`exactly offsets set`)
    /// while this instance owned the partition. Its batch was rolled back.
    #[error(
        "the stored position at {location} is {stored}, not the expected offset: was it changed by hand while \
         this instance owned the partition?"
    )]
    PositionMoved {
        /// Where, at the offset this instance expected.
        location: Location,
        /// The offset stored now.
        stored: i64,
    },
    /// An argument given to one of exactly's functions is out of range (a negative
    /// partition or offset, for one).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A task or thread of exactly's own panicked: a bug in exactly (or in a library it
    /// calls), never in a handler (a handler's panic is caught and becomes
    /// [`Error::Handler`]).
    #[error("{task} panicked: {message}")]
    Panicked {
        /// Which task: `the consumer of group g`, `the outbox relay`, ...
        task: String,
        /// What the panic said.
        message: String,
    },
    /// The operating system would not start a thread exactly needs.
    #[error("cannot start a thread to {purpose}: {source}")]
    Thread {
        /// What the thread was for.
        purpose: &'static str,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },
    /// Something exactly relies on did not hold: a bug in exactly or in librdkafka. The
    /// work it concerned is abandoned and redone from the last committed position.
    #[error("internal error (please report it): {0}")]
    Internal(String),
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
        if let Some(resource) = KafkaResource::refused_by(&error) {
            return Error::KafkaAuthorization { resource, reason: error.to_string() };
        }
        Error::Kafka(crate::redact::kafka_error(error))
    }
}

impl Error {
    /// [`Error::UnsafeSetting`] for `key` = `value`, the value redacted if `key` is a secret.
    pub(crate) fn unsafe_setting(key: &str, value: &str, reason: &'static str) -> Self {
        Error::UnsafeSetting {
            key: key.to_owned(),
            value: crate::redact::property_value(key, value).to_owned(),
            reason,
        }
    }

    /// What to do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::UnsafeSetting { .. }
            | Error::Config(_)
            | Error::SessionNotKept { .. }
            | Error::Migrate(_)
            | Error::MigrateNotPermitted { .. }
            | Error::Fenced { .. }
            | Error::OffsetOutOfRange { .. }
            | Error::Listen { .. }
            | Error::KafkaAuthentication { .. }
            | Error::KafkaTls { .. }
            | Error::KafkaAuthorization { .. }
            | Error::KafkaConsumerFailed { .. }
            | Error::PositionMoved { .. }
            | Error::InvalidArgument(_)
            | Error::Panicked { .. }
            | Error::Thread { .. } => ErrorClass::Fatal,
            Error::Kafka(e) => kafka_class(e),
            Error::KafkaCallStuck { .. } | Error::DatabaseTimedOut { .. } => ErrorClass::Retriable,
            Error::Internal(_) => ErrorClass::Abortable,
            Error::Database(e) => database_class(e),
            Error::Handler { .. }
            | Error::HandlerTimedOut { .. }
            | Error::Decode { .. }
            | Error::AssignmentLost { .. } => ErrorClass::Abortable,
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

    /// The same error, with the resource named when it is a refused authorization of the
    /// kind `named` names but does not know which (`named` gets what is known and gives
    /// the resource named, or `None` to leave it).
    pub(crate) fn naming(self, named: impl FnOnce(&KafkaResource) -> Option<KafkaResource>) -> Self {
        match self {
            Error::KafkaAuthorization { resource, reason } => {
                let resource = named(&resource).unwrap_or(resource);
                Error::KafkaAuthorization { resource, reason }
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
            | Error::HandlerTimedOut { location, .. }
            | Error::PositionMoved { location, .. }
            | Error::OffsetOutOfRange { location } => Some(location),
            Error::DatabaseTimedOut { location, .. } => location.as_ref(),
            _ => None,
        }
    }
}

/// What a broker refused a client for lack of an ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KafkaResource {
    /// A topic: `Some` when it is known which.
    Topic(Option<String>),
    /// One or more of these topics (a consumer subscribed to several, and the brokers
    /// would not say which).
    OneOfTopics(Vec<String>),
    /// Several topics, each of them refused.
    Topics(Vec<String>),
    /// The consumer group: `Some` when it is known which.
    Group(Option<String>),
    /// A producer's `transactional.id`: `Some` when it is known which.
    TransactionalId(Option<String>),
    /// An operation on the cluster.
    Cluster,
}

impl KafkaResource {
    /// What `error` was refused, when it is a broker's refusal for lack of an ACL.
    pub(crate) fn refused_by(error: &rdkafka::error::KafkaError) -> Option<Self> {
        use rdkafka::error::RDKafkaErrorCode;
        match error.rdkafka_error_code()? {
            RDKafkaErrorCode::TopicAuthorizationFailed => Some(Self::Topic(None)),
            RDKafkaErrorCode::GroupAuthorizationFailed => Some(Self::Group(None)),
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed => Some(Self::TransactionalId(None)),
            RDKafkaErrorCode::ClusterAuthorizationFailed => Some(Self::Cluster),
            _ => None,
        }
    }
}

impl fmt::Display for KafkaResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |names: &[String]| names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
        match self {
            Self::Topic(None) => f.write_str("a topic"),
            Self::Topic(Some(topic)) => write!(f, "topic `{topic}`"),
            Self::OneOfTopics(topics) => write!(f, "one of the topics {}", topics.join(", ")),
            Self::Topics(topics) => write!(f, "topics {}", quoted(topics)),
            Self::Group(None) => f.write_str("the consumer group"),
            Self::Group(Some(group)) => write!(f, "group `{group}`"),
            Self::TransactionalId(None) => f.write_str("the transactional id"),
            Self::TransactionalId(Some(id)) => write!(f, "transactional id `{id}`"),
            Self::Cluster => f.write_str("an operation on the cluster"),
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
            // Insufficient resources (disk full, out of memory, too many connections): they
            // pass once space or memory is back, and a message must not be dead-lettered
            // because the database had no room for it.
            Some(code) if code.starts_with("53") => ErrorClass::Retriable,
            // The server ended a transaction that sat idle past the runtime's own deadline
            // (`store::transaction`): its client was stopped, and tries again on a new session.
            Some("25P03") => ErrorClass::Retriable,
            _ => ErrorClass::Abortable,
        },
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => ErrorClass::Retriable,
        _ => ErrorClass::Abortable,
    }
}
