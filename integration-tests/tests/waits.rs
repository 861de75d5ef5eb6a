//! The harness's waits end at once on a condition that can no longer hold, instead of
//! waiting out their timeout: each is given ten minutes and must return well before.

use std::time::Duration;

use exactly_integration_tests::support::wait_for_committed;
use exactly_integration_tests::{Input, Kafka, produce};
use exactly_testkit::Error;

/// Longer than any test may run: a wait that returns at all did not wait it out.
const TEN_MINUTES: Duration = Duration::from_secs(600);
/// Generous, for a loaded machine (a refused login is waited out for 15 s first).
const TEST_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_committed_records_fails_at_once_when_there_are_more() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("more", 1).await?;
    produce(&kafka.client_config(), &topic, (0..3).map(|i| Input::to(0, "k", format!("m-{i}")))).await?;

    let outcome = tokio::time::timeout(TEST_LIMIT, wait_for_committed(kafka, &topic, 2, TEN_MINUTES))
        .await
        .map_err(|_| anyhow::anyhow!("3 records for 2 expected did not end the wait"))?;

    let error = outcome.expect_err("3 records for 2 expected");
    let fatal = matches!(error.downcast_ref::<Error>(), Some(Error::Fatal { .. }));
    assert!(fatal, "expected Error::Fatal, got {error:#}");
    assert!(format!("{error:#}").contains("3 records for 2 inputs"), "{error:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_login_fails_at_once_when_the_broker_refuses_it() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let wrong = kafka.plain_user()?.with_password("not-the-password");

    let outcome = tokio::time::timeout(TEST_LIMIT, kafka.wait_authenticated(&wrong, TEN_MINUTES))
        .await
        .map_err(|_| anyhow::anyhow!("a refused login did not end the wait"))?;

    let error = outcome.expect_err("the password is wrong");
    let refused = match error.downcast_ref::<Error>() {
        Some(Error::Fatal { source, .. }) => source.downcast_ref::<exactly::Error>(),
        _ => None,
    };
    assert!(
        matches!(refused, Some(exactly::Error::KafkaAuthentication { .. })),
        "expected a refused login ending the wait, got {error:#}"
    );
    Ok(())
}
