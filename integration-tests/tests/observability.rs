//! Operations against real Kafka and PostgreSQL: the metrics every mode emits (scraped from
//! the Prometheus endpoint over plain TCP), the health probes, the HTTP server's life, and
//! W3C trace context carried from consumed messages to emitted records.
//!
//! Metrics are process-global and this binary's tests run in parallel: each test has its
//! own groups, and reads only the samples labelled with them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use exactly::codec::Bytes;
use exactly::metrics::{
    BATCH_SIZE, CONSUMER_LAG, DATABASE_COMMIT_SECONDS, KAFKA_COMMIT_SECONDS, MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED, MESSAGES_PROCESSED, MESSAGES_RETRIED, OUTBOX_BACKLOG, OUTBOX_COMMIT_SECONDS, OUTBOX_PUBLISHED,
};
use exactly::mode::Kafka as KafkaMode;
use exactly::{
    Batch, Consumes, Context, Handler, HandlerError, Health, HealthStatus, Message, RetryPolicy, RuntimeBuilder,
    ShutdownHandle, Subscription,
};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::recorder::{Hold, Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, ReadRecord, committed_records, produce, unique, wait_until};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(120);

/// A runtime running in the background with its operations server.
struct Served {
    shutdown: ShutdownHandle,
    task: JoinHandle<exactly::Result<()>>,
    addr: SocketAddr,
    health: Health,
    reported: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Builds `builder` against `kafka`, serving HTTP on a free port of 127.0.0.1, and runs it.
    async fn start(kafka: &Kafka, builder: RuntimeBuilder) -> anyhow::Result<Served> {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let (sink, letters) = (Arc::clone(&reported), Arc::clone(&reported));
        let runtime = builder
            .brokers(kafka.bootstrap_servers())
            .serve_http("127.0.0.1:0".parse()?)
            .lag_interval(Duration::from_millis(300))
            .on_error(move |e| sink.lock().expect("not poisoned").push(e.to_string()))
            .on_dead_letter(move |letter| letters.lock().expect("not poisoned").push(letter.to_string()))
            .build()
            .await?;
        let addr = runtime.http_addr().context("serve_http gives an address")?;
        let (shutdown, health) = (runtime.shutdown_handle(), runtime.health());
        let task = tokio::spawn(runtime.run_until(std::future::pending()));
        Ok(Served { shutdown, task, addr, health, reported })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.shutdown();
        self.task.await??;
        Ok(())
    }
}

/// Sends `request` as is on a new connection; the status code and body of the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8(answer)?;
        let (head, body) = answer.split_once("\r\n\r\n").context("an answer with a head")?;
        let status = head.split(' ').nth(1).context("a status line")?.parse()?;
        let length: usize =
            head.lines().find_map(|line| line.strip_prefix("Content-Length: ")).context("a Content-Length")?.parse()?;
        if !request.starts_with(b"HEAD ") {
            ensure!(length == body.len(), "Content-Length {length} for a body of {}", body.len());
        }
        anyhow::Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange).await.context("the server did not answer")?
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await
}

/// The samples of a scrape: (name, labels) to value.
struct Scrape(Vec<(String, HashMap<String, String>, f64)>);

impl Scrape {
    async fn take(addr: SocketAddr) -> anyhow::Result<Scrape> {
        let (status, body) = get(addr, "/metrics").await?;
        ensure!(status == 200, "GET /metrics answered {status}: {body}");
        let mut samples = Vec::new();
        for line in body.lines().filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').context("a sample line")?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').context("a label")?;
                    Ok((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            samples.push((name.to_owned(), labels, value.parse()?));
        }
        Ok(Scrape(samples))
    }

    /// The sum of the samples of `name` labelled with all of `labels`; `None` when none is.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .map(|(_, _, value)| *value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Scrape::sum`], 0 when there is no sample.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels).unwrap_or(0.0)
    }

    /// The lag gauge of each partition of `group` in 0..partitions (`None`: not measured yet).
    fn lags(&self, group: &str, partitions: i32) -> Vec<Option<f64>> {
        (0..partitions).map(|p| self.sum(CONSUMER_LAG, &[("group", group), ("partition", &p.to_string())])).collect()
    }
}

/// A Kafka-mode copier that waits at a gate before each record, so a test can hold it with
/// its records unprocessed.
struct GatedCopier {
    copier: Copier,
    gate: Arc<Semaphore>,
    arrived: Arc<AtomicUsize>,
}

impl Consumes for GatedCopier {
    type Key = Vec<u8>;
    type Payload = Vec<u8>;
    type Codec = Bytes;
    type Mode = KafkaMode;

    fn subscription(&self) -> Subscription {
        self.copier.subscription()
    }
}

#[exactly::async_trait]
impl Handler for GatedCopier {
    async fn handle(
        &self,
        message: &Message<Vec<u8>, Vec<u8>>,
        cx: &mut Context<'_, KafkaMode>,
    ) -> Result<(), HandlerError> {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        drop(self.gate.acquire().await?);
        self.copier.handle(message, cx).await
    }
}

/// Closes its gates when dropped, which releases the handlers waiting at them (their
/// acquire fails), so that a test failing while they wait does not hang: the runtime's
/// drop waits for the Kafka-mode consumer thread, which waits for its handler call.
struct ReleaseOnDrop<'a>(Vec<&'a Semaphore>);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.iter().for_each(|gate| gate.close());
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(3)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_message_and_the_lag_falls_to_zero() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let db_input = kafka.unique_topic("obs-db-in", 2).await?;
    let db_output = kafka.unique_topic("obs-db-out", 1).await?;
    let kafka_input = kafka.unique_topic("obs-k-in", 2).await?;
    let kafka_output = kafka.unique_topic("obs-k-out", 2).await?;
    let kafka_dead = kafka.unique_topic("obs-k-dlt", 1).await?;

    // Ten records per partition of each input, all there before the runtime starts. The
    // Recorder is held at the first record of each partition; it fails `fail-` payloads
    // (three), the copier fails `bad-` ones (two); both give up after 3 attempts.
    let db_records = (0..2).flat_map(|p| {
        (0..10).map(move |i| {
            let payload = match (p, i) {
                (_, 0) => format!("hold-{p}"),
                (0, 3 | 7) | (1, 5) => format!("fail-{p}-{i}"),
                _ => format!("m-{p}-{i}"),
            };
            Input::to(p, format!("k{i}"), payload)
        })
    });
    produce(&kafka.client_config(), &db_input, db_records).await?;
    let bad = |p: i32, i: usize| (p, i) == (0, 4) || (p, i) == (1, 8);
    let kafka_records = (0..2).flat_map(|p| {
        (0..10).map(move |i| {
            let payload = if bad(p, i) { format!("bad-{p}-{i}") } else { format!("k-{p}-{i}") };
            Input::to(p, format!("k{i}"), payload)
        })
    });
    produce(&kafka.client_config(), &kafka_input, kafka_records).await?;

    let db_group = unique("obs_db");
    let hold = Arc::new(Hold {
        payloads: vec!["hold-0".into(), "hold-1".into()],
        gate: Semaphore::new(0),
        waiting: AtomicUsize::new(0),
    });
    let mut recorder = Recorder::new(&db_input, &db_group, "a");
    recorder.hold = Some(Arc::clone(&hold));
    recorder.retry = Some(quick_retries());
    recorder.emit_to = Some(db_output.clone());
    let kafka_group = unique("obs_k");
    let mut copier = Copier::new(&kafka_input, &kafka_output, &kafka_group);
    copier.fail_on = vec![b"bad-0-4".to_vec(), b"bad-1-8".to_vec()];
    copier.retry = Some(quick_retries());
    copier.dead_letter_topic = Some(kafka_dead.clone());
    let gated = GatedCopier { copier, gate: Arc::new(Semaphore::new(0)), arrived: Arc::default() };
    let (gate, arrived) = (Arc::clone(&gated.gate), Arc::clone(&gated.arrived));
    let relay = unique("obs_relay");
    let served = Served::start(
        kafka,
        builder(&database.url)
            .batch(Batch::single())
            .transactional_id(unique("obs_tx"))
            .outbox_relay(relay.clone())
            .handler(recorder)
            .handler(gated),
    )
    .await?;
    let addr = served.addr;
    let _release_if_failed = ReleaseOnDrop(vec![&hold.gate, &gate]);

    // While held: nothing processed, each partition's whole content is its lag.
    wait_until(WAIT, "both handlers to be held at their first record", || async {
        Ok((hold.waiting.load(Ordering::SeqCst) == 2 && arrived.load(Ordering::SeqCst) == 1).then_some(()))
    })
    .await?;
    let read_ahead = |scrape: &Scrape, partition: &str| {
        scrape.count(MESSAGES_CONSUMED, &[("group", db_group.as_str()), ("partition", partition)]) >= 2.0
    };
    let held = wait_until(WAIT, "the lag of every partition measured, the next batches read ahead", || async {
        let scrape = Scrape::take(addr).await?;
        let measured = scrape.lags(&db_group, 2).iter().chain(&scrape.lags(&kafka_group, 2)).all(Option::is_some);
        Ok((measured && read_ahead(&scrape, "0") && read_ahead(&scrape, "1")).then_some(scrape))
    })
    .await?;
    assert_eq!(held.lags(&db_group, 2), vec![Some(10.0); 2], "Database-mode lag while held");
    assert_eq!(held.lags(&kafka_group, 2), vec![Some(10.0); 2], "Kafka-mode lag while held");
    for group in [&db_group, &kafka_group] {
        assert_eq!(held.count(MESSAGES_PROCESSED, &[("group", group)]), 0.0, "{group}: processed while held");
    }
    for partition in ["0", "1"] {
        let labels = [("group", db_group.as_str()), ("partition", partition), ("mode", "database")];
        // The held batch, and no more than the one batch read ahead while it is handled.
        assert_eq!(held.count(MESSAGES_CONSUMED, &labels), 2.0, "two batches of one read, partition {partition}");
    }
    assert_eq!(held.count(MESSAGES_CONSUMED, &[("group", &kafka_group), ("mode", "kafka")]), 1.0);
    assert_eq!(get(addr, "/health/ready").await?, (200, "ok\n".to_owned()));

    // Released: every partition reaches its end, every outbox record is published.
    hold.gate.add_permits(2);
    gate.add_permits(1);
    let done = wait_until(WAIT, "every lag at 0 and the outbox published", || async {
        let scrape = Scrape::take(addr).await?;
        let lags = [scrape.lags(&db_group, 2), scrape.lags(&kafka_group, 2)].concat();
        let published = exactly::outbox::backlog(&pool).await? == 0
            && scrape.sum(OUTBOX_BACKLOG, &[("relay", &relay)]) == Some(0.0);
        Ok((lags.iter().all(|lag| *lag == Some(0.0)) && published).then_some(scrape))
    })
    .await?;

    // Per partition: consumed, processed, failed (3 attempts each), retried (2 each), dead-lettered.
    let expected = [
        (&db_group, "0", [10.0, 8.0, 6.0, 4.0, 2.0]),
        (&db_group, "1", [10.0, 9.0, 3.0, 2.0, 1.0]),
        (&kafka_group, "0", [10.0, 9.0, 3.0, 2.0, 1.0]),
        (&kafka_group, "1", [10.0, 9.0, 3.0, 2.0, 1.0]),
    ];
    for (group, partition, numbers) in expected {
        let labels = [("group", group.as_str()), ("partition", partition)];
        let counted =
            [MESSAGES_CONSUMED, MESSAGES_PROCESSED, MESSAGES_FAILED, MESSAGES_RETRIED, MESSAGES_DEAD_LETTERED]
                .map(|name| done.count(name, &labels));
        assert_eq!(counted, numbers, "{group} partition {partition}: consumed, processed, failed, retried, dead");
    }
    // One database transaction per processed message (Batch::single), one per dead letter.
    let db = [("group", db_group.as_str()), ("mode", "database")];
    assert_eq!(done.sum(&format!("{BATCH_SIZE}_count"), &db), Some(17.0));
    assert_eq!(done.sum(&format!("{BATCH_SIZE}_sum"), &db), Some(17.0));
    assert_eq!(done.sum(&format!("{DATABASE_COMMIT_SECONDS}_count"), &db), Some(20.0));
    // Kafka mode: every record is in exactly one committed transaction, copies and dead letters.
    let k = [("group", kafka_group.as_str()), ("mode", "kafka")];
    assert_eq!(done.sum(&format!("{BATCH_SIZE}_sum"), &k), Some(20.0));
    let transactions = done.count(&format!("{BATCH_SIZE}_count"), &k);
    assert!(transactions >= 1.0);
    assert_eq!(done.sum(&format!("{KAFKA_COMMIT_SECONDS}_count"), &k), Some(transactions));
    // Each mode times its own commits only.
    assert_eq!(done.sum(&format!("{KAFKA_COMMIT_SECONDS}_count"), &db), None);
    assert_eq!(done.sum(&format!("{DATABASE_COMMIT_SECONDS}_count"), &k), None);
    assert_eq!(done.sum(OUTBOX_PUBLISHED, &[("relay", &relay)]), Some(17.0));
    assert!(done.count(&format!("{OUTBOX_COMMIT_SECONDS}_count"), &[("relay", &relay)]) >= 1.0);

    // What the counters say is what happened.
    let reported = served.reported.lock().expect("not poisoned").clone();
    let reports = |start: &str| reported.iter().filter(|e| e.starts_with(start)).count();
    assert_eq!((reports("handler failed"), reports("dead-lettered")), (15, 5), "{reported:#?}");
    assert_eq!(effect_counts(&pool, &db_group).await?, (17, 17));
    assert_eq!(committed_records(kafka.client_config(), &kafka_output).await?.len(), 18);
    assert_eq!(committed_records(kafka.client_config(), &kafka_dead).await?.len(), 2);
    assert_eq!(committed_records(kafka.client_config(), &db_output).await?.len(), 17);
    served.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_follow_the_assignment_and_the_server_stops_with_the_runtime() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("obs-health", 1).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    exactly::migrate(&pool).await?;
    let group = unique("obs_health");

    // The test holds the row of the partition's position: the runtime's claim, inside its
    // rebalance callback, waits for it, so the group cannot finish its assignment.
    sqlx::query(
        "INSERT INTO exactly.offsets (group_id, topic, partition, next_offset, epoch) VALUES ($1, $2, 0, 0, 0)",
    )
    .bind(&group)
    .bind(&topic)
    .execute(&pool)
    .await?;
    let mut blocker = pool.begin().await?;
    sqlx::query("SELECT 1 FROM exactly.offsets WHERE group_id = $1 AND topic = $2 FOR UPDATE")
        .bind(&group)
        .bind(&topic)
        .execute(&mut *blocker)
        .await?;

    let served = Served::start(kafka, builder(&database.url).handler(Recorder::new(&topic, &group, "a"))).await?;
    let addr = served.addr;
    assert_eq!(get(addr, "/health/live").await?, (200, "ok\n".to_owned()));
    let not_assigned = (503, format!("group {group} has not been given its partitions yet\n"));
    assert_eq!(get(addr, "/health/ready").await?, not_assigned);
    wait_until(WAIT, "the runtime's claim to wait for the test's lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await?;
        Ok((waiting > 0).then_some(()))
    })
    .await?;
    assert_eq!(get(addr, "/health/ready").await?, not_assigned, "ready in the middle of the assignment");
    assert_eq!(served.health.readiness().await, HealthStatus::Down(not_assigned.1.trim_end().to_owned()));

    blocker.commit().await?;
    wait_until(WAIT, "ready once the partition is claimed", || async {
        Ok((get(addr, "/health/ready").await?.0 == 200).then_some(()))
    })
    .await?;
    assert_eq!(served.health.readiness().await, HealthStatus::Up);
    assert_eq!(served.health.liveness(), HealthStatus::Up);

    // Several clients at once, each answered.
    let probes = (0..12).map(|i| {
        let path = ["/health/live", "/health/ready", "/metrics"][i % 3];
        async move { get(addr, path).await.map(|(status, _)| status) }
    });
    assert_eq!(futures::future::try_join_all(probes).await?, vec![200; 12]);
    // What is not a probe.
    assert_eq!(get(addr, "/nope").await?.0, 404);
    assert_eq!(get(addr, "/health").await?.0, 404);
    assert_eq!(exchange(addr, b"POST /health/live HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await?.0, 405);
    assert_eq!(exchange(addr, b"NONSENSE\r\n\r\n").await?.0, 400);
    assert_eq!(exchange(addr, b"GET /health/live HTTP/2.0\r\n\r\n").await?.0, 400);
    assert_eq!(exchange(addr, b"GET health/live HTTP/1.1\r\n\r\n").await?.0, 400);
    assert_eq!(exchange(addr, b"HEAD /health/live HTTP/1.1\r\n\r\n").await?, (200, String::new()));
    assert_eq!(get(addr, "/health/live?verbose=1").await?.0, 200);

    let health = served.health.clone();
    served.stop().await?;
    assert!(TcpStream::connect(addr).await.is_err(), "the server still listens after the runtime stopped");
    assert_eq!(health.liveness(), HealthStatus::Down("the runtime is not running".into()));
    assert!(!health.readiness().await.is_up());
    Ok(())
}

/// Writes one record with `headers` to partition 0 of `topic`.
async fn produce_with_headers(
    kafka: &Kafka,
    topic: &str,
    payload: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka.client_config().set("acks", "all").create()?;
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header { key: name, value: Some(value.as_bytes()) });
    }
    let record: FutureRecord<'_, str, str> =
        FutureRecord::to(topic).partition(0).key(payload).payload(payload).headers(owned);
    producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
    Ok(())
}

/// The `traceparent` of the record with `payload`, split into its four fields.
fn traceparent_of(records: &[ReadRecord], payload: &str) -> anyhow::Result<Option<Vec<String>>> {
    Ok(header_of(records, payload, "traceparent")?.map(|value| value.split('-').map(str::to_owned).collect()))
}

/// The header `name` of the record with `payload`.
fn header_of(records: &[ReadRecord], payload: &str, name: &str) -> anyhow::Result<Option<String>> {
    let record = records
        .iter()
        .find(|r| r.payload.as_deref() == Some(payload.as_bytes()))
        .with_context(|| format!("no record {payload}"))?;
    Ok(record.header(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_goes_from_consumed_messages_to_the_records_handlers_emit() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (kafka_input, kafka_output) =
        (kafka.unique_topic("tc-k-in", 1).await?, kafka.unique_topic("tc-k-out", 1).await?);
    let (db_input, db_output) = (kafka.unique_topic("tc-db-in", 1).await?, kafka.unique_topic("tc-db-out", 1).await?);
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;

    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let inputs = [
        ("traced", traceparent.clone()),
        ("malformed", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".to_owned()),
        ("uppercase", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".to_owned()),
        ("zero-trace", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned()),
    ];
    let tracestate = ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"];
    for topic in [&kafka_input, &db_input] {
        for (payload, value) in &inputs {
            // Every input has a tracestate (in two headers): only the traced one's goes on.
            let headers =
                [("traceparent", value.as_str()), ("tracestate", tracestate[0]), ("tracestate", tracestate[1])];
            produce_with_headers(kafka, topic, payload, &headers).await?;
        }
        produce_with_headers(kafka, topic, "untraced", &[("tracestate", tracestate[0])]).await?;
    }

    let mut recorder = Recorder::new(&db_input, &unique("tc_db"), "a");
    recorder.emit_to = Some(db_output.clone());
    let running = Running::start(
        kafka,
        builder(&database.url)
            .trace_context(true)
            .transactional_id(unique("tc_tx"))
            .outbox_relay(unique("tc_relay"))
            .handler(recorder)
            .handler(Copier::new(&kafka_input, &kafka_output, &unique("tc_k"))),
    )
    .await?;
    let mut outputs = Vec::new();
    for topic in [&kafka_output, &db_output] {
        outputs.push(
            wait_until(WAIT, &format!("5 records on {topic}"), || async {
                let records = committed_records(kafka.client_config(), topic).await?;
                ensure!(records.len() <= 5, "{} records for 5 inputs", records.len());
                Ok((records.len() == 5).then_some(records))
            })
            .await?,
        );
    }
    let reported = running.reported.clone();
    running.stop().await?;
    assert_eq!(reported.all(), Vec::<String>::new(), "an invalid traceparent is no error");

    let mut span_ids = Vec::new();
    for (records, how) in outputs.iter().zip(["Kafka mode", "outbox"]) {
        let Some(fields) = traceparent_of(records, "traced")? else {
            bail!("{how}: the traced copy has no traceparent")
        };
        assert_eq!(fields.len(), 4, "{how}: {fields:?}");
        assert_eq!((fields[0].as_str(), fields[1].as_str(), fields[3].as_str()), ("00", trace_id, "01"), "{how}");
        let span_id = &fields[2];
        assert!(
            span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{how}: span id {span_id}"
        );
        assert_ne!(span_id, parent_id, "{how}: the emitted record must have a span of its own as parent");
        assert_ne!(span_id, "0000000000000000", "{how}");
        span_ids.push(span_id.clone());
        assert_eq!(
            header_of(records, "traced", "tracestate")?.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            "{how}: the message's tracestate goes on unchanged, its two headers joined"
        );
        for payload in ["malformed", "uppercase", "zero-trace", "untraced"] {
            assert_eq!(traceparent_of(records, payload)?, None, "{how}: {payload} must give no traceparent");
            assert_eq!(header_of(records, payload, "tracestate")?, None, "{how}: {payload} must give no tracestate");
        }
    }
    assert_ne!(span_ids[0], span_ids[1], "each processing has its own span id");
    Ok(())
}
