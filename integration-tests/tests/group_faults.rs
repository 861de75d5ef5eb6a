//! Faults 3 and 4 of the fault suite: the consumer group itself. Instances join and leave
//! (1 to 3 to 1, repeatedly, under eager and cooperative assignment), and an instance frozen
//! with SIGSTOP past its session timeout comes back as a zombie. Both modes run on the same
//! input while a steady feed keeps every partition busy; afterwards the usual check applies
//! (each value once, order per partition and per key, positions at the end, no transaction
//! left open) and each test prints its rows of the fault table.
//!
//! Recovery here is the time from a membership change (or a freeze) until every partition
//! has moved again in that mode: the time the group needs to work as a whole again (see
//! `BothModes`).

use std::process::ExitStatus;
use std::time::Duration;

use exactly::GroupProtocol;

use exactly_integration_tests::both_modes::BothModes;
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::faults::Profile;
use exactly_integration_tests::group_describe::{consumer_group_state, ensure_group_protocol};
use exactly_integration_tests::recorder::{Recorder, effect_counts};
use exactly_integration_tests::support::{
    Assignment, GROUP_PROTOCOL_ENV, Running, builder, signal, spawn_logged, topic_and_database,
};
use exactly_integration_tests::{Input, produce, unique, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// Fault 3: instances go 1, 2, 3, 2, 1, `rounds` times, assigned as `assignment` says.
/// Every instance runs both modes; leaving is graceful (a rebalance, not a crash: crashes
/// are fault 1).
async fn churn(assignment: Assignment, label: &str) -> anyhow::Result<()> {
    let rounds = Profile::current().pick(1, 5);
    let run = BothModes::new().await?;
    let transactional_id = unique("group-tx");
    let start = |instance: String| {
        let runtime = assignment
            .apply(builder(&run.url))
            .transactional_id(format!("{transactional_id}-{instance}"))
            .handler(Copier::new(&run.input, &run.output, &run.copy_group))
            .handler(Recorder::new(&run.input, &run.record_group, &instance));
        Running::start(run.kafka, runtime)
    };
    let protocol_checked = async || {
        for group in [&run.copy_group, &run.record_group] {
            ensure_group_protocol(run.kafka, group, assignment.protocol(), 1)?;
        }
        Ok(())
    };
    run.churn_and_check(&format!("group churn 1→3→1, {label} assignment"), rounds, start, protocol_checked).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_with_eager_assignment() -> anyhow::Result<()> {
    churn(Assignment::Classic("range"), "eager (range)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_with_cooperative_assignment() -> anyhow::Result<()> {
    churn(Assignment::Classic("cooperative-sticky"), "cooperative").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    churn(Assignment::Broker, "consumer group protocol (KIP-848), broker-side").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_frozen_past_its_session_timeout_comes_back_as_a_zombie() -> anyhow::Result<()> {
    zombies(&[], "SIGSTOP past the session timeout, then SIGCONT", "session timed out").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_frozen_past_its_session_timeout_comes_back_as_a_zombie_under_the_consumer_group_protocol()
-> anyhow::Result<()> {
    let fault = "SIGSTOP past the session timeout, then SIGCONT, consumer group protocol (KIP-848)";
    zombies(&[GROUP_PROTOCOL_ENV], fault, ZOMBIE_SIGN_CONSUMER_PROTOCOL).await
}

/// What a copier put out of its group logs under the consumer group protocol: the broker
/// fenced its member epoch, and librdkafka reported its partitions lost.
const ZOMBIE_SIGN_CONSUMER_PROTOCOL: &str = "lost its partitions";

/// Fault 4: two processes per mode, with `env`; one of each is frozen with SIGSTOP for
/// twice its 6 s session timeout, then resumed, `rounds` times. The group moves its
/// partitions to the other process; the resumed zombie must not commit anything for them.
/// A copier's log must show `fenced_sign` at least once: it really was put out of the group.
async fn zombies(env: &[(&str, &str)], fault: &str, fenced_sign: &str) -> anyhow::Result<()> {
    let rounds = Profile::current().pick(2, 8);
    let run = BothModes::new().await?;
    let brokers = run.kafka.bootstrap_servers();
    let log = |name: &str| std::env::temp_dir().join(format!("{}-{name}.log", run.record_group));
    let recorder = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_recorder-worker"),
            &[&brokers, &run.url, &run.input, &run.record_group],
            &[&[("EXACTLY_TEST_INSTANCE", instance)], env].concat(),
            &log(instance),
        )
    };
    let copier = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_copier"),
            &[&brokers, &run.input, &run.output, &run.copy_group, &format!("{}-{instance}", run.copy_group), instance],
            &[&[("COPIER_DELAY_MS", "2")], env].concat(),
            &log(instance),
        )
    };
    let (inputs, feed) = run.feed();
    let mut processes =
        vec![recorder("recorder-a")?, recorder("recorder-b")?, copier("copier-a")?, copier("copier-b")?];
    let outcome = async {
        run.wait_both_moved("the processes starting", &(vec![0; 6], vec![0; 6])).await?;
        let mut recovery = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which process of each pair freezes.
            let (recorder, copier) = if round % 2 == 0 { (0, 2) } else { (1, 3) };
            signal(&processes[recorder], "STOP")?;
            signal(&processes[copier], "STOP")?;
            let frozen = std::time::Instant::now();
            // The other two take over the frozen ones' partitions after the session timeout.
            run.recover(&format!("round {round}: taking over from the frozen"), frozen, 1, &mut recovery).await?;
            tokio::time::sleep(Duration::from_secs(12).saturating_sub(frozen.elapsed())).await;
            signal(&processes[recorder], "CONT")?;
            signal(&processes[copier], "CONT")?;
            // The zombies notice they were fenced, rejoin, and the group settles again.
            let resumed = std::time::Instant::now();
            run.recover(
                &format!("round {round}: after the zombies resumed"),
                resumed,
                2,
                &mut (Vec::new(), Vec::new()),
            )
            .await?;
        }
        let produced = feed.finish().await?;
        run.check(fault, rounds, &inputs[..produced], recovery).await
    }
    .await;
    for process in &mut processes {
        signal(process, "CONT")?;
        signal(process, "TERM")?;
        process.wait()?;
    }
    outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess logs: {}", log("*").display()))?;
    // They really were zombies: a frozen copier's session expired while it was stopped.
    let copier_logs = std::fs::read_to_string(log("copier-a"))? + &std::fs::read_to_string(log("copier-b"))?;
    assert!(copier_logs.contains(fenced_sign), "no copier was ever fenced out of the group");
    Ok(())
}

/// Static membership under the consumer group protocol: an instance restarted at once after
/// a SIGKILL, with its predecessor's `group.instance.id`, is refused while the broker still
/// counts the predecessor a member, and stops saying so (`KafkaConsumerFailed`); once the
/// session timeout removed the predecessor, a restart carries on; a restart after a clean
/// shutdown is not refused. Every message is recorded once across all four lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    exactly::migrate(&pool).await?;
    let group = unique("static");
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let brokers = kafka.bootstrap_servers();
    let env = [("EXACTLY_TEST_INSTANCE", "static-a"), GROUP_PROTOCOL_ENV];
    let spawn = || spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&brokers, &url, &topic, &group], &env, &log);
    let mut produced = 0;
    let mut feed_and_wait = async |what: &str| -> anyhow::Result<()> {
        let round = produced / 100;
        let records = (0..100).map(|i| Input::to(i % 2, format!("k{i}"), format!("r{round}-{i}")));
        produce(&kafka.client_config(), &topic, records).await?;
        produced += 100;
        wait_until(WAIT, what, || async {
            Ok((effect_counts(&pool, &group).await?.0 == i64::from(produced)).then_some(()))
        })
        .await
    };

    let mut first = spawn()?;
    feed_and_wait("the first life to record the first 100").await?;
    first.kill()?;
    first.wait()?;
    // At once: the broker still counts the killed member in for its 6 s session.
    let mut refused = spawn()?;
    let status = wait_for_exit(&mut refused, Duration::from_secs(60)).await?;
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(
        !status.success() && text.contains("is still in the group"),
        "the restart with a live member's id was not refused with the reason ({status}); see {}",
        log.display()
    );
    wait_until(WAIT, "the killed member's session to expire", || async {
        Ok(consumer_group_state(kafka, &group)?.is_none_or(|(_, members)| members == 0).then_some(()))
    })
    .await?;

    let mut third = spawn()?;
    feed_and_wait("the life after the session timeout to carry on").await?;
    ensure_group_protocol(kafka, &group, GroupProtocol::Consumer, 1)?;
    signal(&third, "TERM")?;
    anyhow::ensure!(third.wait()?.success(), "a clean shutdown failed; see {}", log.display());
    let mut fourth = spawn()?;
    feed_and_wait("the life after a clean shutdown to carry on").await?;
    anyhow::ensure!(fourth.try_wait()?.is_none(), "the restart after a clean shutdown stopped; see {}", log.display());
    signal(&fourth, "TERM")?;
    fourth.wait()?;
    let expected = i64::from(produced);
    assert_eq!(effect_counts(&pool, &group).await?, (expected, expected), "a message was recorded twice or lost");
    Ok(())
}

/// Waits up to `timeout` for `child` to exit.
async fn wait_for_exit(child: &mut std::process::Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the process was still running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
