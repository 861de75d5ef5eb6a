//! The offset store: each group's position in each partition, kept in PostgreSQL.
//!
//! A position is the next offset to process. It commits in the same transaction as the
//! handler's effects, so effects and position are never out of step. Every assignment of a
//! partition *claims* it, raising its epoch; every commit checks both the epoch and the
//! expected position (compare-and-set), so an instance that lost the partition (a zombie)
//! can never commit effects for it again. These functions read and set positions for
//! operators, and create or upgrade exactly's tables.

pub use crate::store::migrate::{MigrationState, migrate, migration_status};
pub use crate::store::offsets::{StoredPosition, list, position, set};
