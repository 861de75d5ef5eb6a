//! Waiting for a condition: polled until it holds, until it can no longer hold, or until a
//! deadline.
//!
//! [`wait_for`] asks a condition that answers in three ways ([`Check`]): done, not yet, or
//! failed for good. A failure for good ends the wait at once; only "not yet" is waited out.
//! [`wait_until`] is the two-way form, for conditions that read systems a test is
//! bouncing, where an error is a moment's unavailability and so counts as "not yet".

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// How often a condition is asked again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What one look at a condition found.
#[derive(Debug)]
pub enum Check<T> {
    /// It holds, with what was found.
    Done(T),
    /// Not yet: what was seen, for the message if the deadline passes.
    NotYet(String),
    /// It can no longer hold (more records than could ever be expected, credentials
    /// refused): the wait ends now with this error.
    Fatal(anyhow::Error),
}

/// Polls `condition` every 100 ms until it is [`Check::Done`], returns at once when it is
/// [`Check::Fatal`], and gives up once `timeout` passes with it still [`Check::NotYet`].
///
/// # Errors
/// [`Error::Fatal`] with the condition's error; [`Error::TimedOut`] with `what`
/// and the last observation.
pub async fn wait_for<F, Fut, T>(timeout: Duration, what: &str, mut condition: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match condition().await {
            Check::Done(value) => return Ok(value),
            Check::NotYet(seen) => seen,
            Check::Fatal(source) => return Err(Error::Fatal { what: what.to_owned(), source }),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::TimedOut { what: what.to_owned(), after: timeout, last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes. An error counts as
/// "not yet" (a broker or database being restarted answers again); a condition that can
/// fail for good should use [`wait_for`] instead.
///
/// # Errors
/// When the condition still fails at the deadline, with `what` and the last observation.
pub async fn wait_until<F, Fut, T>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let value = wait_for(timeout, what, || {
        let look = condition();
        async move {
            match look.await {
                Ok(Some(value)) => Check::Done(value),
                Ok(None) => Check::NotYet("condition not met".to_owned()),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        }
    })
    .await?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any test may run: a wait that returns at all did not wait it out.
    const TEN_MINUTES: Duration = Duration::from_secs(600);
    /// Generous, for a loaded machine; still far below [`TEN_MINUTES`].
    const TEST_LIMIT: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_fatal_condition_ends_a_ten_minute_wait_at_once() {
        let mut looks = 0;
        let outcome = tokio::time::timeout(
            TEST_LIMIT,
            wait_for(TEN_MINUTES, "a condition that cannot hold", || {
                looks += 1;
                let check = if looks < 3 {
                    Check::<()>::NotYet(format!("look {looks}"))
                } else {
                    Check::Fatal(anyhow::anyhow!("three records for two inputs"))
                };
                async move { check }
            }),
        )
        .await
        .expect("a fatal condition must end the wait, not its ten-minute timeout");
        match outcome {
            Err(Error::Fatal { what, source }) => {
                assert_eq!(what, "a condition that cannot hold");
                assert_eq!(source.to_string(), "three records for two inputs");
            }
            other => panic!("expected Error::Fatal, got {other:?}"),
        }
        assert_eq!(looks, 3, "asked until fatal, not after");
    }

    #[tokio::test]
    async fn not_yet_is_asked_again_until_done() {
        let mut looks = 0;
        let found = wait_for(TEN_MINUTES, "the third look", || {
            looks += 1;
            let check = if looks < 3 { Check::NotYet(String::new()) } else { Check::Done(looks) };
            async move { check }
        })
        .await
        .expect("done on the third look");
        assert_eq!(found, 3);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_times_out_with_its_last_observation() {
        let outcome =
            wait_for(Duration::from_millis(250), "nothing", || async { Check::<()>::NotYet("still 0".into()) }).await;
        assert!(
            matches!(&outcome, Err(Error::TimedOut { last, .. }) if last == "still 0"),
            "expected a timeout, got {outcome:?}"
        );
    }
}
