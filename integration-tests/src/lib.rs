//! Test harness for exactly's own tests, built on [`exactly_testkit`] (the kit users test
//! their own handlers with: real Apache Kafka and PostgreSQL in containers, records in and
//! out, waits, crash tests). This crate adds what only exactly's own tests need: recording
//! handlers, fault injection, proxies, and the fault suite's checks and table rows.

pub mod batch_recorder;
pub mod both_modes;
pub mod captured;
pub mod coordinators;
pub mod copier;
pub mod copy_check;
pub mod faults;
pub mod group_describe;
pub mod in_flight;
pub mod pg_proxy;
pub mod progress;
pub mod recorder;
pub mod support;

// The containers, names, waits and records come from the test kit users test their own
// handlers with; the paths below keep this crate's tests reading as they always have.
pub use exactly_testkit::{
    Check, Input, Isolation, Kafka, Node, Postgres, ReadRecord, TestDatabase, committed_records, engine, feed, images,
    kafka, names, node, pki, postgres, produce, read, read_to_end, unique, wait, wait_for, wait_until,
};
