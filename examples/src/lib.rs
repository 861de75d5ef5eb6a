//! Shared parts of exactly's examples and main demo: the orders domain, the Kafka and
//! PostgreSQL they run against (containers started on demand, or yours), the killing of
//! their worker process while it works, the handler failures they check for, and the
//! faults their test puts in on purpose.

pub mod crashes;
pub mod environment;
pub mod failures;
pub mod fault;
pub mod orders;
