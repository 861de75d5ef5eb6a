//! Test harness for exactly: real Apache Kafka and PostgreSQL in containers.
//!
//! Every claim exactly makes (no message lost, none applied twice) is tested against a real
//! broker, with its transaction coordinator, and a real PostgreSQL. This crate starts them
//! with [testcontainers], gives each test its own topics, group ids, transactional ids and
//! database, and lets a test stop, kill, start, pause and unpause any node.
//!
//! - [`Kafka::shared`] / [`Postgres::shared`]: one container per test binary, shared by its
//!   tests (each test still gets fresh names and a fresh database).
//! - [`Kafka::single`], [`Kafka::cluster`], [`Postgres::dedicated`]: containers owned by one
//!   test, for tests that bounce them.
//!
//! Images come from [`images`]: the official `apache/kafka` and `postgres` images by default,
//! the locally built drop-ins that `scripts/setup` makes where no registry is reachable, or
//! whatever `EXACTLY_KAFKA_IMAGE` / `EXACTLY_POSTGRES_IMAGE` name.
//!
//! Readiness is always a real condition (metadata answered, `SELECT 1`), never a sleep.

pub mod batch_recorder;
pub mod both_modes;
pub mod captured;
pub mod coordinators;
pub mod copier;
pub mod copy_check;
pub mod engine;
pub mod faults;
pub mod group_describe;
pub mod images;
pub mod in_flight;
pub mod kafka;
pub mod names;
pub mod node;
pub mod pg_proxy;
pub mod pki;
pub mod postgres;
pub mod produce;
pub mod progress;
pub mod read;
pub mod recorder;
pub mod support;
pub mod wait;

pub use kafka::Kafka;
pub use names::unique;
pub use node::Node;
pub use postgres::{Postgres, TestDatabase};
pub use produce::{Input, feed, produce};
pub use read::{Isolation, ReadRecord, committed_records, read_to_end};
pub use wait::{Check, WaitError, wait_for, wait_until};
