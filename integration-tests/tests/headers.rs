//! Handlers are given the records' headers, in order, repeated names and absent values
//! kept, in both modes and when a dead letter is re-driven. A subscription that declines
//! them (`without_headers`) is given none, while the trace context and dead letters still
//! read them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::ensure;
use exactly::mode::{Database, Kafka as KafkaMode};
use exactly::{Consumes, Context, Delivery, Handler, HandlerError, Message, Output, Subscription, codec};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Kafka, Postgres, committed_records, unique, wait_until};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(120);

type Headers = Vec<(String, Option<Vec<u8>>)>;

/// Headers as written: name and value, which may be absent.
type Written<'a> = Vec<(&'a str, Option<&'a str>)>;

/// The headers each payload was handled with, as the handler saw them.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<BTreeMap<String, Headers>>>);

impl Seen {
    fn note(&self, message: &Message<(), String>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(message.payload.clone(), message.headers.clone());
    }

    fn all(&self) -> BTreeMap<String, Headers> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// What both handlers consume, and whether they read headers.
#[derive(Debug, Clone)]
struct Reading {
    input: String,
    group: String,
    reads_headers: bool,
    seen: Seen,
}

impl Reading {
    fn subscription(&self) -> Subscription {
        let subscription = Subscription::new([self.input.clone()], self.group.clone(), Delivery::PointToPoint);
        if self.reads_headers { subscription } else { subscription.without_headers() }
    }
}

/// Kafka mode: notes the headers, copies the payload, and refuses `poison` for good (it is
/// dead-lettered).
struct Copy {
    reading: Reading,
    output: String,
    dead_letters: String,
}

impl Consumes for Copy {
    type Key = ();
    type Payload = String;
    type Codec = codec::Utf8;
    type Mode = KafkaMode;

    fn subscription(&self) -> Subscription {
        self.reading
            .subscription()
            .with_outputs([self.output.clone()])
            .with_dead_letter_topic(self.dead_letters.clone())
    }
}

#[exactly::async_trait]
impl Handler for Copy {
    async fn handle(&self, message: &Message<(), String>, cx: &mut Context<'_, KafkaMode>) -> Result<(), HandlerError> {
        self.reading.seen.note(message);
        if message.payload == "poison" {
            return Err(HandlerError::permanent("poison"));
        }
        cx.emit(Output::to(&self.output).payload(message.payload.clone()));
        Ok(())
    }
}

/// Database mode: notes the headers, and refuses `poison` for good while `refuses_poison`
/// (it is dead-lettered to the table).
struct Note {
    reading: Reading,
    refuses_poison: bool,
}

impl Consumes for Note {
    type Key = ();
    type Payload = String;
    type Codec = codec::Utf8;
    type Mode = Database;

    fn subscription(&self) -> Subscription {
        self.reading.subscription()
    }
}

#[exactly::async_trait]
impl Handler for Note {
    async fn handle(&self, message: &Message<(), String>, _cx: &mut Context<'_>) -> Result<(), HandlerError> {
        self.reading.seen.note(message);
        if self.refuses_poison && message.payload == "poison" {
            return Err(HandlerError::permanent("poison"));
        }
        Ok(())
    }
}

/// Writes one record with `headers` to partition 0 of `topic`.
async fn produce_with_headers(
    producer: &FutureProducer,
    topic: &str,
    payload: &str,
    headers: &[(&str, Option<&str>)],
) -> anyhow::Result<()> {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header { key: name, value: value.map(str::as_bytes) });
    }
    let record: FutureRecord<'_, (), str> = FutureRecord::to(topic).partition(0).payload(payload).headers(owned);
    producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
    Ok(())
}

fn owned(headers: &[(&str, Option<&str>)]) -> Headers {
    headers.iter().map(|(n, v)| ((*n).to_owned(), v.map(|v| v.as_bytes().to_vec()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_given_the_headers_unless_they_decline_them() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    let input = kafka.unique_topic("hd-in", 1).await?;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headed: [(&str, Option<&str>); 3] = [("a", Some("1")), ("absent", None), ("a", Some("2"))];
    let inputs: [(&str, Written<'_>); 4] = [
        ("plain", vec![]),
        ("headed", headed.to_vec()),
        ("traced", vec![("traceparent", Some(traceparent))]),
        ("poison", vec![("origin", Some("upstream"))]),
    ];
    let producer: FutureProducer = kafka.client_config().set("acks", "all").create()?;
    for (payload, headers) in &inputs {
        produce_with_headers(&producer, &input, payload, headers).await?;
    }

    let reading = |reads_headers: bool, name: &str| Reading {
        input: input.clone(),
        group: unique(name),
        reads_headers,
        seen: Seen::default(),
    };
    let mut copies = Vec::new();
    for reads_headers in [true, false] {
        let name = if reads_headers { "hd-k-reads" } else { "hd-k-declines" };
        copies.push(Copy {
            reading: reading(reads_headers, name),
            output: kafka.unique_topic(&format!("{name}-out"), 1).await?,
            dead_letters: kafka.unique_topic(&format!("{name}-dead"), 1).await?,
        });
    }
    let notes = [
        Note { reading: reading(true, "hd-db-reads"), refuses_poison: true },
        Note { reading: reading(false, "hd-db-declines"), refuses_poison: true },
    ];
    let db_readings: Vec<Reading> = notes.iter().map(|n| n.reading.clone()).collect();
    let seen: Vec<(&str, bool, Seen)> = copies
        .iter()
        .map(|c| ("Kafka mode", c.reading.reads_headers, c.reading.seen.clone()))
        .chain(notes.iter().map(|n| ("Database mode", n.reading.reads_headers, n.reading.seen.clone())))
        .collect();
    let topics: Vec<(String, String)> = copies.iter().map(|c| (c.output.clone(), c.dead_letters.clone())).collect();

    let mut runtime = builder(&database.url).trace_context(true).transactional_id(unique("hd-tx"));
    for copy in copies {
        runtime = runtime.handler(copy);
    }
    for note in notes {
        runtime = runtime.handler(note);
    }
    let running = Running::start(kafka, runtime).await?;
    let mut outputs = Vec::new();
    for (output, dead_letters) in &topics {
        let copied = wait_until(WAIT, &format!("3 copies on {output}"), || async {
            let records = committed_records(kafka.client_config(), output).await?;
            ensure!(records.len() <= 3, "{} copies of 3 records", records.len());
            Ok((records.len() == 3).then_some(records))
        })
        .await?;
        let dead = wait_until(WAIT, &format!("the dead letter on {dead_letters}"), || async {
            let records = committed_records(kafka.client_config(), dead_letters).await?;
            Ok((!records.is_empty()).then_some(records))
        })
        .await?;
        outputs.push((copied, dead));
    }
    for (mode, _, seen) in &seen {
        wait_until(WAIT, &format!("{mode}: every message handled"), || async {
            Ok((seen.all().len() == 4).then_some(()))
        })
        .await?;
    }
    for reading in &db_readings {
        wait_until(WAIT, &format!("{}: `poison` dead-lettered", reading.group), || async {
            Ok((exactly::dead_letters::list(&pool, &reading.group).await?.len() == 1).then_some(()))
        })
        .await?;
    }
    running.stop().await?;

    for (mode, reads_headers, seen) in &seen {
        let seen = seen.all();
        for (payload, headers) in &inputs {
            let expected = if *reads_headers { owned(headers) } else { Vec::new() };
            assert_eq!(seen.get(*payload), Some(&expected), "{mode}, reads headers: {reads_headers}, {payload}");
        }
    }
    // Re-driven from the table, a dead letter is given to the handler as it came, headers
    // included unless the handler declines them.
    let poison_headers = owned(&inputs[3].1);
    for reading in db_readings {
        let ids: Vec<i64> = exactly::dead_letters::list(&pool, &reading.group).await?.iter().map(|l| l.id).collect();
        let reads_headers = reading.reads_headers;
        let fixed = Note { reading: Reading { seen: Seen::default(), ..reading }, refuses_poison: false };
        let redriven = exactly::dead_letters::redrive(&pool, &fixed, &ids).await?;
        assert_eq!(redriven.handled, ids, "reads headers: {reads_headers}: {redriven:?}");
        let expected = if reads_headers { poison_headers.clone() } else { Vec::new() };
        assert_eq!(
            fixed.reading.seen.all().get("poison"),
            Some(&expected),
            "re-driven, reads headers: {reads_headers}"
        );
    }
    for ((copied, dead), reads_headers) in outputs.iter().zip([true, false]) {
        let traced = copied.iter().find(|r| r.payload.as_deref() == Some(&b"traced"[..]));
        let parent = traced.and_then(|r| r.header("traceparent")).unwrap_or_default();
        assert!(
            parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "reads headers: {reads_headers}: the copy of `traced` carries the trace on, got `{parent}`"
        );
        assert_eq!(dead.len(), 1, "reads headers: {reads_headers}: {dead:?}");
        assert_eq!(dead[0].payload.as_deref(), Some(&b"poison"[..]));
        assert_eq!(
            dead[0].header("origin").as_deref(),
            Some("upstream"),
            "reads headers: {reads_headers}: a dead letter keeps the original headers"
        );
    }
    Ok(())
}
