//! Every state of each model within its bounds, explored breadth first: the protocol as
//! the code runs it keeps its invariants, and with a check removed the checker finds the
//! counterexample the check is there for.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use exactly_model::database::{self, DatabaseMode};
use exactly_model::relay::{self, OutboxRelay};
use stateright::{Checker, HasDiscoveries, Model, Path};

/// Explores every state of `model` breadth first, and prints how many and how long.
fn explore<M>(label: &str, model: M) -> impl Checker<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    run(label, model.checker())
}

/// Explores `model` breadth first until a state breaks `property`, and prints that
/// state's path: a short one, as breadth first finds it (the checker keeps the last it
/// finds, and stops at the end of the block of states it found it in).
fn counterexample<M>(label: &str, model: M, property: &'static str) -> Path<M::State, M::Action>
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    let checker = run(label, model.checker().finish_when(HasDiscoveries::AnyOf([property].into())));
    let Some(path) = checker.discovery(property) else {
        panic!("the checker found no counterexample to \"{property}\"");
    };
    println!("counterexample to \"{property}\": {path}last state: {:#?}", path.last_state());
    path
}

fn run<M>(label: &str, builder: stateright::CheckerBuilder<M>) -> impl Checker<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Debug + Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Debug + Clone + PartialEq,
{
    let started = Instant::now();
    let checker = builder.spawn_bfs().join();
    println!(
        "{label}: {} states ({} unique), depth {}, in {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

#[test]
fn a_sequential_partition_applies_every_message_once() {
    let checker = explore("sequential", DatabaseMode::sequential());
    checker.assert_properties();
}

#[test]
fn a_key_concurrent_partition_applies_every_message_once() {
    let checker = explore("keyed", DatabaseMode::keyed());
    checker.assert_properties();
}

/// The compare-and-set on the expected position alone keeps a sequential partition's
/// effects single: every advance starts from the stored position, which only moves
/// forward. The epoch is the fence of a zombie's lanes and parked retries, and what stops
/// it; see `without_the_epoch_check_a_zombie_lane_applies_an_effect_twice`.
#[test]
fn a_sequential_partition_without_the_epoch_check_is_still_kept_by_the_expected_position() {
    let checker = explore("sequential without the epoch check", DatabaseMode::sequential().without_epoch_check());
    checker.assert_properties();
}

/// The epoch alone keeps a sequential partition's effects single: only the last claim's
/// worker commits, from the position its claim read.
#[test]
fn a_sequential_partition_without_the_expected_position_is_still_kept_by_the_epoch() {
    let model = DatabaseMode::sequential().without_expected_check();
    let checker = explore("sequential without the expected position", model);
    checker.assert_properties();
}

#[test]
fn without_either_check_two_owners_apply_an_effect_twice() {
    let model = DatabaseMode::sequential().without_epoch_check().without_expected_check();
    let path = counterexample("sequential without either check", model, database::NO_EFFECT_TWICE);
    assert!(path.last_state().effects.contains(&2));
}

/// A lane's commit is fenced by the epoch alone (`offsets::hold`): without it, a zombie's
/// lane commits a message the new owner already committed and compacted away.
#[test]
fn without_the_epoch_check_a_zombie_lane_applies_an_effect_twice() {
    let path = counterexample(
        "keyed without the epoch check",
        DatabaseMode::keyed().without_epoch_check(),
        database::NO_EFFECT_TWICE,
    );
    assert!(path.last_state().effects.contains(&2));
}

#[test]
fn a_key_concurrent_partition_without_the_expected_position_is_still_kept_by_the_epoch() {
    let checker = explore("keyed without the expected position", DatabaseMode::keyed().without_expected_check());
    checker.assert_properties();
}

#[test]
fn the_relay_publishes_every_row_once() {
    let checker = explore("relay", OutboxRelay::new());
    checker.assert_properties();
}

/// Without a shared `transactional.id`, a relay that lost its lock but still runs commits
/// the batch its successor publishes again.
#[test]
fn without_the_producer_fence_a_zombie_relay_publishes_a_row_twice() {
    let path = counterexample(
        "relay without the producer fence",
        OutboxRelay::new().without_fencing(),
        relay::NO_RECORD_TWICE,
    );
    assert!(path.last_state().published.contains(&2));
}

/// `publish` runs `init_transactions` before `read_position`: the other way round, a
/// predecessor that lost its lock commits after its successor read the position, and the
/// successor publishes the same rows again.
#[test]
fn reading_the_position_before_the_fence_publishes_a_row_twice() {
    let model = OutboxRelay::new().reading_before_the_fence();
    let path = counterexample("relay reading the position before the fence", model, relay::NO_RECORD_TWICE);
    assert!(path.last_state().published.contains(&2));
}

/// Without `txid < xmin`, a row of a transaction that commits after a later one's row was
/// published lands behind the position, and is never published.
#[test]
fn without_the_xmin_check_the_relay_skips_a_row() {
    counterexample("relay without the xmin check", OutboxRelay::new().without_xmin_check(), relay::NO_RECORD_SKIPPED);
}

/// The advisory lock is for progress, not safety: with every instance publishing at once,
/// each `init_transactions` fences the others, and the position it reads back after it is
/// the last committed one.
#[test]
fn without_the_advisory_lock_the_producer_fence_still_keeps_every_row_once() {
    let checker = explore("relay without the advisory lock", OutboxRelay::new().without_advisory_lock());
    checker.assert_properties();
}

/// Larger bounds than the suite's, by hand (about a minute each in a debug build):
/// `cargo test -p exactly-model -- --ignored --nocapture`.
#[test]
#[ignore = "about a minute in a debug build"]
fn a_key_concurrent_partition_with_three_claims_applies_every_message_once() {
    let checker = explore("keyed, 3 claims", DatabaseMode { claims: 3, ..DatabaseMode::keyed() });
    checker.assert_properties();
}

#[test]
#[ignore = "about half a minute in a debug build"]
fn the_relay_publishes_three_writers_rows_once() {
    let checker = explore("relay, 3 writers", OutboxRelay { writers: 3, ..OutboxRelay::new() });
    checker.assert_properties();
}
