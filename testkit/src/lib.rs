//! Test your [exactly](https://docs.rs/exactly) handlers with `cargo test`, against a real
//! Apache Kafka and a real PostgreSQL in containers, and under crashes.
//!
//! Add it as a dev-dependency. A test then has, in a few lines:
//!
//! - **Kafka and PostgreSQL**: [`Kafka::shared`] and [`Postgres::shared`] start one
//!   container each per test binary, on first use; [`Kafka::unique_topic`] and
//!   [`Postgres::database`] give each test its own topics and a fresh database.
//!   [`Kafka::single`] and [`Postgres::dedicated`] give a test containers of its own, to stop
//!   and start ([`Node`]). [`PgBouncer`] puts Debian's pooler, in session or transaction
//!   mode, in front of a server of its own. [`Node::cut_off`] and
//!   [`Node::partition_from`] make network partitions (as root), [`Node::heal`] ends them.
//! - **Input**: [`Input`] (JSON or bytes, with a key and headers) and [`produce()`].
//! - **Your runtime in the test**: [`Running`] runs a runtime in the background and
//!   collects what it reported.
//! - **Waiting on the truth**: [`caught_up`] waits until the group's stored positions
//!   reach the end of every partition (then every input has taken effect, and none will
//!   again), never a sleep; [`wait_for`] and [`wait_until`] for other conditions.
//! - **Output**: [`read_to_end`] reads a topic back as a `read_committed` reader sees it.
//! - **A crash test**: [`CrashTest`] runs your handler in worker processes, kills them with
//!   SIGKILL again and again while input flows, and its [`CrashReport`] checks that each
//!   input took effect once ([`CrashReport::each_once`]) and each key's inputs in order
//!   ([`CrashReport::in_key_order`]).
//!
//! The book's chapter "Testing your handlers" walks from an empty test to a crash test.
//!
//! # Images
//!
//! [`images`] chooses them: the image `EXACTLY_KAFKA_IMAGE` / `EXACTLY_POSTGRES_IMAGE`
//! name if set; else the official `apache/kafka` and `postgres` images if the engine has
//! them; else the local drop-ins exactly's `scripts/setup` builds where no registry
//! answers; else the official images, which the engine pulls. When no Docker engine
//! answers, the first container call fails with a sentence that says how to start one.
//!
//! # Errors
//!
//! Starting containers, producing and reading return [`anyhow::Error`]: their failures are
//! for the person reading a failed test, with their causes. Waits and checks return
//! [`Error`], whose variants a test can match.

pub mod crash;
pub mod engine;
mod error;
pub mod images;
pub mod kafka;
pub mod kill_loop;
pub mod names;
mod network;
pub mod node;
pub mod pgbouncer;
pub mod pki;
pub mod positions;
pub mod postgres;
pub mod produce;
pub mod read;
mod running;
pub mod wait;

pub use crash::{CrashReport, CrashTest, WorkerContext};
pub use error::Error;
pub use kafka::Kafka;
pub use names::unique;
pub use node::Node;
pub use pgbouncer::{PgBouncer, PoolMode};
pub use positions::{Store, caught_up};
pub use postgres::{Postgres, TestDatabase};
pub use produce::{Input, Sent, feed, produce};
pub use read::{Isolation, ReadRecord, committed_records, read_to_end};
pub use running::{Reported, Running};
pub use wait::{Check, wait_for, wait_until};
