//! S7: Kafka to PostgreSQL with a batch handler. exactly's `BatchHandler` writes each
//! batch with one statement, `INSERT … UNNEST` or binary `COPY` (built with
//! `exactly::bulk::BinaryCopy`), in the transaction that stores the batch's position. It
//! is compared with S1's hand-written at-least-once program writing with the same
//! statement at the same concurrency, and with PostgreSQL alone running that statement
//! with no Kafka; then throughput against the batch limit, as a table and as a chart.

use anyhow::Context as _;

use super::{KB, PARTITIONS, Suite, median, throughput_row};
use crate::chart::{LineChart, Series};
use crate::measure::Throughput;
use crate::report::{Chart, Section};
use crate::variant::{BATCH_WAIT_MS, COMMIT_MS, DEFAULT_BATCH, DEFAULT_CONCURRENCY, Subject, Variant};
use crate::worker::{Statement, System};

/// The statements compared: each with its name in the report and its colour in the chart.
const STATEMENTS: [(Statement, &str, &str); 2] =
    [(Statement::Unnest, "`INSERT … UNNEST`", "#1f77b4"), (Statement::Copy, "`COPY`", "#d62728")];

/// The batch limits the sweep measures: exactly's `Batch::max_records`, and the
/// hand-written program's batch size.
const BATCH_LIMITS: [usize; 4] = [100, 500, 2_000, 10_000];

/// How long a batch of the sweep waits for more after its first message. At the usual
/// 50 ms a batch of 10 000 would close on the clock, not on its limit, and the sweep would
/// not measure the limit; on a backlog, no batch waits this long.
const SWEEP_WAIT_MS: u64 = 1_000;

/// The sweep's chart, written beside the report.
const CHART_FILE: &str = "s7-batch-size.svg";

impl Suite<'_> {
    /// S7: the comparison the targets judge, on a backlog of at least a million messages,
    /// then the batch-limit sweep on a smaller one (sixteen runs of that size would take
    /// half an hour).
    pub(crate) async fn s7(&mut self) -> anyhow::Result<()> {
        self.s7_comparison().await?;
        self.s7_batch_limits().await
    }

    /// Per statement: exactly's batch handler, the hand-written at-least-once program and
    /// PostgreSQL alone, at the default batch limit; median of `s7_repeats` runs each.
    async fn s7_comparison(&mut self) -> anyhow::Result<()> {
        let (n, repeats) = (self.profile.s7_messages, self.profile.s7_repeats);
        self.say(&format!("S7: filling a topic with {n} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        // Three rows per statement: exactly, its hand-written baseline, PostgreSQL alone.
        let variants: Vec<Variant> = STATEMENTS
            .iter()
            .flat_map(|&(statement, ..)| {
                [
                    Variant::of(System::ExactlyBatch(statement)),
                    Variant::of(System::PerPartition(statement)),
                    Variant::postgres(statement, DEFAULT_CONCURRENCY),
                ]
            })
            .collect();
        let results = self.compare(&variants, &input, PARTITIONS, KB, n, repeats).await?;
        self.bed.delete_topics(&[&input]).await?;
        let rate = |index: usize| median(&results[index]).rate();
        let mut section = Section::new(
            "S7: Kafka to PostgreSQL with a batch handler",
            &comparison_text(n, repeats),
            &[
                "system",
                "settings",
                "msg/s",
                "MB/s",
                "vs at-least-once, same statement",
                "vs PostgreSQL alone, same statement",
                "peak RSS",
                "CPU per msg",
                "broker CPU per msg",
            ],
        );
        for (index, (variant, runs)) in variants.iter().zip(&results).enumerate() {
            let first = index - index % 3;
            let mut row = throughput_row(variant, runs, KB, rate(first + 1));
            row.insert(5, format!("{:.2}", median(runs).rate() / rate(first + 2)));
            section.row(row);
        }
        for (index, &(statement, name, _)) in STATEMENTS.iter().enumerate() {
            let (exactly, hand_written, alone) = (rate(3 * index), rate(3 * index + 1), rate(3 * index + 2));
            self.target(
                &format!("S7: exactly, batch handler / at-least-once, task per partition, {name}"),
                &format!(
                    "like for like: one {name} per batch of ≤ {DEFAULT_BATCH}, {DEFAULT_CONCURRENCY} batches in \
                     flight on {DEFAULT_CONCURRENCY} connections; exactly once against at-least-once"
                ),
                exactly,
                hand_written,
                0.9,
            );
            if statement == Statement::Copy {
                self.target(
                    "S7: exactly, batch handler, `COPY` / PostgreSQL alone (no Kafka), `COPY`, 8 connections",
                    "not like for like: PostgreSQL's ceiling for the statement (the same `COPY` per batch of 500 \
                     rows on 8 connections), with no Kafka to read and no position to store",
                    exactly,
                    alone,
                    0.7,
                );
            }
        }
        self.report.sections.push(section);
        Ok(())
    }

    /// Throughput against the batch limit: exactly's batch handler and the hand-written
    /// program, each statement, every limit; one run per point. Written as a table and as
    /// the chart [`CHART_FILE`].
    async fn s7_batch_limits(&mut self) -> anyhow::Result<()> {
        let n = self.profile.s7_sweep_messages;
        self.say(&format!("S7 sweep: filling a topic with {n} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        let variants = Sweep::variants_to_run();
        let results = self.compare(&variants, &input, PARTITIONS, KB, n, 1).await?;
        self.bed.delete_topics(&[&input]).await?;
        let sweep = Sweep { variants, results };
        let mut section = Section::new(
            "S7: throughput against the batch limit",
            &sweep_text(n, self.profile.s7_messages, sweep.variants.len())?,
            &[
                "system",
                "settings",
                "msg/s",
                "MB/s",
                "vs at-least-once, same statement and limit",
                "peak RSS",
                "CPU per msg",
                "broker CPU per msg",
            ],
        );
        for limit in BATCH_LIMITS {
            for (statement, ..) in STATEMENTS {
                let baseline = sweep.rate(System::PerPartition(statement), limit)?;
                for system in [System::ExactlyBatch(statement), System::PerPartition(statement)] {
                    let (variant, runs) = sweep.point(system, limit)?;
                    section.row(throughput_row(variant, runs, KB, baseline));
                }
            }
        }
        section.chart(sweep.chart()?);
        self.report.sections.push(section);
        Ok(())
    }
}

/// The sweep's runs, and what each measured.
#[derive(Debug)]
struct Sweep {
    /// Each system at each limit ([`Sweep::variants_to_run`]).
    variants: Vec<Variant>,
    /// One run per variant, in the same order.
    results: Vec<Vec<Throughput>>,
}

impl Sweep {
    /// The systems swept: exactly's batch handler and the hand-written program, per
    /// statement; with their line's colour in the chart (their statement's) and whether it
    /// is dashed (the hand-written program's).
    fn systems() -> Vec<(System, &'static str, bool)> {
        STATEMENTS
            .iter()
            .flat_map(|&(statement, _, colour)| {
                [(System::ExactlyBatch(statement), colour, false), (System::PerPartition(statement), colour, true)]
            })
            .collect()
    }

    /// Each system at each limit. At each limit the systems start one further along, so
    /// that none always runs first (the broker's rate drifts over a run).
    fn variants_to_run() -> Vec<Variant> {
        let systems = Self::systems();
        BATCH_LIMITS
            .iter()
            .enumerate()
            .flat_map(|(index, &limit)| {
                let mut order = systems.clone();
                order.rotate_left(index % systems.len());
                order.into_iter().map(move |(system, ..)| Variant {
                    batch: limit,
                    batch_wait_ms: SWEEP_WAIT_MS,
                    ..Variant::of(system)
                })
            })
            .collect()
    }

    /// The run of `system` at `limit`, with its variant.
    fn point(&self, system: System, limit: usize) -> anyhow::Result<(&Variant, &[Throughput])> {
        self.variants
            .iter()
            .zip(&self.results)
            .find(|(variant, _)| variant.subject == Subject::Worker(system) && variant.batch == limit)
            .map(|(variant, runs)| (variant, runs.as_slice()))
            .with_context(|| format!("S7 sweep: {} at batch limit {limit} was not measured", system.label()))
    }

    /// The rate `system` reached at `limit`.
    fn rate(&self, system: System, limit: usize) -> anyhow::Result<f64> {
        Ok(median(self.point(system, limit)?.1).rate())
    }

    /// The chart: msg/s against the batch limit, a line per system; a statement's two
    /// systems in its colour, exactly's line solid and the hand-written program's dashed.
    fn chart(&self) -> anyhow::Result<Chart> {
        let mut series = Vec::new();
        for (system, colour, dashed) in Self::systems() {
            let values: Vec<f64> =
                BATCH_LIMITS.iter().map(|&limit| self.rate(system, limit)).collect::<anyhow::Result<_>>()?;
            series.push(Series { name: system.label().replace('`', ""), values, colour, dashed });
        }
        let chart = LineChart {
            title: "S7: Kafka to PostgreSQL, msg/s against the batch limit (1 KB messages, 8 partitions)".to_owned(),
            x_name: "batch limit (messages per transaction, at most; log scale)".to_owned(),
            y_name: "messages per second".to_owned(),
            xs: BATCH_LIMITS.iter().map(|&limit| limit as f64).collect(),
            series,
        };
        Ok(Chart {
            file: CHART_FILE.to_owned(),
            caption: "S7: msg/s against the batch limit; solid: exactly's batch handler, dashed: the hand-written \
                      at-least-once program with the same statement"
                .to_owned(),
            svg: chart.to_svg(),
        })
    }
}

/// What S7's comparison measures, above its table.
fn comparison_text(n: u64, repeats: usize) -> String {
    format!(
        "{n} messages of 1 KB in {PARTITIONS} partitions into a table with a primary key (as S1's); median of \
         {repeats} runs (range in brackets), the systems interleaved. exactly's batch handler (`BatchHandler`, \
         Database mode) is called once per batch of up to {DEFAULT_BATCH} messages of one partition (or what \
         came in {BATCH_WAIT_MS} ms) and writes it on `cx.db()` with one statement: one `INSERT … SELECT * FROM \
         UNNEST($1::int4[], $2::int8[], $3::bytea[])`, bound by the same code as the baseline's, or one binary \
         `COPY … FROM STDIN` built with `exactly::bulk::BinaryCopy`; its payloads are `bytes::Bytes`, which share \
         the buffer exactly keeps each record's bytes in. It commits in the transaction that stores \
         the partition's position, up to {DEFAULT_CONCURRENCY} batches in flight (`max_concurrent_batches`; \
         its pool has two more connections, used between batches). The hand-written programs are S1's \
         at-least-once task per partition with the same statement: batches of up to {DEFAULT_BATCH} messages or \
         {BATCH_WAIT_MS} ms on a pool of {DEFAULT_CONCURRENCY} connections, then the partition's next offset \
         stored for librdkafka to commit every {COMMIT_MS} ms (rdkafka's at-least-once recipe; a commit per batch \
         capped it at the broker's rate of offset commits, about 180 a second here). PostgreSQL alone writes as many rows with the same statement, {DEFAULT_BATCH} per \
         transaction on {DEFAULT_CONCURRENCY} connections, with no Kafka: the database's ceiling for that \
         statement. \"vs at-least-once\" and \"vs PostgreSQL alone\" compare each row with the row of its own \
         statement. After every exactly and hand-written run the table holds each input message once (rows and \
         distinct offsets counted per partition against the input's offsets) and no dead letter was written. \
         CPU per msg: the process's user and system time over the measured window, per message (PostgreSQL's \
         is not in it; PostgreSQL alone reports none); broker CPU per msg: the broker container's, over the \
         same window."
    )
}

/// What S7's sweep measures, above its table; `comparison_n`: the comparison's backlog,
/// `runs`: how many runs the sweep makes.
fn sweep_text(n: u64, comparison_n: u64, runs: usize) -> anyhow::Result<String> {
    let share = n / u64::try_from(PARTITIONS)?;
    let last_batch = if BATCH_LIMITS.iter().all(|&limit| share.is_multiple_of(limit as u64)) {
        format!("each partition's share ({share}) is a multiple of every limit, so its last batch closes on its limit")
    } else {
        format!(
            "each partition's share ({share}) is not a multiple of every limit, so its last batch may wait the full \
             {SWEEP_WAIT_MS} ms"
        )
    };
    Ok(format!(
        "{n} messages of 1 KB in {PARTITIONS} partitions, one run per point: a smaller backlog than the \
         comparison's ({comparison_n}), so that the sweep's {runs} runs take minutes. exactly's batch handler and \
         the hand-written at-least-once program, each with `INSERT … UNNEST` and with `COPY` as above, with the \
         batch limit (exactly's `Batch::max_records`, the program's batch size) at 100, 500, 2 000 and 10 000 \
         messages; {DEFAULT_CONCURRENCY} batches in flight on {DEFAULT_CONCURRENCY} connections. A batch waits up \
         to {SWEEP_WAIT_MS} ms for more after its first message, not {BATCH_WAIT_MS} ms as above: at \
         {BATCH_WAIT_MS} ms a batch of 10 000 would close on the clock, and the limit would not be what is \
         measured. On a backlog no batch waits that long, and {last_batch}. The runs are interleaved, each limit \
         starting with the next system. \"vs at-least-once\" compares each row with the hand-written program of \
         the same statement at the same limit. The chart below draws the msg/s column."
    ))
}
