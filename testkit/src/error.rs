//! The kit's error: a wait that gave up, or a check of effects that found them wrong.
//!
//! Starting containers, producing and reading return [`anyhow::Error`] instead: their
//! failures are only ever shown to the person reading a failed test, with the chain of
//! causes, never matched on. The variants here are the ones a test may want to match.

use std::time::Duration;

/// A wait that gave up, or effects that are not exactly once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A condition still did not hold at the deadline ([`wait_for`](crate::wait_for)).
    #[error("timed out after {after:?} waiting for {what}: {last}")]
    TimedOut {
        /// What was waited for.
        what: String,
        /// The timeout.
        after: Duration,
        /// The last observation.
        last: String,
    },
    /// A condition reported that it can no longer hold, which ended the wait at once.
    #[error("gave up waiting for {what}: {source:#}")]
    Fatal {
        /// What was waited for.
        what: String,
        /// What the condition reported.
        source: anyhow::Error,
    },
    /// Some input's effect is missing, or there twice, or an effect matches no input
    /// ([`CrashReport::each_once`](crate::CrashReport::each_once)).
    #[error(
        "effects are not exactly once: of {inputs} inputs, {missing} have no effect and {duplicated} \
         have more than one; {unexpected} effects match no input. For example: {examples}"
    )]
    NotExactlyOnce {
        /// How many inputs were published.
        inputs: usize,
        /// Inputs with no effect.
        missing: usize,
        /// Inputs with two effects or more.
        duplicated: usize,
        /// Effects that match no input.
        unexpected: usize,
        /// A few of the problems, as text.
        examples: String,
    },
    /// Two inputs of one key took effect in another order than their offsets
    /// ([`CrashReport::in_key_order`](crate::CrashReport::in_key_order)).
    #[error("effects of key {key} are out of order: {detail}")]
    OutOfKeyOrder {
        /// The key, as text.
        key: String,
        /// Which offsets came in which order.
        detail: String,
    },
}
