//! # exactly
//!
//! Process Kafka messages exactly once, with each consumer position stored in PostgreSQL in
//! the same transaction as the handler's writes.
//!
//! This crate is at its beginning: the workspace, the test bed (real Apache Kafka and
//! PostgreSQL in containers) and CI exist; the `Handler` trait, the runtime and the offset
//! store come next. See the book in `docs/` for what is guaranteed and how it is tested.

#[cfg(feature = "derive")]
#[doc(hidden)]
pub use exactly_macros as __macros;
