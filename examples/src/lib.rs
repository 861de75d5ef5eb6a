//! Shared parts of exactly's examples and main demo: the orders domain, and the Kafka and
//! PostgreSQL they run against (containers started on demand, or yours).

pub mod environment;
pub mod orders;
