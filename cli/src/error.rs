//! The tool's one error type: each is one sentence that names what failed and why.

use rdkafka::error::KafkaError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A setting or argument is missing or wrong.
    #[error("{0}")]
    Usage(String),
    /// The change would be unsafe; `--force` (where offered) overrides.
    #[error("refused: {0}")]
    Refused(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation ran but did not reach its goal.
    #[error("{0}")]
    Unfinished(String),
    /// A PostgreSQL call failed.
    #[error("{what}: {source}")]
    Database {
        /// What the tool was doing.
        what: String,
        /// Why it failed.
        source: sqlx::Error,
    },
    /// An exactly call failed.
    #[error("{what}: {source}")]
    Exactly {
        /// What the tool was doing.
        what: String,
        /// Why it failed.
        source: Box<exactly::Error>,
    },
    /// A Kafka call failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What the tool was doing.
        what: String,
        /// Why it failed.
        source: KafkaError,
    },
}

impl Error {
    /// The exit status: 2 usage, 3 refused, 4 not found, 5 unfinished, 1 a failed call.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Refused(_) => 3,
            Error::NotFound(_) => 4,
            Error::Unfinished(_) => 5,
            Error::Database { .. } | Error::Exactly { .. } | Error::Kafka { .. } => 1,
        }
    }
}

/// Adds what the tool was doing to a failed call.
pub(crate) trait Context<T> {
    /// On error, says `what` failed (and why).
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Database { what: what(), source })
    }
}

impl<T> Context<T> for Result<T, exactly::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Exactly { what: what(), source: Box::new(source) })
    }
}

impl<T> Context<T> for Result<T, KafkaError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kafka { what: what(), source: exactly::redact::kafka_error(source) })
    }
}
