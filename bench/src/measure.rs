//! The three measurements: throughput over a backlog, end-to-end latency at a fixed rate,
//! and recovery after SIGKILL.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::bed::{Bed, ContainerCpu, now_micros, stamped_payload};
use crate::process::Measured;
use crate::progress::Progress;

/// How often progress is read.
const POLL: Duration = Duration::from_millis(20);

/// One throughput figure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// Messages counted (from the first progress seen to the end).
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
    /// Peak RSS of the process, in KiB.
    pub(crate) peak_rss_kib: u64,
    /// CPU time the process used over the same window, in seconds, when known.
    pub(crate) cpu_seconds: Option<f64>,
    /// CPU time the broker used over the same window, in seconds, when known.
    pub(crate) broker_cpu_seconds: Option<f64>,
}

impl Throughput {
    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.messages as f64 / self.seconds } else { 0.0 }
    }

    /// CPU time per message, in microseconds, when known.
    pub(crate) fn cpu_micros_per_message(&self) -> Option<f64> {
        self.per_message(self.cpu_seconds?)
    }

    /// The broker's CPU time per message, in microseconds, when known.
    pub(crate) fn broker_cpu_micros_per_message(&self) -> Option<f64> {
        self.per_message(self.broker_cpu_seconds?)
    }

    fn per_message(&self, seconds: f64) -> Option<f64> {
        (self.messages > 0).then(|| seconds * 1e6 / self.messages as f64)
    }
}

/// Watches `process` work through a backlog of `target` messages. The clock starts at the
/// first progress it makes durable (so start-up and group joining are not counted) and
/// stops when all `target` are durable; the process is then killed. The broker's CPU time
/// (`broker_cpu`) is taken over the same window.
pub(crate) async fn throughput(
    mut process: Measured,
    progress: &Progress,
    target: i64,
    timeout: Duration,
    broker_cpu: &ContainerCpu,
) -> anyhow::Result<Throughput> {
    let mut first: Option<(Instant, i64, Option<f64>)> = None;
    let mut broker_before = None;
    let deadline = Instant::now() + timeout;
    let result = loop {
        process.check_running()?;
        let done = progress.done().await?;
        let now = Instant::now();
        if done >= target {
            // A backlog done before any progress was seen: count from the start instead.
            let (since, from, cpu_before) =
                first.filter(|(_, from, _)| *from < done).unwrap_or((process.started, 0, Some(0.0)));
            break Throughput {
                messages: u64::try_from(done - from)?,
                seconds: now.duration_since(since).as_secs_f64(),
                peak_rss_kib: process.peak_rss_kib(),
                cpu_seconds: process.cpu_seconds().zip(cpu_before).map(|(after, before)| after - before),
                broker_cpu_seconds: broker_cpu.seconds().zip(broker_before).map(|(after, before)| after - before),
            };
        }
        if first.is_none() && done > 0 {
            first = Some((now, done, process.cpu_seconds()));
            broker_before = broker_cpu.seconds();
        }
        if now >= deadline {
            bail!(
                "no end after {timeout:?}: {done} of {target} messages done; the log ends with:\n{}",
                process.log_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    process.kill().await?;
    Ok(result)
}

/// How long a latency run waits, after the last send, for results still to come.
const DRAIN: Duration = Duration::from_secs(10);

/// A latency run's figures, over every message sent after the warm-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) rate: f64,
    /// Messages sent after the warm-up: the ones the percentiles are over.
    pub(crate) sent: u64,
    /// How many of them a reader saw (each once, however often it came).
    pub(crate) seen: u64,
    /// Percentiles over all `sent`, a message never seen counting as slower than any seen;
    /// `None` when the percentile falls among those never seen.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) peak_rss_kib: u64,
}

impl Latency {
    /// Messages sent after the warm-up that no reader saw by [`DRAIN`] after the last send.
    pub(crate) fn never_seen(&self) -> u64 {
        self.sent - self.seen
    }

    /// How long after the last send the run stopped looking.
    pub(crate) fn drain() -> Duration {
        DRAIN
    }
}

/// Where the results of a latency run become visible.
#[derive(Debug)]
pub(crate) enum Visible<'a> {
    /// Rows inserted into this table (a trigger notifies at commit).
    Table(&'a str),
    /// Records in this topic, read with `read_committed`.
    Topic(&'a str, i32),
}

/// The messages a watcher has seen: per sequence number from `first` on, the latency of
/// its first sighting, in microseconds.
#[derive(Debug)]
struct Sightings {
    first: u64,
    latencies: std::collections::HashMap<u64, u64>,
    /// Distinct sequence numbers seen, for the sender to know when all have come.
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sightings {
    fn note(&mut self, payload: &[u8], received: u64) {
        let Some((sent, seq)) = crate::bed::stamp(payload) else { return };
        if seq >= self.first && !self.latencies.contains_key(&seq) {
            self.latencies.insert(seq, received.saturating_sub(sent));
            self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Sends `rate` messages a second to `input` for `warm_up + measured`, and measures, for
/// every message due after the warm-up, the time from its send to its result becoming
/// visible to a reader: the commit of the row (PostgreSQL delivers the trigger's
/// notification at commit) or the record in the output topic under `read_committed`.
/// After the last send it waits until each of them has been seen, or [`DRAIN`] at most;
/// those never seen count as the slowest.
pub(crate) async fn latency(
    bed: &Bed,
    process: Measured,
    input: (&str, i32),
    visible: Visible<'_>,
    rate: f64,
    message_size: usize,
    (warm_up, measured): (Duration, Duration),
) -> anyhow::Result<Latency> {
    // The sender sends message `seq` when `seq / rate` seconds have passed: those from this
    // one on are due after the warm-up.
    let first = (warm_up.as_secs_f64() * rate).ceil() as u64;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sightings =
        Sightings { first, latencies: std::collections::HashMap::new(), seen: std::sync::Arc::clone(&seen) };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch(bed, visible, sightings, std::sync::Arc::clone(&stop)).await?;
    let sent = send_while(bed, input, rate, message_size, |elapsed| elapsed < warm_up + measured).await;
    let total = *sent.as_ref().unwrap_or(&0);
    let deadline = Instant::now() + DRAIN;
    while seen.load(std::sync::atomic::Ordering::Relaxed) < total.saturating_sub(first) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let peak_rss_kib = process.peak_rss_kib();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sightings = watcher.await??;
    process.kill().await?;
    let total = sent?;
    let sent = total.saturating_sub(first);
    let mut latencies: Vec<u64> = sightings.latencies.into_values().collect();
    if latencies.is_empty() {
        bail!("no result became visible during the measurement");
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        let index = ((sent - 1) as f64 * q).round() as usize;
        latencies.get(index).map(|&micros| micros as f64 / 1000.0)
    };
    Ok(Latency { rate, sent, seen: latencies.len() as u64, p50_ms: pick(0.50), p99_ms: pick(0.99), peak_rss_kib })
}

/// Starts watching where results become visible, noting each in `sightings` until `stop`.
async fn watch(
    bed: &Bed,
    visible: Visible<'_>,
    mut sightings: Sightings,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Sightings>>> {
    Ok(match visible {
        Visible::Table(table) => {
            let mut listener = sqlx::postgres::PgListener::connect(&bed.database.url).await?;
            listener.listen(&notify_channel(table)).await?;
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(notification) = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await
                    else {
                        continue;
                    };
                    let received = now_micros();
                    sightings.note(notification?.payload().as_bytes(), received);
                }
                anyhow::Ok(sightings)
            })
        }
        Visible::Topic(topic, partitions) => {
            let consumer = output_reader(&bed.brokers(), topic, partitions)?;
            tokio::task::spawn_blocking(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => sightings.note(message.payload().unwrap_or_default(), now_micros()),
                        Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                        Some(Err(e)) => return Err(e.into()),
                    }
                }
                anyhow::Ok(sightings)
            })
        }
    })
}

/// The notification channel of `table`'s latency trigger.
fn notify_channel(table: &str) -> String {
    format!("{table}_visible")
}

/// Adds to `table` a trigger that notifies, at commit, each row's stamp (send time and
/// sequence number).
pub(crate) async fn add_visibility_trigger(bed: &Bed, table: &str) -> anyhow::Result<()> {
    // The channel goes into a string literal, the table into names: both need a plain name.
    let table = crate::bed::sql_name(table)?;
    let channel = notify_channel(table);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM pg_notify('{channel}', convert_from(substring(NEW.payload FROM 1 FOR 32), 'UTF8')); \
         RETURN NEW; END $$"
    )))
    .execute(&bed.pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER {table}_visible AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_notify()"
    )))
    .execute(&bed.pool)
    .await?;
    Ok(())
}

/// A `read_committed` reader of every partition of `topic` from its beginning.
fn output_reader(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", exactly_integration_tests::unique("bench_reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create the output reader")?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// What an output topic holds, read with `read_committed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputCount {
    /// Records read.
    pub(crate) records: u64,
    /// Distinct input messages among them: keys `k0` to `k{expected - 1}` (the input's
    /// keys, which every copy carries over), each counted once.
    pub(crate) distinct: u64,
}

/// The index `i` of a key `k{i}` below `expected`, as the bed's inputs are keyed.
fn input_index(key: Option<&[u8]>, expected: u64) -> Option<usize> {
    let index: u64 = std::str::from_utf8(key?.strip_prefix(b"k")?).ok()?.parse().ok()?;
    (index < expected).then(|| usize::try_from(index).ok()).flatten()
}

/// Reads the committed records of `topic`, expecting one for each of `expected` input
/// messages, and counts them and the distinct inputs they copy. A transaction's commit
/// returns before its markers reach every partition, so a partition's end under
/// `read_committed` can still move: the count goes on until it reaches `expected` (and
/// then a second more, to see any record beyond it), or until nothing has come for five
/// seconds and every partition's position is at its end as the broker gives it now (the
/// last stable offset, under `read_committed`). A reader that merely stalled is therefore
/// never taken for a topic that ends short.
pub(crate) async fn count_committed(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: u64,
) -> anyhow::Result<OutputCount> {
    let consumer = output_reader(brokers, topic, partitions)?;
    tokio::task::spawn_blocking(move || {
        let mut count = 0_u64;
        let mut seen = vec![false; usize::try_from(expected)?];
        let mut distinct = 0_u64;
        let mut counts = std::collections::BTreeMap::<i32, u64>::new();
        let mut at_end = std::collections::HashSet::new();
        let mut last_record = Instant::now();
        let mut reached: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(record)) => {
                    count += 1;
                    if let Some(index) = input_index(record.key(), expected)
                        && !std::mem::replace(&mut seen[index], true)
                    {
                        distinct += 1;
                    }
                    *counts.entry(record.partition()).or_default() += 1;
                    last_record = Instant::now();
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            if count >= expected && reached.is_none() {
                reached = Some(Instant::now());
            }
            let settled = at_end.len() >= usize::try_from(partitions)?
                && last_record.elapsed() > Duration::from_secs(5)
                && read_to_the_end(&consumer)?;
            if reached.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) || settled {
                if count != expected || distinct != expected {
                    eprintln!(
                        "exactly-bench: {count} records ({distinct} distinct inputs) in {} where {expected} were \
                         expected; {}",
                        consumer_topic(&consumer),
                        where_records_are(&consumer, &counts)
                    );
                }
                return Ok(OutputCount { records: count, distinct });
            }
            if Instant::now() > deadline {
                bail!("reading {} did not reach its end", consumer_topic(&consumer));
            }
        }
    })
    .await?
}

/// Where a reader stands in one partition, against what the broker holds there now.
struct PartitionEnd {
    partition: i32,
    /// The reader's position (0 before its first read).
    position: i64,
    /// The low and high watermarks.
    low: i64,
    high: i64,
}

/// [`PartitionEnd`] of each partition assigned to `consumer`.
fn partition_ends(consumer: &BaseConsumer) -> anyhow::Result<Vec<PartitionEnd>> {
    consumer
        .position()?
        .elements()
        .iter()
        .map(|element| {
            let (low, high) =
                consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(10))?;
            let position = if let Offset::Offset(position) = element.offset() { position } else { 0 };
            Ok(PartitionEnd { partition: element.partition(), position, low, high })
        })
        .collect()
}

/// Whether `consumer` has read each of its partitions up to the end the broker reports now.
fn read_to_the_end(consumer: &BaseConsumer) -> anyhow::Result<bool> {
    Ok(partition_ends(consumer)?.iter().all(|end| end.position >= end.high))
}

/// Per partition: the records read, the offsets the broker holds (low to high watermark)
/// and the reader's position, for a count that came out wrong.
fn where_records_are(consumer: &BaseConsumer, counts: &std::collections::BTreeMap<i32, u64>) -> String {
    match partition_ends(consumer) {
        Ok(ends) => ends
            .iter()
            .map(|end| {
                let read = counts.get(&end.partition).copied().unwrap_or_default();
                format!(
                    "partition {}: {read} read, offsets {} to {}, position {}",
                    end.partition, end.low, end.high, end.position
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("partition ends unknown: {e:#}"),
    }
}

fn consumer_topic(consumer: &BaseConsumer) -> String {
    consumer.assignment().ok().and_then(|a| a.elements().first().map(|e| e.topic().to_owned())).unwrap_or_default()
}

/// Sends `rate` messages a second of `size` bytes to `topic`, spread over its partitions
/// (message `seq` to partition `seq % partitions`, keyed `k{seq}`), message `seq` when
/// `seq / rate` seconds have passed, each stamped with its send time and `seq`, for as long
/// as `go_on(time since the start)` holds; waits until all are acknowledged and returns how
/// many were sent. S4 sends for a fixed time; S9 until its measurement is done.
pub(crate) async fn send_while(
    bed: &Bed,
    (topic, partitions): (&str, i32),
    rate: f64,
    size: usize,
    go_on: impl Fn(Duration) -> bool,
) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = bed
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .context("cannot create the paced producer")?;
    let tick = Duration::from_millis(5);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0_u64;
    while go_on(started.elapsed()) {
        interval.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let partition = i32::try_from(sent % u64::try_from(partitions)?)?;
            let bytes = stamped_payload(sent, size);
            let key = format!("k{sent}");
            let record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition).key(key.as_bytes()).payload(&bytes);
            if let Err((e, _)) = producer.send(record) {
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                    break;
                }
                return Err(e.into());
            }
            sent += 1;
        }
    }
    tokio::task::block_in_place(|| producer.flush(Duration::from_secs(30)))?;
    Ok(sent)
}

/// Recovery after SIGKILL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovery {
    /// Messages a second before the kill.
    pub(crate) rate_before: f64,
    /// From the kill until the restarted process made its first progress durable.
    pub(crate) resumed_s: f64,
    /// From the kill until a one-second window ran at 90% of `rate_before`.
    pub(crate) back_to_90_s: f64,
    pub(crate) peak_rss_kib: u64,
}

/// Starts a process with `start`, lets it run `steady` through a backlog (its rate
/// measured over the last two seconds of it), kills it with SIGKILL, starts it again at
/// once and measures how long processing takes to resume and to get back to 90% of the
/// rate it had.
pub(crate) async fn recovery(
    start: impl Fn(&str) -> anyhow::Result<Measured>,
    progress: &Progress,
    steady: Duration,
    (backlog, seconds_left): (i64, f64),
) -> anyhow::Result<Recovery> {
    let mut first = start("before")?;
    // Wait for progress, then run `steady`.
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.done().await? == 0 {
        first.check_running()?;
        if Instant::now() > deadline {
            bail!("no progress within two minutes; the log ends with:\n{}", first.log_tail());
        }
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(steady.saturating_sub(Duration::from_secs(2))).await;
    let (t0, d0) = (Instant::now(), progress.done().await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.check_running()?;
    let (t1, d1) = (Instant::now(), progress.done().await?);
    let rate_before = (d1 - d0) as f64 / t1.duration_since(t0).as_secs_f64();
    let peak_before = first.peak_rss_kib();
    // What is left must outlast the recovery (a session timeout, for dynamic membership)
    // and a one-second window at this rate.
    if rate_before <= 0.0 || (backlog - d1) as f64 / rate_before < seconds_left {
        bail!("the backlog ({backlog} messages) is too small: {d1} done before the kill at {rate_before:.0} msg/s");
    }
    first.kill().await?;
    let killed = Instant::now();
    let at_kill = progress.done().await?;
    let mut second = start("after")?;
    let mut samples: std::collections::VecDeque<(Instant, i64)> = std::collections::VecDeque::new();
    let mut resumed = None;
    let deadline = killed + Duration::from_secs(180);
    let back = loop {
        second.check_running()?;
        let (now, done) = (Instant::now(), progress.done().await?);
        if resumed.is_none() && done > at_kill {
            resumed = Some(now.duration_since(killed));
        }
        samples.push_back((now, done));
        while samples.len() > 2 && now.duration_since(samples[1].0) >= Duration::from_secs(1) {
            samples.pop_front();
        }
        if let Some(&(then, before)) = samples.front() {
            let window = now.duration_since(then).as_secs_f64();
            if resumed.is_some() && window >= 1.0 && (done - before) as f64 / window >= 0.9 * rate_before {
                break now.duration_since(killed);
            }
        }
        if now > deadline {
            bail!("not back to 90% of {rate_before:.0} msg/s within 3 minutes of the kill");
        }
        tokio::time::sleep(POLL).await;
    };
    let peak_rss_kib = peak_before.max(second.peak_rss_kib());
    second.kill().await?;
    Ok(Recovery {
        rate_before,
        resumed_s: resumed.unwrap_or(back).as_secs_f64(),
        back_to_90_s: back.as_secs_f64(),
        peak_rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::input_index;

    #[test]
    fn an_output_record_is_traced_to_its_input_by_key() {
        assert_eq!(input_index(Some(b"k0"), 10), Some(0));
        assert_eq!(input_index(Some(b"k9"), 10), Some(9));
        assert_eq!(input_index(Some(b"k10"), 10), None, "beyond the input");
        assert_eq!(input_index(Some(b"x1"), 10), None, "not an input key");
        assert_eq!(input_index(None, 10), None);
    }
}
