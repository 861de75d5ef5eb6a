//! How often a message has been tried: the one count the retry policy reads.
//!
//! A partition (Database mode's worker, each partition of a Kafka-mode group) keeps an
//! [`Attempts`] for the message that failed last; parked messages and dead letters keep
//! their count in their rows. Only a failure that is the message's own counts: a transient
//! database failure does not, nor (in Database mode) a failure inside a batch, where a
//! neighbour's effects may have caused it.

use crate::api::settings::RetryPolicy;

/// The message of one partition that failed last, and how often it has failed.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    last: Option<Failed>,
}

/// A message's failures so far.
#[derive(Debug, Clone)]
struct Failed {
    offset: i64,
    /// Failures counted against its tries.
    count: u32,
    /// Whether one of them was permanent, and why it failed last.
    permanent: bool,
    reason: String,
}

impl Attempts {
    /// Failures counted so far against the message at `offset`.
    pub(crate) fn failures(&self, offset: i64) -> u32 {
        match &self.last {
            Some(failed) if failed.offset == offset => failed.count,
            _ => 0,
        }
    }

    /// Which try at the message at `offset` the next one is, from 1.
    pub(crate) fn next_try(&self, offset: i64) -> u32 {
        self.failures(offset) + 1
    }

    /// Notes a failure of the message at `offset` (`counted`: it counts as a try) and
    /// returns its failures so far.
    pub(crate) fn failed(&mut self, offset: i64, counted: bool, permanent: bool, reason: String) -> u32 {
        let count = self.failures(offset) + u32::from(counted);
        self.last = Some(Failed { offset, count, permanent, reason });
        count
    }

    /// Why the message at `offset` failed for good, if it did (it failed inside a batch,
    /// and is dead-lettered once the messages before it have committed).
    pub(crate) fn permanent_failure(&self, offset: i64) -> Option<&str> {
        self.last
            .as_ref()
            .filter(|failed| failed.offset == offset && failed.permanent)
            .map(|failed| failed.reason.as_str())
    }
}

impl RetryPolicy {
    /// Whether a message that failed `failures` times (`permanent`: for good) has had all
    /// its tries: it then goes to the dead letters.
    pub(crate) fn spent(&self, failures: u32, permanent: bool) -> bool {
        permanent || failures >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_counted_failures_of_the_same_message() {
        let mut attempts = Attempts::default();
        assert_eq!(attempts.next_try(5), 1);
        assert_eq!(attempts.failed(5, true, false, "a".into()), 1);
        assert_eq!(attempts.failed(5, false, false, "transient".into()), 1, "a transient failure is not a try");
        assert_eq!(attempts.failed(5, true, false, "b".into()), 2);
        assert_eq!(attempts.next_try(5), 3);
        assert_eq!(attempts.next_try(6), 1, "another message starts again");
        assert_eq!(attempts.permanent_failure(5), None);
        attempts.failed(6, true, true, "invalid".into());
        assert_eq!(attempts.permanent_failure(6), Some("invalid"));
        assert_eq!(attempts.failures(5), 0, "only the message that failed last is kept");
        let policy = RetryPolicy::default().max_attempts(3);
        assert!(!policy.spent(2, false) && policy.spent(3, false) && policy.spent(1, true));
    }
}
