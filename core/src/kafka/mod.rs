//! Kafka clients: the user's properties and their safety checks, the consumer group
//! protocol, settings from the environment, what makes a client give up, the transactional
//! producer, trace context in record headers, and librdkafka's log.

pub(crate) mod check;
pub(crate) mod environment;
pub(crate) mod group_protocol;
pub(crate) mod log;
pub(crate) mod producer;
pub(crate) mod properties;
pub(crate) mod refusal;
pub(crate) mod trace_context;
