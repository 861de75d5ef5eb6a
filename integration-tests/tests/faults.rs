//! The fault-injection suite: each test injects one kind of fault into a run over unique
//! input values, then applies the same check (each value exactly once, per-partition order
//! where promised, stored positions at the end of the input, no transaction left open on
//! the output) and prints a row of the fault table. `EXACTLY_FAULT_PROFILE=full` (see
//! `scripts/faults`) runs many more iterations.

use std::time::Duration;

use exactly_integration_tests::coordinators::{partition_leader, partition_leader_seen_by};
use exactly_integration_tests::copy_check::keyed_inputs;
use exactly_integration_tests::faults::{
    CopierKillLoop, Effects, FaultRun, KAFKA_FAILPOINTS, Kill, Positions, Profile, check_and_report, high_watermarks,
    kill_loop, kill_plan, wait_for_stable_end,
};
use exactly_integration_tests::progress::CommittedOffsets;
use exactly_integration_tests::recorder::{BATCH_LOCK, Recorder, batches_waiting_for_the_lock, create_effects_table};
use exactly_integration_tests::support::{
    GROUP_PROTOCOL_ENV, Running, builder, signal, spawn_logged, topic_and_database,
};
use exactly_integration_tests::{Input, Kafka, Node, Postgres, feed, produce, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};

const WAIT: Duration = Duration::from_secs(240);

fn values(count: usize, partitions: i32) -> Vec<Input> {
    (0..count).map(|i| Input::to(i as i32 % partitions, format!("k{}", i % 97), format!("v-{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_mode_killed_at_random_points_and_failpoints() -> anyhow::Result<()> {
    let profile = Profile::current();
    let partitions = 4;
    let (kafka, topic, url, pool) = topic_and_database(partitions).await?;
    exactly::migrate(&pool).await?;
    let count = profile.pick(4_000, 40_000);
    let inputs = values(count, partitions);
    let feeder = feed(kafka.client_config(), topic.clone(), inputs.clone(), Duration::from_millis(400));

    let group = unique("faults-db");
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let plan = kill_plan(profile.pick(6, 60), &["db.before_commit", "db.after_commit"], profile.pick(1, 10));
    let brokers = kafka.bootstrap_servers();
    let spawn = |env: &[(&str, &str)]| {
        spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&brokers, &url, &topic, &group], env, &log)
    };
    let progress = || async {
        let rows: i64 = exactly_integration_tests::recorder::effect_rows(&pool, &group).await?;
        Ok(rows as u64)
    };
    let outcome = kill_loop(&plan, &log, spawn, progress, count as u64, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nworker output in {}", log.display()))?;
    feeder.await??;

    let fault = format!("SIGKILL at random points and failpoints ({})", outcome.fired_text());
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    check_and_report(fault, "Database", outcome.kills, outcome.recovery.clone(), &run).await?;
    outcome.ensure_enough_landed(&plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_killed_at_random_points_and_failpoints() -> anyhow::Result<()> {
    // Static membership: each copier takes its killed predecessor's place at once.
    kafka_mode_kill_loop(&[], Some("copier-1"), "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_killed_at_random_points_and_failpoints_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    // Dynamic membership: under this protocol a static member restarted before the broker
    // expired its predecessor is refused (see `GroupProtocol::Consumer`), so each copier
    // joins anew and gets the partitions once the killed one's 6 s session expires.
    kafka_mode_kill_loop(&[GROUP_PROTOCOL_ENV], None, ", consumer group protocol (KIP-848)").await
}

/// Copier processes with `env`, as static member `instance` if given, killed at random
/// points and at the Kafka-mode failpoints; `label` ends the fault's name.
async fn kafka_mode_kill_loop(env: &[(&str, &str)], instance: Option<&str>, label: &str) -> anyhow::Result<()> {
    let profile = Profile::current();
    let inputs = keyed_inputs(profile.pick(4_000, 40_000), 40);
    let run = CopierKillLoop {
        copier: env!("CARGO_BIN_EXE_copier"),
        inputs: &inputs,
        partitions: 4,
        plan: kill_plan(profile.pick(5, 50), &KAFKA_FAILPOINTS, profile.pick(1, 10)),
        env,
        instance,
    };
    run.run(|outcome| format!("SIGKILL at random points and failpoints ({}){label}", outcome.fired_text())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relay_killed_at_random_points_and_failpoints() -> anyhow::Result<()> {
    let profile = Profile::current();
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("faults-in", 3).await?, kafka.unique_topic("faults-out", 3).await?);
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let count = profile.pick(3_000, 30_000);
    let inputs = keyed_inputs(count, 30);
    let feeder = feed(kafka.client_config(), input.clone(), inputs.clone(), Duration::from_millis(300));

    // The handler runs in this process (not killed); the relay process is.
    let group = unique("faults-outbox");
    let mut recorder = Recorder::new(&input, &group, "a");
    recorder.emit_to = Some(output.clone());
    let running = Running::start(kafka, builder(&database.url).handler(recorder)).await?;
    let (name, positions) = (unique("relay"), kafka.unique_topic("positions", 1).await?);
    let log = std::env::temp_dir().join(format!("{name}.log"));
    let mut plan = kill_plan(profile.pick(5, 50), &["relay.after_produce", "relay.after_commit"], profile.pick(1, 10));
    // Failpoints first: the relay reaches them only while it has rows to publish, and late
    // lives may find the feed finished and the outbox drained (a quick run once fired 0 of
    // its 2 that way, and a full one 11 of 20).
    plan.sort_by_key(|kill| matches!(kill, Kill::Random(_)));
    let brokers = kafka.bootstrap_servers();
    let spawn = |env: &[(&str, &str)]| {
        spawn_logged(env!("CARGO_BIN_EXE_relay"), &[&brokers, &database.url, &name, &positions], env, &log)
    };
    // Published rows are deleted: rows written minus rows waiting only grows.
    let progress = || async {
        let published: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM effects WHERE group_id = $1) - (SELECT count(*) FROM exactly.outbox)",
        )
        .bind(&group)
        .fetch_one(&pool)
        .await?;
        Ok(published.max(0) as u64)
    };
    let outcome = kill_loop(&plan, &log, spawn, progress, count as u64, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nrelay output in {}", log.display()))?;
    feeder.await??;
    running.stop().await?;

    let fault = format!("relay SIGKILL at random points and failpoints ({})", outcome.fired_text());
    let run = FaultRun {
        kafka: kafka.client_config(),
        inputs: &inputs,
        effects: Effects::Records { topic: &output },
        positions: Positions::OutboxDrained { pool: &pool },
    };
    check_and_report(fault, "outbox", outcome.kills, outcome.recovery.clone(), &run).await?;
    // The handler (not killed) wrote each input's outbox record once, in its own checked run.
    let handler = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &input).check().await?;
    assert!(handler.problems().is_empty(), "the handler's side: {handler:?}");
    outcome.ensure_enough_landed(&plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_stable_offset_is_what_read_committed_watermarks_report() -> anyhow::Result<()> {
    // The suite's "no transaction left open" check rests on this: prove it can fail.
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("lso", 1).await?;
    let producer: BaseProducer = kafka.client_config().set("transactional.id", unique("lso")).create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    producer.send(BaseRecord::<str, str>::to(&topic).payload("open")).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    let open = wait_for_stable_end(&kafka.client_config(), &topic, Duration::from_secs(2)).await;
    assert!(open.is_err(), "an open transaction must hold the last stable offset back");
    producer.commit_transaction(Duration::from_secs(30))?;
    wait_for_stable_end(&kafka.client_config(), &topic, Duration::from_secs(30)).await?;
    let ends = high_watermarks(kafka.client_config(), &topic, "read_committed")?;
    assert_eq!(ends, vec![(0, 2)], "the record and its commit marker");
    Ok(())
}

/// Writes `transactions` transactions of `per_transaction` values each (key `k{i}`, payload
/// `k{i}:{t}`, so order per key can be checked), committing the even ones and aborting the
/// odd ones; returns the committed inputs.
fn transactional_input(
    kafka: &Kafka,
    topic: &str,
    transactions: usize,
    per_transaction: usize,
) -> anyhow::Result<Vec<Input>> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = kafka.client_config().set("transactional.id", unique("input")).create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    let mut committed = Vec::new();
    for t in 0..transactions {
        producer.begin_transaction()?;
        for i in 0..per_transaction {
            let key = format!("k{i}");
            let value = format!("{key}:{t}");
            producer.send(BaseRecord::to(topic).key(&key).payload(&value)).map_err(|(e, _)| e)?;
            if t % 2 == 0 {
                committed.push(Input::bytes(value).key(key));
            }
        }
        producer.flush(Duration::from_secs(30))?;
        if t % 2 == 0 {
            producer.commit_transaction(Duration::from_secs(30))?;
        } else {
            producer.abort_transaction(Duration::from_secs(30))?;
        }
    }
    Ok(committed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_input_with_aborted_records_and_markers_database_mode() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    // Ends with an aborted transaction and its marker: nothing to handle at the tail.
    let committed = transactional_input(kafka, &topic, 10, 30)?;
    let group = unique("faults-txn");
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "a"))).await?;
    let reported = running.reported.clone();
    let ends = high_watermarks(kafka.client_config(), &topic, "read_uncommitted")?;
    let pool_ref = &pool;
    let group_ref = &group;
    let topic_ref = &topic;
    let at_end = exactly_integration_tests::wait_until(Duration::from_secs(60), "stored positions at the end", || {
        let ends = ends.clone();
        async move {
            for (partition, end) in ends {
                if exactly::offsets::position(pool_ref, group_ref, topic_ref, partition).await? != Some(end) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await;
    running.stop().await?;
    let run = FaultRun::database(kafka.client_config(), &committed, &pool, &group, &topic);
    check_and_report("transactional input: aborted records and control markers", "Database", 5, Vec::new(), &run)
        .await?;
    at_end?;
    assert!(reported.all().is_empty(), "no false alarm: {:?}", reported.all());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_input_with_aborted_records_and_markers_kafka_mode() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) =
        (kafka.unique_topic("faults-txn-in", 2).await?, kafka.unique_topic("faults-txn-out", 2).await?);
    let committed = transactional_input(kafka, &input, 10, 30)?;
    let group = unique("faults-txn");
    let runtime = exactly::Runtime::builder()
        .transactional_id(unique("tx"))
        .handler(exactly_integration_tests::copier::Copier::new(&input, &output, &group));
    let running = Running::start(kafka, runtime).await?;
    let reported = running.reported.clone();
    let end: i64 = high_watermarks(kafka.client_config(), &input, "read_uncommitted")?.iter().map(|(_, e)| e).sum();
    let offsets = CommittedOffsets::new(kafka, &group, &input, 2)?;
    let at_end =
        exactly_integration_tests::wait_until(Duration::from_secs(60), "committed offsets at the end", || async {
            Ok((offsets.sum()? == end as u64).then_some(()))
        })
        .await;
    running.stop().await?;
    let run = FaultRun::kafka_mode(kafka.client_config(), &committed, &input, &output, &group);
    check_and_report("transactional input: aborted records and control markers", "Kafka", 5, Vec::new(), &run).await?;
    at_end?;
    assert!(reported.all().is_empty(), "no false alarm: {:?}", reported.all());
    Ok(())
}

/// The host:port a database URL points at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connection_cut_during_commit_outcome_unknown() -> anyhow::Result<()> {
    let profile = Profile::current();
    let partitions = 2;
    let (kafka, topic, url, pool) = topic_and_database(partitions).await?;
    exactly::migrate(&pool).await?;
    let count = profile.pick(2_000, 10_000);
    let cuts = profile.pick(10, 50);
    let inputs = values(count, partitions);
    let feeder = feed(kafka.client_config(), topic.clone(), inputs.clone(), Duration::from_millis(500));

    let proxy = exactly_integration_tests::pg_proxy::PgProxy::in_front_of(&url).await?;
    let group = unique("faults-cut");
    // Small batches: many commits to cut.
    let batch = exactly::Batch::default().max_records(20).max_wait(Duration::from_millis(20));
    let runtime = builder(&proxy.url(&url)?).batch(batch).handler(Recorder::new(&topic, &group, "a"));
    let running = Running::start(kafka, runtime).await?;
    let rows = || async {
        let rows: i64 = exactly_integration_tests::recorder::effect_rows(&pool, &group).await?;
        anyhow::Ok(rows)
    };
    let mut recovery = Vec::new();
    for cut in 1..=cuts {
        proxy.cut_next_commits(1);
        exactly_integration_tests::wait_until(WAIT, "a commit to cut", || async {
            Ok((proxy.cuts() >= cut).then_some(()))
        })
        .await?;
        let (at, before) = (std::time::Instant::now(), rows().await?);
        exactly_integration_tests::wait_until(WAIT, "progress after the cut", || async {
            Ok((rows().await? > before || rows().await? >= count as i64).then_some(()))
        })
        .await?;
        recovery.push(at.elapsed());
    }
    feeder.await??;
    exactly_integration_tests::wait_until(WAIT, "every value applied", || async {
        Ok((rows().await? >= count as i64).then_some(()))
    })
    .await?;
    let reported = running.reported.clone();
    running.stop().await?;

    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    let fault = "PostgreSQL connection cut after COMMIT, before its answer";
    check_and_report(fault, "Database", proxy.cuts(), recovery, &run).await?;
    assert!(reported.count("database") >= cuts, "each cut seen as a database error: {:?}", reported.all());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mode_against_injected_errors_on_every_transactional_call() -> anyhow::Result<()> {
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::types::{RDKafkaApiKey as Api, RDKafkaRespErr as Err};
    let profile = Profile::current();
    let mock = MockCluster::new(3)?;
    let (input, output, group) = ("mock-in", "mock-out", unique("mock"));
    mock.create_topic(input, 2, 3)?;
    mock.create_topic(output, 2, 3)?;
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", mock.bootstrap_servers());
    let rounds = profile.pick(1, 4);
    // One slice of input before each injection, so there is always work in flight.
    let slice = 100;
    let count = slice * (rounds * 15 + 2); // 15 injections a round, a broker bounce, the rest
    let inputs = keyed_inputs(count, 20);
    let mut slices = inputs.chunks(slice);
    let transactional_id = unique("mock-tx");
    let runtime = exactly::Runtime::builder()
        .transactional_id(&transactional_id)
        .revoke_grace(Duration::from_secs(5))
        .handler(exactly_integration_tests::copier::Copier::new(input, output, &group));
    // Both coordinators stay on broker 1, which stays up. On the broker taken down at the
    // end, send_offsets_to_transaction blocks (librdkafka #5456), the runtime abandons that
    // producer and redoes its open transaction; a real broker aborts the abandoned one, but
    // the mock has no transaction isolation (see
    // the_mock_cluster_shows_aborted_records_to_read_committed_readers), so its records stay
    // visible as duplicates. Fault 15 (coordinator_faults.rs) makes that kill on a real cluster.
    mock.coordinator(MockCoordinator::Group(group.clone()), 1)?;
    mock.coordinator(MockCoordinator::Transaction(transactional_id.clone()), 1)?;
    let running = Running::start_on(&mock.bootstrap_servers(), runtime).await?;

    // The mock cluster keeps no offsets committed in transactions where OffsetFetch sees
    // them, so progress is measured on the output: its last stable offsets only grow.
    let committed = || -> u64 {
        high_watermarks(config.clone(), output, "read_committed")
            .map_or(0, |ends| ends.iter().map(|(_, end)| *end as u64).sum())
    };
    let copied = || async {
        let copies = exactly_integration_tests::committed_records(config.clone(), output).await?;
        anyhow::Ok(copies.len())
    };
    // Errors whose outcome is definite: the call failed and the transaction is still open
    // (or must be aborted). An unknown commit outcome (EndTxn timing out, a fenced producer,
    // a coordinator moved mid-commit) is resolved by reading the committed offsets back,
    // which the mock cluster does not keep for transactions (its TxnOffsetCommit only
    // answers); those faults run against the real broker instead (broker paused, killed).
    let errors = [
        Err::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        Err::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
        Err::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        Err::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    ];
    let apis = [Api::AddPartitionsToTxn, Api::AddOffsetsToTxn, Api::TxnOffsetCommit, Api::EndTxn];
    let mut injections: Vec<(String, Box<dyn Fn()>)> = Vec::new();
    for api in apis {
        for error in errors {
            if api == Api::EndTxn && error == Err::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT {
                continue;
            }
            let mock = &mock;
            injections.push((format!("{api:?} {error:?}"), Box::new(move || mock.request_errors(api, &[error; 2]))));
        }
    }
    let mut recovery = Vec::new();
    let mut iterations = 0;
    for _ in 0..rounds {
        for (what, inject) in &injections {
            let before = committed();
            if let Some(next) = slices.next() {
                produce(&config, input, next.to_vec()).await?;
            }
            let at = std::time::Instant::now();
            inject();
            exactly_integration_tests::wait_until(
                Duration::from_secs(60),
                &format!("progress after {what}"),
                || async { Ok((committed() > before).then_some(())) },
            )
            .await
            .map_err(|e| {
                let reported = running.reported.all();
                anyhow::anyhow!("{e:#}; last reports: {:?}", &reported[reported.len().saturating_sub(5)..])
            })?;
            recovery.push(at.elapsed());
            iterations += 1;
            if std::env::var("EXACTLY_FAULT_TRACE").is_ok() {
                let copies = exactly_integration_tests::committed_records(config.clone(), output).await?;
                let mut payloads: Vec<_> = copies.iter().map(|r| r.payload.clone()).collect();
                let total = payloads.len();
                payloads.sort();
                payloads.dedup();
                eprintln!("after {what}: {} copies, {} duplicates", total, total - payloads.len());
            }
        }
    }
    // A broker down and up again.
    let before = committed();
    if let Some(next) = slices.next() {
        produce(&config, input, next.to_vec()).await?;
    }
    let at = std::time::Instant::now();
    mock.broker_down(2)?; // partition leaders only: the coordinators are on broker 1
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_up(2)?;
    exactly_integration_tests::wait_until(WAIT, "progress after a broker came back", || async {
        Ok((committed() > before || copied().await? >= count).then_some(()))
    })
    .await?;
    recovery.push(at.elapsed());
    iterations += 1;
    for rest in slices {
        produce(&config, input, rest.to_vec()).await?;
    }
    exactly_integration_tests::wait_until(WAIT, "every input copied", || async {
        Ok((copied().await? >= count).then_some(()))
    })
    .await?;
    let reported = running.reported.clone();
    running.stop().await?;

    let run = FaultRun {
        kafka: config.clone(),
        inputs: &inputs,
        effects: Effects::Records { topic: output },
        positions: Positions::NotKept("the mock cluster keeps no offsets committed in transactions"),
    };
    let fault = "mock cluster: errors on every transactional call, broker down";
    check_and_report(fault, "Kafka", iterations, recovery, &run)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}; the runtime reported: {:?}", reported.all()))?;
    Ok(())
}

/// Why the mock-cluster fault keeps both coordinators on a broker that stays up: the mock has
/// no transaction isolation. Its Fetch answers a last stable offset equal to the high
/// watermark and no aborted transactions, and its EndTxn ignores whether it commits or
/// aborts, so a `read_committed` reader sees the records of an aborted transaction. Any
/// abort after records were written (as a coordinator going down during a commit causes)
/// then shows the redone records twice, where a real broker hides the aborted ones. If this
/// test fails, the mock gained isolation and the pinning can go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_cluster_shows_aborted_records_to_read_committed_readers() -> anyhow::Result<()> {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mock = MockCluster::new(1)?;
    mock.create_topic("aborted", 1, 1)?;
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", mock.bootstrap_servers());
    let producer: BaseProducer = config.clone().set("transactional.id", unique("mock-abort")).create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    producer.send(BaseRecord::<str, str>::to("aborted").key("k").payload("k:0")).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    producer.abort_transaction(Duration::from_secs(30))?;
    let seen = exactly_integration_tests::committed_records(config.clone(), "aborted").await?;
    let payloads: Vec<_> = seen.iter().filter_map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, vec![b"k:0".to_vec()], "a read_committed reader of the mock sees the aborted record");
    Ok(())
}

/// Sets the flag when dropped.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A broker fault in the cluster: what is done to the broker, and how it comes back.
#[derive(Debug, Clone, Copy)]
enum BrokerFault {
    /// SIGKILL, then started again.
    Kill,
    /// SIGTERM (a controlled shutdown), then started again.
    Stop,
    /// Frozen for longer than a commit may take, then thawed.
    Pause,
    /// Cut off from the other two brokers (packets dropped both ways) while it leads a
    /// partition of the input, clients still reaching it; then the network heals.
    Partition,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_killed_stopped_and_paused_while_both_modes_run() -> anyhow::Result<()> {
    let profile = Profile::current();
    let cluster = Kafka::cluster().await?;
    let kafka = &cluster;
    let (input, output) = (kafka.unique_topic("faults-in", 3).await?, kafka.unique_topic("faults-out", 3).await?);
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let rounds = profile.pick(1, 5);
    let faults: Vec<(BrokerFault, usize)> = (0..rounds)
        .flat_map(|round| {
            [
                (BrokerFault::Kill, 1 + round % 3),
                (BrokerFault::Stop, 1 + (round + 1) % 3),
                (BrokerFault::Pause, 1 + (round + 2) % 3),
                // The broker is the input's partition leader when the fault comes.
                (BrokerFault::Partition, round % 3),
            ]
        })
        .collect();
    let slice = 200;
    let count = slice * (faults.len() + 1);
    let inputs = keyed_inputs(count, 30);
    let mut slices = inputs.chunks(slice);

    // Both modes on the same input: a copier (Kafka mode) and a recorder (Database mode).
    let copy_group = unique("faults-copy");
    let copier = exactly::Runtime::builder()
        .transactional_id(unique("faults-tx"))
        .revoke_grace(Duration::from_secs(5))
        .handler(exactly_integration_tests::copier::Copier::new(&input, &output, &copy_group));
    let copying = Running::start(kafka, copier).await?;
    let record_group = unique("faults-record");
    let recording =
        Running::start(kafka, builder(&database.url).handler(Recorder::new(&input, &record_group, "a"))).await?;

    // A read_committed reader runs throughout and must see each copy once.
    let reader_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let config = kafka.client_config();
        let (output, stop) = (output.clone(), std::sync::Arc::clone(&reader_stop));
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<u8>>> {
            use rdkafka::message::Message as _;
            let consumer: BaseConsumer = config
                .clone()
                .set("group.id", unique("reader"))
                .set("isolation.level", "read_committed")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()?;
            consumer.subscribe(&[&output])?;
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    seen.push(message.payload().unwrap_or_default().to_vec());
                }
            }
            Ok(seen)
        })
    };
    // Whatever way the test ends, the reader stops (a blocking task left running would keep
    // the test's runtime from shutting down).
    let _stop_reader = StopOnDrop(std::sync::Arc::clone(&reader_stop));

    let copied = || {
        high_watermarks(kafka.client_config(), &output, "read_committed")
            .map_or(0, |e| e.iter().map(|(_, o)| *o).sum::<i64>())
    };
    let recorded = || async {
        let rows: i64 = exactly_integration_tests::recorder::effect_rows(&pool, &record_group).await?;
        anyhow::Ok(rows)
    };
    let (mut kafka_recovery, mut database_recovery) = (Vec::new(), Vec::new());
    for (fault, broker) in &faults {
        let (copied_before, recorded_before) = (copied(), recorded().await?);
        // For a partition, the number is the input partition whose leader is cut off.
        let (broker, led) = match fault {
            BrokerFault::Partition => {
                let led = i32::try_from(*broker)?;
                (partition_leader(kafka, &input, led)?, led)
            }
            _ => (*broker, -1),
        };
        let node = kafka.broker(broker);
        match fault {
            BrokerFault::Kill => node.kill().await?,
            BrokerFault::Stop => node.stop(30).await?,
            BrokerFault::Pause => node.pause().await?,
            BrokerFault::Partition => {
                let peers: Vec<usize> = (1..=kafka.broker_count()).filter(|id| *id != broker).collect();
                let nodes: Vec<&Node> = peers.iter().map(|id| kafka.broker(*id)).collect();
                node.partition_from(&nodes).await?;
                // The cut holds: the others fence the cut-off broker (2 s broker session) and
                // elect another leader of its partition.
                exactly_integration_tests::wait_until(
                    WAIT,
                    "the partition's leadership leaving the cut-off broker",
                    || {
                        let leader = partition_leader_seen_by(kafka, peers[0], &input, led);
                        async move { Ok(leader.ok().filter(|leader| *leader != broker).map(|_| ())) }
                    },
                )
                .await?;
            }
        }
        // Input arrives while the broker is away (through the two others).
        let slice: Vec<Input> = slices.next().map(<[Input]>::to_vec).unwrap_or_default();
        let config = kafka.client_config();
        let topic = input.clone();
        let producing = tokio::spawn(async move { produce(&config, &topic, slice).await });
        tokio::time::sleep(Duration::from_secs(profile.pick(5, 8))).await;
        let back = std::time::Instant::now();
        match fault {
            BrokerFault::Kill | BrokerFault::Stop => node.start_again().await?,
            BrokerFault::Pause => node.unpause().await?,
            BrokerFault::Partition => node.heal().await?,
        }
        kafka.wait_ready(3, WAIT).await?;
        producing.await??;
        let (mut kafka_moved, mut database_moved) = (false, false);
        while !(kafka_moved && database_moved) {
            if back.elapsed() > WAIT {
                anyhow::bail!(
                    "no progress within {WAIT:?} after {fault:?} of broker {broker}: Kafka mode moved {kafka_moved}, \
                     Database mode moved {database_moved}; copier reported {:?}; recorder reported {:?}",
                    copying.reported.all(),
                    recording.reported.all()
                );
            }
            if !kafka_moved && copied() > copied_before {
                kafka_moved = true;
                kafka_recovery.push(back.elapsed());
            }
            if !database_moved && recorded().await? > recorded_before {
                database_moved = true;
                database_recovery.push(back.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for rest in slices {
        produce(&kafka.client_config(), &input, rest.to_vec()).await?;
    }
    exactly_integration_tests::wait_until(WAIT, "every input copied and recorded", || async {
        let copies = exactly_integration_tests::committed_records(kafka.client_config(), &output).await?;
        Ok((copies.len() >= count && recorded().await? >= count as i64).then_some(()))
    })
    .await?;
    wait_for_stable_end(&kafka.client_config(), &output, Duration::from_secs(70)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await??;
    copying.stop().await?;
    recording.stop().await?;

    let names = faults.iter().map(|(f, _)| format!("{f:?}").to_lowercase()).collect::<Vec<_>>();
    let names = names[..4.min(names.len())].join("/");
    let copy = FaultRun::kafka_mode(kafka.client_config(), &inputs, &input, &output, &copy_group);
    let fault = format!("broker {names} in a 3-broker cluster, read_committed reader running");
    check_and_report(fault, "Kafka", faults.len(), kafka_recovery, &copy).await?;
    // The reader that ran throughout saw each copy once too, never a record of an aborted attempt.
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((seen.len(), distinct.len()), (count, count), "the read_committed reader saw duplicates or gaps");
    let record = FaultRun::database(kafka.client_config(), &inputs, &pool, &record_group, &input);
    let fault = format!("broker {names} in a 3-broker cluster");
    check_and_report(fault, "Database", faults.len(), database_recovery, &record).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_by_a_killed_instance_is_aborted_and_readers_go_on() -> anyhow::Result<()> {
    let profile = Profile::current();
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("faults-in", 4).await?, kafka.unique_topic("faults-out", 4).await?);
    let group = unique("faults-leftover");
    let rounds = profile.pick(1, 3);
    let count = 1_000 * (rounds + 1);
    let inputs = keyed_inputs(count, 40);
    let timeout_ms = 15_000;
    let brokers = kafka.bootstrap_servers();
    let spawn = |name: &str, log: &std::path::Path| {
        spawn_logged(
            env!("CARGO_BIN_EXE_copier"),
            &[&brokers, &input, &output, &group, &format!("{group}-{name}"), name],
            &[("COPIER_DELAY_MS", "10"), ("COPIER_TRANSACTION_TIMEOUT_MS", "15000")],
            log,
        )
    };
    let mut recovery = Vec::new();
    let mut slices = inputs.chunks(1_000);
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let mut a = spawn("a", &log)?;
    for round in 0..rounds {
        // Two instances share the input; B is killed mid-transaction and never comes back.
        let log_b = std::env::temp_dir().join(format!("{group}-b{round}.log"));
        let mut b = spawn(&format!("b{round}"), &log_b)?;
        if let Some(slice) = slices.next() {
            produce(&kafka.client_config(), &input, slice.to_vec()).await?;
        }
        exactly_integration_tests::wait_until(WAIT, "B to own partitions", || async {
            Ok(std::fs::read_to_string(&log_b).unwrap_or_default().contains("partition assigned").then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        b.kill()?;
        b.wait()?;
        let killed = std::time::Instant::now();
        // A alone finishes; B's open transaction must be aborted, not left to block readers.
        wait_for_stable_end(&kafka.client_config(), &output, Duration::from_millis(timeout_ms + 60_000)).await?;
        recovery.push(killed.elapsed());
    }
    for rest in slices {
        produce(&kafka.client_config(), &input, rest.to_vec()).await?;
    }
    let committed = CommittedOffsets::new(kafka, &group, &input, 4)?;
    exactly_integration_tests::wait_until(WAIT, "A copying everything", || async {
        Ok((committed.sum()? >= count as u64).then_some(()))
    })
    .await?;
    signal(&a, "TERM")?;
    a.wait()?;
    let run = FaultRun::kafka_mode(kafka.client_config(), &inputs, &input, &output, &group);
    let fault = "instance killed mid-transaction, never restarted (fewer instances)";
    check_and_report(fault, "Kafka", rounds, recovery, &run).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stalled_past_the_transaction_timeout_is_aborted_and_redone() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("faults-in", 2).await?, kafka.unique_topic("faults-out", 2).await?);
    let inputs = keyed_inputs(400, 20);
    produce(&kafka.client_config(), &input, inputs.clone()).await?;
    let group = unique("faults-stall");
    let mut copier = exactly_integration_tests::copier::Copier::new(&input, &output, &group);
    // One record takes 20 s, past the 12 s transaction timeout.
    let stalled = inputs[150].payload.clone();
    copier.stall_once = Some((stalled, Duration::from_secs(20), std::sync::Arc::default()));
    let runtime = exactly::Runtime::builder()
        .transactional_id(unique("tx"))
        .producer_setting("transaction.timeout.ms", "12000")
        .kafka_setting("max.poll.interval.ms", "60000")
        .handler(copier);
    let running = Running::start(kafka, runtime).await?;
    let started = std::time::Instant::now();
    exactly_integration_tests::wait_until(WAIT, "400 copies", || async {
        let copies = exactly_integration_tests::committed_records(kafka.client_config(), &output).await?;
        Ok((copies.len() >= 400).then_some(()))
    })
    .await?;
    let took = started.elapsed();
    let reported = running.reported.all();
    running.stop().await?;
    let run = FaultRun::kafka_mode(kafka.client_config(), &inputs, &input, &output, &group);
    check_and_report("handler stalled past transaction.timeout.ms", "Kafka", 1, vec![took], &run).await?;
    assert!(!reported.is_empty(), "the timed-out transaction is reported");
    Ok(())
}

/// Fault 10: in each round a batch is held open inside its transaction (its handler waits for
/// an advisory lock the test holds) while PostgreSQL is stopped cleanly or killed, so the
/// fault strikes work in flight; the runtime must see a database error every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_killed_mid_batch() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let profile = Profile::current();
    let kafka = Kafka::shared().await?;
    let partitions = 3;
    let topic = kafka.unique_topic("faults-pg", partitions).await?;
    let server = Postgres::dedicated().await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let rounds = profile.pick(2, 10);
    let slice = 500;
    let count = slice * (rounds + 1);
    let inputs = values(count, partitions);
    let group = unique("faults-pg");
    let batch = exactly::Batch::default().max_records(50).max_wait(Duration::from_millis(20));
    let mut recorder = Recorder::new(&topic, &group, "a");
    // The middle message of each round's slice holds its batch open until the fault.
    recorder.lock_on = (0..rounds).map(|round| format!("v-{}", round * slice + slice / 2)).collect();
    let running = Running::start(kafka, builder(&database.url).batch(batch).handler(recorder)).await?;
    let reported = running.reported.clone();
    let rows = || async {
        let rows: i64 = exactly_integration_tests::recorder::effect_rows(&pool, &group).await?;
        anyhow::Ok(rows)
    };
    let mut slices = inputs.chunks(slice);
    let mut recovery = Vec::new();
    for round in 0..rounds {
        let mut holder = sqlx::PgConnection::connect(&database.url).await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(BATCH_LOCK).execute(&mut holder).await?;
        if let Some(slice) = slices.next() {
            produce(&kafka.client_config(), &topic, slice.to_vec()).await?;
        }
        exactly_integration_tests::wait_until(WAIT, "a batch held open inside its transaction", || async {
            Ok((batches_waiting_for_the_lock(&pool).await? > 0).then_some(()))
        })
        .await?;
        let errors_before = reported.count("database");
        if round % 2 == 0 {
            server.node().stop(10).await?
        } else {
            server.node().kill().await?
        }
        drop(holder); // its server is gone, and with it the lock
        server.node().start_again().await?;
        server.wait_ready(WAIT).await?;
        let (back, before) = (std::time::Instant::now(), rows().await?);
        exactly_integration_tests::wait_until(WAIT, "progress after the restart", || async {
            Ok((rows().await? > before).then_some(()))
        })
        .await?;
        recovery.push(back.elapsed());
        // The held batch failed with the server: the runtime saw it.
        exactly_integration_tests::wait_until(WAIT, &format!("a database error reported in round {round}"), || async {
            Ok((reported.count("database") > errors_before).then_some(()))
        })
        .await?;
        // The round's slice, held message included, is done before the next round holds one.
        let done = (slice * (round + 1)) as i64;
        exactly_integration_tests::wait_until(WAIT, "the round's slice applied", || async {
            Ok((rows().await? >= done).then_some(()))
        })
        .await?;
    }
    for rest in slices {
        produce(&kafka.client_config(), &topic, rest.to_vec()).await?;
    }
    exactly_integration_tests::wait_until(WAIT, "every value applied", || async {
        Ok((rows().await? >= count as i64).then_some(()))
    })
    .await?;
    running.stop().await?;
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    let fault = "PostgreSQL restarted (clean) and killed, a batch held open across each";
    check_and_report(fault, "Database", rounds, recovery, &run).await?;
    Ok(())
}
