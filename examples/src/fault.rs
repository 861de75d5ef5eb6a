//! Faults put into the orders handler on purpose, **for tests only**: a test runs the demo
//! with one, and checks that the demo's own check then fails. A check that cannot fail
//! shows nothing; this is how the examples' test shows the demo's can.
//!
//! The demo's worker reads [`FAULT_VAR`]; nothing sets it outside `examples/tests/`.

/// The environment variable the demo's worker reads its fault from (test-only).
pub const FAULT_VAR: &str = "EXACTLY_DEMO_FAULT";

/// A way to make the orders handler wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Each order is inserted twice, as a framework that applied a message twice would:
    /// the demo must count duplicates and fail.
    ApplyTwice,
    /// The order with this id fails for good, so it goes to the dead letters: the demo must
    /// count the dead letter and the handler's failure, and fail.
    Reject(i64),
}

impl Fault {
    /// The fault named by [`FAULT_VAR`] (`apply-twice` or `reject:<order id>`), if any.
    ///
    /// # Errors
    /// When the variable is set to anything else: a typo must not run the demo unbroken.
    pub fn from_env() -> anyhow::Result<Option<Fault>> {
        let Ok(value) = std::env::var(FAULT_VAR) else { return Ok(None) };
        match value.split_once(':') {
            None if value == "apply-twice" => Ok(Some(Fault::ApplyTwice)),
            Some(("reject", id)) => Ok(Some(Fault::Reject(id.parse()?))),
            _ => anyhow::bail!("{FAULT_VAR}={value}: expected `apply-twice` or `reject:<order id>`"),
        }
    }
}
