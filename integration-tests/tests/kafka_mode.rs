//! Kafka mode (consume-transform-produce): output records and input offsets commit in one
//! Kafka transaction; unsafe producer settings are refused; a failing record stops only its
//! partition; a record the broker refuses aborts its transaction; one the producer refuses
//! fails its message, which is dead-lettered; a handler call that never returns is abandoned
//! at its deadline; overlapping commits keep order.

use std::time::Duration;

use exactly::{Error, RetryPolicy, Runtime};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::progress::CommittedOffsets;
use exactly_integration_tests::support::{Running, assert_refused};
use exactly_integration_tests::{Input, Isolation, Kafka, produce, read_to_end, unique, wait_until};

const WAIT: Duration = Duration::from_secs(120);

fn kafka_mode() -> exactly::RuntimeBuilder {
    Runtime::builder().transactional_id(unique("tx")).revoke_grace(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_each_record_exactly_once_in_order() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 3).await?, kafka.unique_topic("b", 3).await?);
    let records = keyed_inputs(600, 12);
    produce(&kafka.client_config(), &input, records.clone()).await?;

    let running = Running::start(kafka, kafka_mode().handler(Copier::new(&input, &output, &unique("copy")))).await?;
    wait_until(WAIT, "600 committed copies", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= 600).then_some(()))
    })
    .await?;
    running.stop().await?;

    let verdict = verify_copy(kafka, &output, &records).await?;
    assert_eq!(verdict.records, 600, "{verdict:?}");
    assert_eq!((verdict.duplicates, verdict.missing, verdict.out_of_order), (0, 0, 0), "{verdict:?}");
    Ok(())
}

/// A commit every 5 ms: hundreds of transactions, each committing on its own thread while
/// the next fills on the other producer. Nothing written later overtakes an earlier record,
/// and each record is copied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_commits_keep_every_record_once_and_in_order() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 4).await?, kafka.unique_topic("b", 4).await?);
    let count = 20_000;
    let records = keyed_inputs(count, 40);
    produce(&kafka.client_config(), &input, records.clone()).await?;

    let copier = Copier::new(&input, &output, &unique("overlap"));
    let builder = kafka_mode().commit_interval(Duration::from_millis(5));
    let running = Running::start(kafka, builder.handler(copier)).await?;
    wait_until(WAIT, "every record copied and committed", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= count).then_some(()))
    })
    .await?;
    running.stop().await?;

    let verdict = verify_copy(kafka, &output, &records).await?;
    assert_eq!(verdict.records, count, "{verdict:?}");
    assert_eq!((verdict.duplicates, verdict.missing, verdict.out_of_order), (0, 0, 0), "{verdict:?}");
    Ok(())
}

/// Emits, for every message of its topics, a record whose key is the message's payload and
/// whose payload is the topic the message says it came from.
struct TopicEcho {
    inputs: Vec<String>,
    output: String,
    group: String,
}

impl exactly::Consumes for TopicEcho {
    type Key = Vec<u8>;
    type Payload = Vec<u8>;
    type Codec = exactly::codec::Bytes;
    type Mode = exactly::mode::Kafka;

    fn subscription(&self) -> exactly::Subscription {
        exactly::Subscription::new(self.inputs.clone(), self.group.clone(), exactly::Delivery::PointToPoint)
    }
}

#[exactly::async_trait]
impl exactly::Handler for TopicEcho {
    async fn handle(
        &self,
        message: &exactly::Message<Vec<u8>, Vec<u8>>,
        cx: &mut exactly::Context<'_, exactly::mode::Kafka>,
    ) -> Result<(), exactly::HandlerError> {
        cx.emit(exactly::Output::to(&self.output).key(message.payload.clone()).payload(message.topic.clone()));
        Ok(())
    }
}

/// Messages of two topics, several partitions each, handled in one loop: every message
/// names the topic it was read from (the runtime reuses one topic buffer from message to
/// message, so a stale name would show here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_names_the_topic_it_was_read_from() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (first, second) = (kafka.unique_topic("first", 3).await?, kafka.unique_topic("second-topic", 2).await?);
    let output = kafka.unique_topic("echo", 1).await?;
    let per_topic = 300;
    for topic in [&first, &second] {
        let records = (0..per_topic).map(|i| Input::bytes(format!("{topic}/{i}")).partition(i % 2));
        produce(&kafka.client_config(), topic, records).await?;
    }

    let echo = TopicEcho { inputs: vec![first.clone(), second.clone()], output: output.clone(), group: unique("echo") };
    let running = Running::start(kafka, kafka_mode().handler(echo)).await?;
    let expected = 2 * usize::try_from(per_topic)?;
    let echoes = wait_until(WAIT, "every message echoed", || async {
        let echoes = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((echoes.len() >= expected).then_some(echoes))
    })
    .await?;
    running.stop().await?;

    assert_eq!(echoes.len(), expected);
    let mut seen = std::collections::HashSet::new();
    for echo in &echoes {
        let sent = String::from_utf8(echo.key.clone().unwrap_or_default())?;
        let named = String::from_utf8(echo.payload.clone().unwrap_or_default())?;
        let (source, _) = sent.rsplit_once('/').ok_or_else(|| anyhow::anyhow!("unexpected key {sent}"))?;
        assert_eq!(named, source, "message {sent} was said to come from {named}");
        assert!(seen.insert(sent.clone()), "{sent} echoed twice");
    }
    Ok(())
}

/// Key parking asked of a Kafka-mode handler: refused, there is no database to park in.
#[derive(exactly::Handler)]
#[exactly(topic = "a", group = "g", payload = Vec<u8>, codec = bytes, mode = kafka, key_parking)]
struct ParkingCopier;

#[exactly::async_trait]
impl exactly::Handler for ParkingCopier {
    async fn handle(
        &self,
        _: &exactly::Message<Vec<u8>, Vec<u8>>,
        _: &mut exactly::Context<'_, exactly::mode::Kafka>,
    ) -> Result<(), exactly::HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn unsafe_producer_settings_are_refused_with_a_reason() {
    for (key, value, reason) in [
        ("acks", "1", "all in-sync replicas"),
        ("enable.idempotence", "false", "twice"),
        ("max.in.flight.requests.per.connection", "10", "at most 5"),
        ("transaction.timeout.ms", "1000", "commit interval"),
    ] {
        let outcome = Runtime::builder()
            .brokers("127.0.0.1:1")
            .transactional_id("t")
            .producer_setting(key, value)
            .handler(Copier::new("a", "b", "g"))
            .build()
            .await;
        assert_refused(outcome, key, value, reason);
    }
    let acks_everywhere = Runtime::builder()
        .brokers("127.0.0.1:1")
        .transactional_id("t")
        .kafka_setting("acks", "0")
        .handler(Copier::new("a", "b", "g"))
        .build()
        .await;
    assert!(
        matches!(acks_everywhere, Err(Error::UnsafeSetting { .. })),
        "acks=0 through kafka_setting: {acks_everywhere:?}"
    );
    let parking = Runtime::builder().brokers("127.0.0.1:1").transactional_id("t").handler(ParkingCopier).build().await;
    assert!(
        matches!(parking, Err(Error::Config(ref m)) if m.contains("key parking") && m.contains("Database mode")),
        "{parking:?}"
    );
    let no_id = Runtime::builder().brokers("127.0.0.1:1").handler(Copier::new("a", "b", "g")).build().await;
    assert!(matches!(no_id, Err(Error::Config(ref m)) if m.contains("transactional_id")), "{no_id:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_stops_its_partition_and_the_others_flow() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 2).await?, kafka.unique_topic("b", 1).await?);
    let mut records = Vec::new();
    for i in 0..10 {
        records.push(Input::to(0, "k0", if i == 4 { "poison".to_owned() } else { format!("p0-{i}") }));
        records.push(Input::to(1, "k1", format!("p1-{i}")));
    }
    produce(&kafka.client_config(), &input, records).await?;
    let mut copier = Copier::new(&input, &output, &unique("copy"));
    copier.fail_on = vec![b"poison".to_vec()];
    let running = Running::start(kafka, kafka_mode().handler(copier)).await?;
    let reported = running.reported.clone();
    wait_until(WAIT, "partition 1 copied and the poison reported twice", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() == 14 && reported.count("partition 0 offset 4") >= 2).then_some(()))
    })
    .await?;
    running.stop().await?;
    let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
    let payloads: Vec<String> =
        copies.iter().map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned()).collect();
    assert_eq!(
        payloads.iter().filter(|p| p.starts_with("p0-")).count(),
        4,
        "partition 0 must stop before the poison: {payloads:?}"
    );
    assert_eq!(payloads.iter().filter(|p| p.starts_with("p1-")).count(), 10, "{payloads:?}");
    assert!(reported.all().iter().any(|e| e.contains("refusing this payload")), "{:?}", reported.all());
    Ok(())
}

/// The broker refuses a record the handler emits (larger than the output topic's
/// `max.message.bytes`): the transaction that held it aborts and is redone, the error names
/// the topic and partition and the broker's reason, nothing of it is visible under
/// read_committed, and the input offset is not committed past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_aborts_its_transaction_and_says_why() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let input = kafka.unique_topic("a", 1).await?;
    let output = unique("small");
    kafka.create_topic_with(&output, 1, &[("max.message.bytes", "2048")]).await?;
    let fits = "fits".to_owned();
    produce(&kafka.client_config(), &input, vec![Input::to(0, "k", fits.clone()), Input::to(0, "k", "x".repeat(8192))])
        .await?;
    let group = unique("copy");
    let running = Running::start(kafka, kafka_mode().handler(Copier::new(&input, &output, &group))).await?;
    let reported = running.reported.clone();
    let refusal = |e: &String| e.contains(&format!("{output} [0]")) && e.to_lowercase().contains("too large");
    wait_until(WAIT, "the refusal reported twice (its transaction redone)", || async {
        Ok((reported.all().iter().filter(|e| refusal(e)).count() >= 2).then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("reported: {:?}", reported.all())))?;
    running.stop().await?;

    let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
    assert!(
        copies.iter().all(|c| c.payload.as_deref() == Some(fits.as_bytes())),
        "only the record that fits may ever be visible: {copies:?}"
    );
    let committed = CommittedOffsets::new(kafka, &group, &input, 1)?.per_partition()?;
    assert!(committed[0] <= 1, "the input offset must not pass the refused record: {committed:?}");
    Ok(())
}

/// Emits two records per message: a short head, then a copy; `big-first` the other way
/// round. A `big-…` message's copy is 5 000 bytes. Failed messages go to a dead-letter
/// topic.
struct HeadAndCopy {
    input: String,
    output: String,
    dead_letters: String,
    group: String,
}

impl exactly::Consumes for HeadAndCopy {
    type Key = ();
    type Payload = String;
    type Codec = exactly::codec::Utf8;
    type Mode = exactly::mode::Kafka;

    fn subscription(&self) -> exactly::Subscription {
        exactly::Subscription::new([self.input.clone()], self.group.clone(), exactly::Delivery::PointToPoint)
            .with_dead_letter_topic(self.dead_letters.clone())
            .with_retry(exactly::RetryPolicy::default().max_attempts(5).initial_backoff(Duration::from_millis(20)))
    }
}

#[exactly::async_trait]
impl exactly::Handler for HeadAndCopy {
    async fn handle(
        &self,
        message: &exactly::Message<(), String>,
        cx: &mut exactly::Context<'_, exactly::mode::Kafka>,
    ) -> Result<(), exactly::HandlerError> {
        let head = exactly::Output::to(&self.output).payload(format!("head:{}", &message.payload[..1]));
        let copy = if message.payload.starts_with("big") {
            format!("{}:{}", message.payload, "x".repeat(5_000))
        } else {
            message.payload.clone()
        };
        let copy = exactly::Output::to(&self.output).payload(copy);
        if message.payload.starts_with("big-first") {
            cx.emit(copy);
            cx.emit(head);
        } else {
            cx.emit(head);
            cx.emit(copy);
        }
        Ok(())
    }
}

/// A record larger than the producer's `message.max.bytes` is refused before it joins the
/// transaction. Its message fails for good and is dead-lettered, and the partition goes
/// on: both when the refused record is the message's first (nothing of it was sent) and
/// when a record of the message went before it (the transaction is aborted, and the
/// message fails when it comes again, without sending anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_producer_fails_its_message_which_is_dead_lettered() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let input = kafka.unique_topic("a", 1).await?;
    let (output, dead) = (kafka.unique_topic("b", 1).await?, kafka.unique_topic("dlt", 1).await?);
    let payloads = ["a", "big-first", "b", "big-second", "c"];
    produce(&kafka.client_config(), &input, payloads.map(|p| Input::to(0, "k", p))).await?;
    let group = unique("heads");
    let handler =
        HeadAndCopy { input: input.clone(), output: output.clone(), dead_letters: dead.clone(), group: group.clone() };
    let builder = kafka_mode().producer_setting("message.max.bytes", "2000").handler(handler);
    let running = Running::start(kafka, builder).await?;
    let reported = running.reported.clone();
    let letters = wait_until(WAIT, "two dead letters", || async {
        let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
        Ok((letters.len() >= 2).then_some(letters))
    })
    .await
    .map_err(|e| e.context(format!("reported: {:?}", reported.all())))?;
    wait_until(WAIT, "six records copied", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= 6).then_some(()))
    })
    .await?;
    running.stop().await?;

    let refusals = reported.all().iter().filter(|e| e.contains("Kafka cannot take a record it emitted")).count();
    assert!(refusals >= 2, "each refused message reported: {:?}", reported.all());
    let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
    let copied: Vec<String> =
        copies.iter().map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned()).collect();
    assert_eq!(copied, ["head:a", "a", "head:b", "b", "head:c", "c"], "nothing of a refused message is visible");
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, name) in letters.iter().zip(["big-first", "big-second"]) {
        assert_eq!(letter.payload.as_deref(), Some(name.as_bytes()), "the original message, in order");
        let error = letter.header("exactly.error").unwrap_or_default();
        assert!(error.contains("Kafka cannot take a record it emitted") && error.contains("too large"), "{error}");
        // Permanent: dead-lettered at its first failure, not after the policy's five. A
        // rewind (the other message's abort) may have had it fail once more.
        let attempts = letter.header("exactly.attempts").unwrap_or_default();
        assert!(["1", "2"].contains(&attempts.as_str()), "a refusal is permanent: {attempts} attempts");
    }
    let committed = CommittedOffsets::new(kafka, &group, &input, 1)?.per_partition()?;
    assert_eq!(committed, [5], "the partition went on past both");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_records_go_to_the_dead_letter_topic_in_the_offsets_transaction() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let input = kafka.unique_topic("a", 2).await?;
    let (output, dead) = (kafka.unique_topic("b", 2).await?, kafka.unique_topic("dlt", 1).await?);
    let poison = |i: usize| i % 40 == 7;
    let records: Vec<Input> = (0..120)
        .map(|i| {
            Input::to((i % 2) as i32, format!("k{i}"), if poison(i) { format!("poison-{i}") } else { format!("m-{i}") })
        })
        .collect();
    produce(&kafka.client_config(), &input, records.clone()).await?;
    let mut copier = Copier::new(&input, &output, &unique("copy"));
    copier.fail_on = (0..120).filter(|i| poison(*i)).map(|i| format!("poison-{i}").into_bytes()).collect();
    // One of them panics instead: caught, and a failure like the others.
    copier.fail_on.retain(|p| p != b"poison-87");
    copier.panic_on = vec![b"poison-87".to_vec()];
    copier.retry = Some(RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(20)));
    copier.dead_letter_topic = Some(dead.clone());
    let running = Running::start(kafka, kafka_mode().handler(copier)).await?;
    wait_until(WAIT, "117 copies and 3 dead letters", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= 117 && letters.len() >= 3).then_some(()))
    })
    .await?;
    running.stop().await?;

    let good: Vec<Input> = records.into_iter().enumerate().filter(|(i, _)| !poison(*i)).map(|(_, r)| r).collect();
    verify_copy(kafka, &output, &good).await?.assert_exactly_once(117);
    let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
    assert_eq!(letters.len(), 3, "every poison record dead-lettered once: {letters:?}");
    for letter in &letters {
        let payload = String::from_utf8_lossy(letter.payload.as_deref().unwrap_or_default()).into_owned();
        let i: usize = payload.trim_start_matches("poison-").parse()?;
        assert!(poison(i), "{payload}");
        assert_eq!(letter.key.as_deref(), Some(format!("k{i}").as_bytes()), "the original key");
        assert_eq!(letter.header("exactly.attempts").as_deref(), Some("3"), "{letter:?}");
        assert_eq!(letter.header("exactly.topic").as_deref(), Some(input.as_str()));
        assert_eq!(letter.header("exactly.partition"), Some((i % 2).to_string()));
        let error = letter.header("exactly.error").unwrap_or_default();
        if i == 87 {
            assert!(error.contains("panicked at integration-tests/src/copier.rs:"), "{error}");
        } else {
            assert!(error.contains("refusing this payload"), "{error}");
        }
    }
    Ok(())
}

/// A handler call that never returns is abandoned at the producer's
/// `transaction.timeout.ms`: a failed try, so its record is dead-lettered once its tries are
/// spent while every other record is copied once; and a graceful shutdown with a call
/// hanging ends at the deadline instead of waiting for the call for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_call_that_never_returns_is_abandoned_at_the_transaction_timeout() -> anyhow::Result<()> {
    abandons_calls_that_never_return(1).await
}

/// The same with key concurrency, where each call of a window has its own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_concurrency_a_call_that_never_returns_is_abandoned_too() -> anyhow::Result<()> {
    abandons_calls_that_never_return(4).await
}

async fn abandons_calls_that_never_return(key_concurrency: usize) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let kafka = Kafka::shared().await?;
    let input = kafka.unique_topic("a", 2).await?;
    let (output, dead) = (kafka.unique_topic("b", 2).await?, kafka.unique_topic("dlt", 1).await?);
    // Record 7 (partition 1) hangs its handler; partition 0 holds the even ones, 0 to 19.
    let payload = |i: usize| if i == 7 { "hang".to_owned() } else { format!("m-{i}") };
    let records: Vec<Input> = (0..40).map(|i| Input::to((i % 2) as i32, format!("k{i}"), payload(i))).collect();
    produce(&kafka.client_config(), &input, records.clone()).await?;
    let group = unique("copy");
    let mut copier = Copier::new(&input, &output, &group);
    copier.hang_on = vec![b"hang".to_vec(), b"hang-at-shutdown".to_vec()];
    // One try: a call abandoned at the deadline spends it (were the timeout transient, not
    // counted, the record would be retried for ever and never dead-lettered).
    copier.retry = Some(RetryPolicy::default().max_attempts(1));
    copier.dead_letter_topic = Some(dead.clone());
    copier.key_concurrency = key_concurrency;
    let hung = std::sync::Arc::clone(&copier.hung);
    // The lowest the runtime accepts: the commit interval (100 ms) + 10 s.
    let deadline = Duration::from_millis(10_100);
    let builder = kafka_mode().producer_setting("transaction.timeout.ms", "10100").handler(copier);
    let running = Running::start(kafka, builder).await?;
    wait_until(WAIT, "39 copies and 1 dead letter", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= 39 && !letters.is_empty()).then_some(()))
    })
    .await?;
    let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
    assert_eq!(letters.len(), 1, "the hanging record dead-lettered once: {letters:?}");
    assert_eq!(letters[0].payload.as_deref(), Some(b"hang".as_slice()));
    assert_eq!(letters[0].header("exactly.attempts").as_deref(), Some("1"), "one abandoned try");
    let error = letters[0].header("exactly.error").unwrap_or_default();
    assert!(error.contains("did not finish") && error.contains("transaction.timeout.ms"), "{error}");
    assert_eq!(hung.load(Ordering::SeqCst), 1, "one call");
    let timed_out = running.reported.all().iter().filter(|e| e.starts_with("handler did not finish")).count();
    assert_eq!(timed_out, 1, "the abandoned call reported: {:?}", running.reported.all());

    // A call hanging when the runtime is asked to stop: the stop waits out its deadline,
    // which spends the record's one try, so it is dead-lettered before the group leaves.
    produce(&kafka.client_config(), &input, [Input::to(0, "k-last", "hang-at-shutdown")]).await?;
    wait_until(WAIT, "the last record's call to hang", || async {
        Ok((hung.load(Ordering::SeqCst) == 2).then_some(()))
    })
    .await?;
    let stopping = tokio::time::timeout(deadline + Duration::from_secs(30), running.stop()).await;
    stopping.map_err(|_| anyhow::anyhow!("the stop waited for the hanging call past its deadline"))??;
    let others: Vec<Input> = records.into_iter().filter(|r| r.payload != b"hang").collect();
    verify_copy(kafka, &output, &others).await?.assert_exactly_once(39);
    let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
    let last = letters.last().and_then(|letter| letter.payload.clone());
    assert_eq!((letters.len(), last.as_deref()), (2, Some(b"hang-at-shutdown".as_slice())), "{letters:?}");
    let committed = CommittedOffsets::new(kafka, &group, &input, 2)?.per_partition()?;
    assert_eq!(committed, vec![21, 20], "each partition committed past its dead letter");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_commit_or_abort_and_never_double() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 6).await?, kafka.unique_topic("b", 6).await?);
    let group = unique("churn");
    let inputs = keyed_inputs(1_800, 30);
    let start = |instance: &str| {
        let runtime = Runtime::builder()
            .transactional_id(format!("{group}-{instance}"))
            .revoke_grace(Duration::from_secs(5))
            .handler(Copier::new(&input, &output, &group));
        Running::start(kafka, runtime)
    };
    let mut slices = inputs.chunks(300);
    let mut feed = async || -> anyhow::Result<()> {
        if let Some(slice) = slices.next() {
            produce(&kafka.client_config(), &input, slice.to_vec()).await?;
        }
        Ok(())
    };
    // 1 -> 2 -> 3 -> 2 -> 1 instances while input keeps arriving; every revocation commits
    // the open transaction first.
    let a = start("a").await?;
    feed().await?;
    let b = start("b").await?;
    feed().await?;
    let c = start("c").await?;
    feed().await?;
    b.stop().await?;
    feed().await?;
    c.stop().await?;
    feed().await?;
    feed().await?;
    wait_until(WAIT, "1800 committed copies", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        anyhow::ensure!(copies.len() <= 1_800, "{} copies of 1800 inputs", copies.len());
        Ok((copies.len() == 1_800).then_some(()))
    })
    .await?;
    a.stop().await?;
    let verdict = verify_copy(kafka, &output, &inputs).await?;
    verdict.assert_exactly_once(1_800);
    Ok(())
}
