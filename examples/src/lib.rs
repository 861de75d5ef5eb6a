//! Shared parts of exactly's examples and main demo: the orders domain, the Kafka and
//! PostgreSQL they run against (containers started on demand, or yours), the handler
//! failures they check for, and the faults their test puts in on purpose. Their worker
//! processes are killed while they work by `exactly_testkit::kill_loop`.

pub mod environment;
pub mod failures;
pub mod fault;
pub mod orders;
