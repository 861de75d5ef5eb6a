//! S8: key-level concurrency inside a partition. A handler waits 1 ms, as I/O would
//! (`tokio::time::sleep`), then inserts one row; 8 partitions, keys uniform over 10 000,
//! Zipf-distributed over 10 000, or one hot key. exactly sequential (today's behaviour)
//! and with key concurrency N (`Subscription::with_key_concurrency`) are compared with a
//! hand-written at-least-once key-parallel consumer (Parallel Consumer's design,
//! `worker/key_parallel.rs`) at the same N and pool size; then throughput against N for
//! each key distribution, as a table and as charts.

use anyhow::Context as _;

use super::{PARTITIONS, Suite, median, throughput_row};
use crate::chart::{LineChart, Series};
use crate::keys::{KEYS, KeyDistribution, most_frequent};
use crate::measure::Throughput;
use crate::report::{Chart, Section, count};
use crate::variant::{BATCH_WAIT_MS, COMMIT_MS, DEFAULT_BATCH, DEFAULT_CONCURRENCY, Subject, Variant};
use crate::worker::{Statement, System};

/// How long the handler waits per message, in microseconds: its I/O.
const WAIT_US: u64 = 1_000;

/// The in-flight bound the targets judge: up to 64 messages of a partition at once.
const JUDGED_N: usize = 64;

/// Most connections a run gets (exactly's `max_concurrent_batches`; both pools have two
/// more): the test bed's PostgreSQL takes 300, and the bench's own pools need a few.
const MAX_CONNECTIONS: usize = 128;

/// The input's partitions, as a count.
const PARTITION_COUNT: usize = PARTITIONS as usize;

/// Bytes per message, the row's payload: small, so that the wait, not the bytes, is the work.
const MESSAGE_BYTES: usize = 100;

/// Parallel Consumer's published rate for 1 ms of work per message in key order, in msg/s.
const PARALLEL_CONSUMER_RATE: f64 = 62_000.0;

/// The colour of exactly's line in the charts.
const EXACTLY_COLOUR: &str = "#1f77b4";

/// The colour of the key-parallel baseline's line in the charts (dashed).
const BASELINE_COLOUR: &str = "#d62728";

impl Suite<'_> {
    /// S8: per key distribution, one backlog on which the runs the targets judge and the
    /// in-flight sweep are measured; then the comparison's table and targets, and the
    /// sweep's table and charts.
    pub(crate) async fn s8(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        for keys in KeyDistribution::ALL {
            runs.push(self.s8_runs(keys).await?);
        }
        self.s8_comparison(&runs)?;
        self.s8_sweep(&runs)
    }

    /// Every run on one input: those the targets judge (repeated, with uniform keys), then
    /// the sweep's others, once each.
    async fn s8_runs(&mut self, keys: KeyDistribution) -> anyhow::Result<KeyRuns> {
        let n = match keys {
            KeyDistribution::HotKey => self.profile.s8_hot_key_messages,
            KeyDistribution::Uniform | KeyDistribution::Zipf => self.profile.s8_messages,
        };
        self.say(&format!("S8: filling a topic with {n} messages of {MESSAGE_BYTES} B, keys {}", keys.label()));
        let sampled = keys.sample(n);
        let input = self.bed.filled_keyed_topic(PARTITIONS, &sampled, MESSAGE_BYTES).await?;
        let repeats = if keys == KeyDistribution::Uniform { self.profile.s8_repeats } else { 1 };
        let judged = judged_variants(keys);
        let swept = swept_variants(self.profile.s8_in_flight, &judged);
        let mut results = self.compare(&judged, &input, PARTITIONS, MESSAGE_BYTES, n, repeats).await?;
        results.extend(self.compare(&swept, &input, PARTITIONS, MESSAGE_BYTES, n, 1).await?);
        self.bed.delete_topics(&[&input]).await?;
        let variants = judged.into_iter().chain(swept).collect();
        Ok(KeyRuns { keys, messages: n, top_key_messages: most_frequent(&sampled), variants, results })
    }

    /// The comparison: per input, exactly sequential, exactly and the baseline at
    /// [`JUDGED_N`]; what bounds the skewed inputs; Parallel Consumer's figure beside
    /// ours; the targets (uniform keys).
    fn s8_comparison(&mut self, runs: &[KeyRuns]) -> anyhow::Result<()> {
        let profile = &self.profile;
        let mut section = Section::new(
            "S8: key-level concurrency inside a partition",
            &comparison_text(profile.s8_messages, profile.s8_hot_key_messages, profile.s8_repeats),
            &[
                "keys",
                "system",
                "settings",
                "msg/s",
                "MB/s",
                "vs key-parallel at-least-once, same N",
                "vs exactly sequential",
                "peak RSS",
                "CPU per msg",
                "broker CPU per msg",
            ],
        );
        for keyed in runs {
            let baseline = keyed.rate(System::KeyParallel, JUDGED_N)?;
            let sequential = keyed.rate(System::ExactlyIoBound, 1)?;
            for (system, n) in JUDGED.into_iter().chain(ceiling_point(keyed.keys)) {
                let (variant, results) = keyed.point(system, n)?;
                let mut row = throughput_row(variant, results, MESSAGE_BYTES, baseline);
                row.insert(5, format!("{:.2}", median(results).rate() / sequential));
                row.insert(0, keyed.keys.label().to_owned());
                section.row(row);
            }
            if let Some(note) = skew_note(keyed)? {
                section.note(note);
            }
        }
        let uniform = runs
            .iter()
            .find(|keyed| keyed.keys == KeyDistribution::Uniform)
            .context("S8 measured no input with uniform keys")?;
        let machine = self.report.context.iter().find(|(what, _)| what == "machine").map(|(_, facts)| facts.as_str());
        section.note(parallel_consumer_note(uniform, machine)?);
        self.s8_targets(uniform)?;
        self.report.sections.push(section);
        Ok(())
    }

    /// The targets, on uniform keys: exactly with key concurrency against itself
    /// sequential, and against the hand-written key-parallel consumer at the same bound.
    fn s8_targets(&mut self, uniform: &KeyRuns) -> anyhow::Result<()> {
        let sequential = uniform.rate(System::ExactlyIoBound, 1)?;
        let concurrent = uniform.rate(System::ExactlyIoBound, JUDGED_N)?;
        let baseline = uniform.rate(System::KeyParallel, JUDGED_N)?;
        let ceiling = uniform.rate(CEILING, 1)?;
        let goal = 10.0;
        let beside = if ceiling < goal * sequential { "below" } else { "above" };
        self.target(
            &format!("S8 (uniform keys): exactly, key concurrency {JUDGED_N} / exactly sequential"),
            &format!(
                "like for like in work (1 ms wait, then one `INSERT` per message, the same input, both exactly \
                 once); {JUDGED_N} messages of a partition in flight against one. PostgreSQL alone, with no Kafka \
                 and no wait, ran the same `INSERT`s ({} per transaction, {} connections) at {} msg/s: {beside} the \
                 goal's {} msg/s",
                lane_batch(),
                connections(JUDGED_N),
                count(ceiling),
                count(goal * sequential)
            ),
            concurrent,
            sequential,
            goal,
        );
        self.target(
            &format!(
                "S8 (uniform keys): exactly, key concurrency {JUDGED_N} / at-least-once key-parallel consumer, \
                 {JUDGED_N} in flight"
            ),
            &format!(
                "like for like in work and bounds (1 ms wait, then one `INSERT` per message; ≤ {JUDGED_N} in \
                 flight per partition, never two of one key; pools of {} connections); exactly once against \
                 at-least-once, whose inserts run in autocommit, each taking a connection for the insert only",
                connections(JUDGED_N) + 2
            ),
            concurrent,
            baseline,
            0.8,
        );
        Ok(())
    }

    /// The sweep: per input and bound N, both systems' rates as a table, and a chart per
    /// input.
    fn s8_sweep(&mut self, runs: &[KeyRuns]) -> anyhow::Result<()> {
        let in_flight = self.profile.s8_in_flight;
        let mut section = Section::new(
            "S8: throughput against the in-flight bound",
            &sweep_text(in_flight, self.profile.s8_repeats),
            &[
                "keys",
                "N (in flight per partition)",
                "pool (both)",
                "exactly msg/s",
                "key-parallel at-least-once msg/s",
                "exactly / key-parallel",
                "exactly vs sequential",
            ],
        );
        for keyed in runs {
            let sequential = keyed.rate(System::ExactlyIoBound, 1)?;
            for &n in in_flight {
                let (exactly, baseline) = (keyed.rate(System::ExactlyIoBound, n)?, keyed.rate(System::KeyParallel, n)?);
                section.row(vec![
                    keyed.keys.label().to_owned(),
                    n.to_string(),
                    (connections(n) + 2).to_string(),
                    count(exactly),
                    count(baseline),
                    format!("{:.2}", exactly / baseline),
                    format!("{:.2}", exactly / sequential),
                ]);
            }
            section.chart(chart(keyed, in_flight)?);
        }
        self.report.sections.push(section);
        Ok(())
    }
}

/// The comparison's rows: exactly sequential, then exactly and the baseline at [`JUDGED_N`].
const JUDGED: [(System, usize); 3] =
    [(System::ExactlyIoBound, 1), (System::ExactlyIoBound, JUDGED_N), (System::KeyParallel, JUDGED_N)];

/// One input's runs: every system at every bound measured, and what the input holds.
#[derive(Debug)]
struct KeyRuns {
    keys: KeyDistribution,
    /// Messages in the backlog.
    messages: u64,
    /// Messages of its most frequent key.
    top_key_messages: u64,
    variants: Vec<Variant>,
    /// The runs of each variant, in the same order.
    results: Vec<Vec<Throughput>>,
}

impl KeyRuns {
    /// The runs of `system` at in-flight bound `n`, with its variant.
    fn point(&self, system: System, n: usize) -> anyhow::Result<(&Variant, &[Throughput])> {
        self.variants
            .iter()
            .zip(&self.results)
            .find(|(variant, _)| variant.subject == Subject::Worker(system) && variant.key_concurrency == n)
            .map(|(variant, runs)| (variant, runs.as_slice()))
            .with_context(|| format!("S8, keys {}: {} at N = {n} was not measured", self.keys.label(), system.label()))
    }

    /// The median rate of `system` at in-flight bound `n`.
    fn rate(&self, system: System, n: usize) -> anyhow::Result<f64> {
        Ok(median(self.point(system, n)?.1).rate())
    }
}

/// The connections a run at bound `n` gets: exactly's `max_concurrent_batches` (its pool
/// has two more) and the baseline's pool less two, so that both pools are the same size.
/// One per message the partitions may have in flight, as a user raising the bound would
/// raise them, from exactly's default up to [`MAX_CONNECTIONS`].
fn connections(n: usize) -> usize {
    PARTITION_COUNT.saturating_mul(n).clamp(DEFAULT_CONCURRENCY, MAX_CONNECTIONS)
}

/// exactly with S8's handler at key concurrency `n` (1: sequential, today's behaviour).
fn exactly(n: usize) -> Variant {
    let label = if n == 1 { "exactly, sequential (today)" } else { "exactly, key concurrency" };
    Variant {
        key_concurrency: n,
        concurrency: connections(n),
        handler_delay_us: WAIT_US,
        ..Variant::of(System::ExactlyIoBound)
    }
    .labelled(label)
}

/// The hand-written key-parallel consumer with up to `n` messages of a partition in flight.
fn key_parallel(n: usize) -> Variant {
    Variant {
        key_concurrency: n,
        concurrency: connections(n),
        handler_delay_us: WAIT_US,
        ..Variant::of(System::KeyParallel)
    }
}

/// The runs the targets judge, in [`JUDGED`]'s order; with uniform keys, then PostgreSQL
/// alone writing the same rows ([`postgres_ceiling`]).
fn judged_variants(keys: KeyDistribution) -> Vec<Variant> {
    let mut judged: Vec<Variant> = JUDGED
        .iter()
        .map(|&(system, n)| if system == System::KeyParallel { key_parallel(n) } else { exactly(n) })
        .collect();
    if ceiling_point(keys).is_some() {
        judged.push(postgres_ceiling());
    }
    judged
}

/// PostgreSQL alone's point among the comparison's, on the input it is measured on (keys
/// uniform: its rows have no keys, so one input is enough).
fn ceiling_point(keys: KeyDistribution) -> Option<(System, usize)> {
    (keys == KeyDistribution::Uniform).then_some((CEILING, 1))
}

/// PostgreSQL alone (S8's ceiling row).
const CEILING: System = System::PostgresOnly(Statement::PerRow);

/// How many messages a lane of exactly's at [`JUDGED_N`] commits per transaction, at most:
/// its batches are split among the lanes.
fn lane_batch() -> usize {
    DEFAULT_BATCH.div_ceil(JUDGED_N)
}

/// PostgreSQL alone, with no Kafka and no wait, writing S8's rows as exactly's lanes do at
/// [`JUDGED_N`]: one `INSERT` per message, a lane's batch per transaction, on as many
/// connections: the most the database does with that statement on this machine.
fn postgres_ceiling() -> Variant {
    Variant { batch: lane_batch(), ..Variant::postgres(Statement::PerRow, connections(JUDGED_N)) }
        .labelled("PostgreSQL alone (no Kafka, no wait), one `INSERT` per message")
}

/// The sweep's other runs: both systems at each bound of `in_flight`, but those already
/// among `judged`. At each bound the systems start one further along, so that neither
/// always runs first (the broker's rate drifts over a run).
fn swept_variants(in_flight: &[usize], judged: &[Variant]) -> Vec<Variant> {
    in_flight
        .iter()
        .enumerate()
        .flat_map(|(index, &n)| {
            let mut pair = [exactly(n), key_parallel(n)];
            pair.rotate_left(index % 2);
            pair
        })
        .filter(|variant| !judged.iter().any(|other| same_point(other, variant)))
        .collect()
}

/// Whether two variants are the same system at the same bound (one run serves both).
fn same_point(one: &Variant, other: &Variant) -> bool {
    one.subject == other.subject && one.key_concurrency == other.key_concurrency
}

/// What bounds a skewed input's rate, and how close key concurrency came to sequential on
/// it; `None` for uniform keys, where no key is frequent enough to bound anything.
fn skew_note(keyed: &KeyRuns) -> anyhow::Result<Option<String>> {
    if keyed.keys == KeyDistribution::Uniform || keyed.top_key_messages == 0 {
        return Ok(None);
    }
    let (top, n) = (keyed.top_key_messages, keyed.messages);
    // Its messages one at a time, each waiting at least the handler's wait.
    let floor_s = top as f64 * WAIT_US as f64 / 1e6;
    let bound = n as f64 / floor_s;
    let sequential = keyed.rate(System::ExactlyIoBound, 1)?;
    let concurrent = keyed.rate(System::ExactlyIoBound, JUDGED_N)? / sequential;
    let baseline = keyed.rate(System::KeyParallel, JUDGED_N)? / sequential;
    let measured = format!(
        "Measured: exactly with key concurrency {JUDGED_N} at {concurrent:.2} of exactly sequential, the \
         key-parallel consumer at {baseline:.2}."
    );
    Ok(Some(match keyed.keys {
        KeyDistribution::HotKey => format!(
            "One hot key: every message has the same key, so all {n} are in its partition (the other {} stand \
             idle) and at most one is in flight whatever N. Key concurrency is expected to be close to \
             sequential here, and every row near one partition's sequential rate: at 1 ms or more per message, \
             at most {} msg/s. {measured}",
            PARTITIONS - 1,
            count(bound)
        ),
        _ => format!(
            "{}: the most frequent key has {top} of the {n} messages ({:.1}%). They are handled one at a time \
             whatever N, each waiting 1 ms or more, so they alone take at least {floor_s:.1} s: no system that \
             keeps each key's order can pass {} msg/s on this input, however large N. {measured}",
            keyed.keys.label(),
            100.0 * top as f64 / n as f64,
            count(bound)
        ),
    }))
}

/// Parallel Consumer's published figure beside ours, with the machine each was measured on.
fn parallel_consumer_note(uniform: &KeyRuns, machine: Option<&str>) -> anyhow::Result<String> {
    let exactly = uniform.rate(System::ExactlyIoBound, JUDGED_N)?;
    let baseline = uniform.rate(System::KeyParallel, JUDGED_N)?;
    let machine = machine.map_or_else(
        || "the machine at the head of this report".to_owned(),
        |facts| format!("the machine at the head of this report ({facts})"),
    );
    Ok(format!(
        "Confluent's Parallel Consumer publishes about {} msg/s for 1 ms of work per message in key order, \
         measured on a larger machine than this one. Here, on {machine}, with keys uniform over {} and \
         N = {JUDGED_N}: exactly with key concurrency reached {} msg/s ({:.2} of that figure) and the \
         hand-written key-parallel consumer {} msg/s ({:.2}). Each of our messages also inserts a row into \
         PostgreSQL, on the same cores.",
        count(PARALLEL_CONSUMER_RATE),
        count(f64::from(KEYS)),
        count(exactly),
        exactly / PARALLEL_CONSUMER_RATE,
        count(baseline),
        baseline / PARALLEL_CONSUMER_RATE,
    ))
}

/// The chart of one input: msg/s against N, exactly's line solid, the baseline's dashed.
fn chart(keyed: &KeyRuns, in_flight: &[usize]) -> anyhow::Result<Chart> {
    let line = |system: System, name: &str, colour: &'static str, dashed: bool| -> anyhow::Result<Series> {
        let values = in_flight.iter().map(|&n| keyed.rate(system, n)).collect::<anyhow::Result<Vec<f64>>>()?;
        Ok(Series { name: name.to_owned(), values, colour, dashed })
    };
    let chart = LineChart {
        title: format!("S8, keys {}: msg/s against N (1 ms handler, {PARTITIONS} partitions)", keyed.keys.label()),
        x_name: "N: messages of a partition in flight at once, at most (log scale)".to_owned(),
        y_name: "messages per second".to_owned(),
        xs: in_flight.iter().map(|&n| n as f64).collect(),
        series: vec![
            line(System::ExactlyIoBound, "exactly, key concurrency N (N = 1: sequential)", EXACTLY_COLOUR, false)?,
            line(
                System::KeyParallel,
                "rdkafka + sqlx, at-least-once, key-parallel, N in flight per partition",
                BASELINE_COLOUR,
                true,
            )?,
        ],
    };
    Ok(Chart {
        file: format!("s8-key-concurrency-{}.svg", keyed.keys.slug()),
        caption: format!(
            "S8, keys {}: msg/s against the in-flight bound N; solid: exactly, dashed: the hand-written \
             at-least-once key-parallel consumer",
            keyed.keys.label()
        ),
        svg: chart.to_svg(),
    })
}

/// What S8's comparison measures, above its table.
fn comparison_text(messages: u64, hot_key_messages: u64, repeats: usize) -> String {
    format!(
        "Each message's handler waits 1 ms (`tokio::time::sleep`, asynchronously, as a call to another service \
         would) and then inserts one row ({MESSAGE_BYTES} B of payload) into a table with a primary key, as \
         S1's. {PARTITIONS} partitions; each message's key chooses its partition (a hash of the key, as a \
         producer's partitioner does), so that a key's messages are in one partition, in order. Three inputs: \
         keys uniform over {keys} and Zipf-distributed (s = 1) over {keys}, {messages} messages each, and one \
         hot key, {hot_key_messages} messages (all in one partition and handled one at a time by every \
         system, so that a larger backlog would take minutes per run); every system works through the same \
         input. exactly runs in Database mode with its default batches (≤ {DEFAULT_BATCH} messages or \
         {BATCH_WAIT_MS} ms per transaction with the stored position): sequential is today's behaviour (key \
         concurrency 1, one message of a partition at a time); with key concurrency N \
         (`Subscription::with_key_concurrency(N)`) up to N messages of a partition are in flight, never two of \
         one key. Its `max_concurrent_batches` is one per message the partitions may have in flight \
         ({PARTITIONS} × N), from its default {DEFAULT_CONCURRENCY} up to {MAX_CONNECTIONS}; its pool has two \
         connections more. The hand-written consumer is at-least-once, Confluent Parallel Consumer's design \
         in Rust with rdkafka and sqlx: one consumer reads, each partition's messages queue per key, up to N \
         of a partition are in flight (a task each), never two of one key; each waits 1 ms, then inserts its \
         row in autocommit through a pool as large as exactly's, taking a connection for the insert only; \
         every {COMMIT_MS} ms it commits, per partition, the lowest offset not yet done. Both run at N = \
         {JUDGED_N} here. With uniform keys, median of {repeats} runs (range in brackets), the systems \
         interleaved; with Zipf and one hot key, one run each (the sweep's, below). Throughput counts the \
         positions made durable: exactly's stored positions and the consumer's committed offsets, both the \
         lowest offset not yet done in each partition. After every run the table holds each input message \
         once (rows and distinct offsets counted per partition against the input's) and no dead letter was \
         written. With one hot key, every message is in one partition and at most one is in flight whatever \
         N: key concurrency is expected to be close to sequential there. With uniform keys, PostgreSQL alone \
         writes as many rows with the same `INSERT` per message, {lane} per transaction (what a lane of \
         exactly's commits at N = {JUDGED_N}) on {pool} connections, with no Kafka and no wait: the \
         database's ceiling for that statement here.",
        lane = lane_batch(),
        pool = connections(JUDGED_N),
        keys = count(f64::from(KEYS)),
    )
}

/// What S8's sweep measures, above its table; `repeats`: the comparison's runs per point.
fn sweep_text(in_flight: &[usize], repeats: usize) -> String {
    let bounds: Vec<String> = in_flight.iter().map(usize::to_string).collect();
    format!(
        "Throughput against N, the bound on messages of a partition in flight at once, at N = {}, for each \
         input above: exactly with key concurrency N (N = 1 is exactly sequential) and the hand-written \
         key-parallel consumer with up to N in flight per partition. One run per point, but the comparison's \
         (uniform keys, exactly at N = 1 and both at N = {JUDGED_N}: median of {repeats}). The connections \
         grow with N as above ({PARTITIONS} × N, from {DEFAULT_CONCURRENCY} up to {MAX_CONNECTIONS}; \"pool\" \
         is both systems' pool, two more), as a user raising N would raise them; at N = 1 both handle one \
         message of a partition at a time. At each N the two systems take turns to run first. \"exactly / \
         key-parallel\" compares the two at the same N; \"exactly vs sequential\" compares exactly with itself \
         at N = 1. The charts below draw the two msg/s columns, one chart per input, each on its own scale.",
        bounds.join(", ")
    )
}
