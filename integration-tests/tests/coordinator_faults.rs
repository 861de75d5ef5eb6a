//! Fault 15 of the fault suite: Kafka mode on the real three-broker cluster, the broker that
//! coordinates both the consumer group and the transactions killed (SIGKILL) while a steady
//! feed keeps transactions committing, then started again. Nothing is pinned: the runtime
//! has to find both coordinators again on the surviving brokers. This is the fault the
//! mock-cluster test (fault 7) keeps away from, because the mock shows aborted records to
//! `read_committed` readers (see `the_mock_cluster_shows_aborted_records_to_read_committed_readers`).
//!
//! Each round starts a runtime whose transactional id is coordinated by the broker that
//! coordinates the group at that moment (coordinators move when a broker dies), so one kill
//! takes both down at once, and stops it gracefully at the end of the round.

use std::io::Write as _;
use std::time::{Duration, Instant};

use exactly_integration_tests::coordinators::{
    create_internal_topics, described_coordinators, group_coordinator, transactional_id_coordinated_by,
};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::keyed_inputs;
use exactly_integration_tests::faults::{FaultRun, Profile, check_and_report};
use exactly_integration_tests::progress::{CommittedOffsets, SteadyFeed};
use exactly_integration_tests::support::Running;
use exactly_integration_tests::{Kafka, unique, wait_until};

const WAIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_coordinating_the_group_and_the_transactions_killed_during_commits() -> anyhow::Result<()> {
    let rounds = Profile::current().pick(1, 3);
    let kafka = Kafka::cluster().await?;
    let (input, output) = (kafka.unique_topic("coord-in", 3).await?, kafka.unique_topic("coord-out", 3).await?);
    create_internal_topics(&kafka)?;
    let group = unique("coord");
    let inputs = keyed_inputs(200_000, 30);
    let feed = SteadyFeed::start(kafka.client_config(), input.clone(), inputs.clone(), 30, Duration::from_millis(100));
    // Input offsets committed: what the transactions that committed carried (0 while the
    // group's coordinator cannot answer).
    let committed = CommittedOffsets::new(&kafka, &group, &input, 3)?;
    let copied = || committed.sum().unwrap_or(0);
    let mut recovery = Vec::new();
    // Rounds whose kill made the runtime report an error. librdkafka may also ride out a
    // coordinator's loss within its retries (the transaction in flight carries on with the
    // new coordinator), reporting nothing: that a kill struck a transaction in flight is
    // shown by copies committing up to the kill, not by an error.
    let mut reported_rounds = 0;
    for round in 0..rounds {
        let coordinator = group_coordinator(&kafka, &group)?;
        let transactional_id = transactional_id_coordinated_by(&kafka, &format!("{group}-tx{round}"), coordinator)?;
        let runtime = exactly::Runtime::builder()
            .transactional_id(&transactional_id)
            .revoke_grace(Duration::from_secs(5))
            .handler(Copier::new(&input, &output, &group));
        let running = Running::start(&kafka, runtime).await?;
        let before = copied();
        wait_until(WAIT, "copies committed before the kill", || async { Ok((copied() > before).then_some(())) })
            .await?;
        // Kafka itself confirms both coordinators are on that broker (asked from another one).
        let via = coordinator % 3 + 1;
        let described = described_coordinators(&kafka, via, &group, &transactional_id).await?;
        anyhow::ensure!(
            described == (coordinator, coordinator),
            "round {round}: expected both coordinators on broker {coordinator}, Kafka describes {described:?}"
        );
        // Transactions commit ten times a second while input flows: a copy committed in the
        // second before the kill means one was open when it struck.
        let flowing = copied();
        tokio::time::sleep(Duration::from_secs(1)).await;
        anyhow::ensure!(copied() > flowing, "round {round}: no copy committed in the second before the kill");
        kafka.broker(coordinator).kill().await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        kafka.broker(coordinator).start_again().await?;
        let back = Instant::now();
        kafka.wait_ready(3, WAIT).await?;
        let at_restart = copied();
        wait_until(WAIT, "copies committed after the coordinators' broker came back", || async {
            Ok((copied() > at_restart).then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}; the runtime reported: {:?}", running.reported.all()))?;
        recovery.push(back.elapsed());
        // What the kill did to the commits in flight, for the record (shown even when passing).
        let reported = running.reported.all();
        let _ =
            writeln!(std::io::stderr().lock(), "round {round}: broker {coordinator} killed; reported: {reported:?}");
        running.stop().await?;
        reported_rounds += usize::from(!reported.is_empty());
    }
    let produced = feed.finish().await?;
    // A last runtime finishes the input.
    let transactional_id = unique("coord-tx-last");
    let runtime =
        exactly::Runtime::builder().transactional_id(&transactional_id).handler(Copier::new(&input, &output, &group));
    let running = Running::start(&kafka, runtime).await?;
    wait_until(WAIT, "every input copied", || async { Ok((copied() >= produced as u64).then_some(())) }).await?;
    running.stop().await?;
    let run = FaultRun::kafka_mode(kafka.client_config(), &inputs[..produced], &input, &output, &group);
    let fault = format!(
        "broker coordinating the group and the transactions killed, unpinned, 3-broker cluster \
         ({reported_rounds} of {rounds} kills reported by the runtime)"
    );
    check_and_report(fault, "Kafka", rounds, recovery, &run).await?;
    Ok(())
}
