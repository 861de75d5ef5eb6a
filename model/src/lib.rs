//! Checked models of exactly's protocols: the claim, fence and advance of Database mode
//! ([`database`]) and the outbox relay's position ([`relay`]).
//!
//! Each model is a [`stateright::Model`]: its state is the database's rows, Kafka's
//! committed records and each process's own memory; its actions are the steps of the code,
//! named in their doc comments, in any order any process may take them (rebalances, a
//! zombie that still believes it owns the partition, crashes, COMMITs whose reply is lost).
//! The tests explore every state reachable within small bounds, breadth first, and check
//! that no effect is applied twice and no offset skipped; with a check of the protocol
//! removed, they show the counterexample the checker finds.
//!
//! ```
//! use exactly_model::database::{DatabaseMode, NO_EFFECT_TWICE};
//! use stateright::{Checker, Model};
//!
//! // Two claims rather than three, to keep the example quick.
//! let model = DatabaseMode { claims: 2, ..DatabaseMode::sequential() };
//! let checker = model.checker().spawn_bfs().join();
//! checker.assert_no_discovery(NO_EFFECT_TWICE);
//! ```
//!
//! The book's reliability chapter says what the models cover and what they do not.
//!
//! Why stateright: the models are Rust, beside the code they describe, and its checker
//! explores them exhaustively and prints the shortest path to a broken invariant. `loom`
//! and `shuttle` explore the interleavings of threads in one process, not of processes
//! around a database and a broker that crash; TLA+ is not a Rust package.

pub mod database;
pub mod relay;
