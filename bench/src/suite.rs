//! The scenarios S1–S9, run in order on one test bed, each system against its baselines.

mod batch_handlers;
mod key_concurrency;
mod rebalance;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use exactly_integration_tests::unique;

use crate::bed::Bed;
use crate::measure::{self, Latency, Recovery, Throughput, Visible};
use crate::process::{Measured, Outcome};
use crate::profile::Profile;
use crate::progress::Progress;
use crate::report::{Report, Section, Target, count, mib};
use crate::streams::{self, StreamsCopy};
use crate::variant::{COMMIT_MS, DEFAULT_CONCURRENCY, Subject, Variant};
use crate::worker::{GroupProtocol, Statement, System, WorkerSpec};

const SESSION_TIMEOUT_MS: u32 = 10_000;
const PARTITIONS: i32 = 8;
const KB: usize = 1024;

/// Runs the scenarios and collects the report.
#[derive(Debug)]
pub(crate) struct Suite<'a> {
    bed: &'a Bed,
    profile: Profile,
    logs: PathBuf,
    pub(crate) report: Report,
    runs: usize,
    /// Median rates from S1: exactly and its like-for-like baseline (a).
    s1_rates: Option<(f64, f64)>,
    /// Median rates from S3 at 1 KB: exactly, the copy, and the faster Kafka Streams set-up
    /// (its rate and stream threads).
    s3_rates: Option<S3Rates>,
}

/// What S4 and S6 take from S3 at 1 KB.
#[derive(Debug, Clone, Copy)]
struct S3Rates {
    exactly: f64,
    copy: f64,
    streams: f64,
    streams_threads: usize,
}

impl<'a> Suite<'a> {
    pub(crate) fn new(bed: &'a Bed, profile: Profile, logs: PathBuf) -> Self {
        Self { bed, profile, logs, report: Report::default(), runs: 0, s1_rates: None, s3_rates: None }
    }

    fn say(&self, what: &str) {
        eprintln!("exactly-bench: {what}");
    }

    /// One unmeasured run of each kind of system on a small backlog: the broker creates its
    /// transaction and offsets logs on first use, and the first transactional run paid for
    /// that (one run fell to a thirtieth of the others).
    pub(crate) async fn warm_up(&mut self) -> anyhow::Result<()> {
        self.say("warming up the broker and the database (not measured)");
        // The broker's JVM compiles its produce, fetch and transaction paths as it runs them:
        // on a cold broker the first S3 runs came out a third slower than the last. So the
        // Kafka side works through a backlog of its own first; the database side needs less.
        let (n, small) = (self.profile.warm_up_messages, self.profile.warm_up_messages.min(2_000));
        let database_input = self.bed.filled_topic(PARTITIONS, small, KB).await?;
        self.throughput(&Variant::of(System::ExactlyDatabase), &database_input, PARTITIONS, KB, small).await?;
        let kafka_input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        // Every Kafka-side system warms up on the same backlog, Kafka Streams included (its
        // measured runs get the same warm broker as the others'). The smoke profile warms up
        // Kafka mode only, to stay short.
        let variants = if n > small {
            streams::build().await?;
            vec![Variant::of(System::ExactlyKafka), Variant::of(System::IdempotentCopy), Variant::streams(1)]
        } else {
            vec![Variant::of(System::ExactlyKafka)]
        };
        for variant in &variants {
            self.throughput(variant, &kafka_input, PARTITIONS, KB, n).await?;
        }
        self.bed.delete_topics(&[&database_input, &kafka_input]).await?;
        Ok(())
    }

    /// S1: Kafka to PostgreSQL, batched: exactly, the hand-written baselines at its
    /// concurrency and at one batch at a time, PostgreSQL alone, and Kafka alone.
    pub(crate) async fn s1(&mut self) -> anyhow::Result<()> {
        let n = self.profile.s1_messages;
        self.say(&format!("S1: filling a topic with {n} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        let mut variants = vec![
            Variant::of(System::ExactlyDatabase),
            Variant { concurrency: 1, ..Variant::of(System::ExactlyDatabase) }
                .labelled("exactly, Database mode, one batch at a time"),
            Variant::of(System::PerPartition(Statement::PerRow)),
            Variant::of(System::PerPartition(Statement::Unnest)),
            Variant::of(System::PerPartition(Statement::Copy)),
            Variant::of(System::BatchedInserts),
        ];
        for statement in [Statement::PerRow, Statement::Unnest, Statement::Copy] {
            variants.extend([Variant::postgres(statement, 1), Variant::postgres(statement, DEFAULT_CONCURRENCY)]);
        }
        let results = self.compare(&variants, &input, PARTITIONS, KB, n, self.profile.repeats).await?;
        self.bed.delete_topics(&[&input]).await?;
        let rate = |index: usize| median(&results[index]).rate();
        let baseline = rate(2);
        let mut section = Section::new(
            "S1: Kafka to PostgreSQL, batched",
            &format!(
                "{n} messages of 1 KB in {PARTITIONS} partitions into a table with a primary key; median of {} runs \
                 (range in brackets). exactly runs one `INSERT` per message (its handlers see one message at a \
                 time), up to {DEFAULT_CONCURRENCY} batches in flight, each in a transaction with its stored \
                 position. The hand-written baselines are at-least-once: a task per partition on \
                 {DEFAULT_CONCURRENCY} connections (as many batches in flight as exactly) writing each batch with \
                 per-row `INSERT`s, one `INSERT … UNNEST` or one `COPY`, then storing the offset for librdkafka to \
                 commit every {COMMIT_MS} ms (rdkafka's at-least-once recipe); and one loop, one batch at a time, \
                 its offsets committed the same way. PostgreSQL alone writes the same rows with the same statements \
                 and no Kafka, on 1 and on {DEFAULT_CONCURRENCY} connections: the database's ceiling for each \
                 shape. Kafka alone: a consumer that only reads, on a backlog of its own ({} messages). Ratios \
                 are to (a), the task-per-partition per-row baseline. CPU per msg: the process's user and system \
                 time over the measured window, per message (PostgreSQL's is not in it); broker CPU per msg: \
                 the broker container's, over the same window.",
                self.profile.repeats, self.profile.consume_messages
            ),
            &["system", "settings", "msg/s", "MB/s", "ratio to (a)", "peak RSS", "CPU per msg", "broker CPU per msg"],
        );
        for (index, (variant, runs)) in variants.iter().zip(&results).enumerate() {
            let mut row = throughput_row(variant, runs, KB, baseline);
            if index == 2 {
                row[0].push_str(" (a)");
            }
            section.row(row);
        }
        let consume = self.consume_ceiling().await?;
        let mut row = throughput_row(&Variant::of(System::ConsumeOnly), &consume, KB, baseline);
        row[1] = format!("auto-commit, {} messages", count(self.profile.consume_messages as f64));
        section.row(row);
        section.note(
            "Like for like: exactly against (a) (both per-row `INSERT`, both up to 8 batches in flight) and \
             exactly one batch at a time against the one-loop baseline (both per-row, one batch in flight). \
             Not like for like: exactly against the `UNNEST` and `COPY` baselines, which write a batch in one \
             statement; the handler measured here is called once per message (S7 measures exactly's batch \
             handlers against these baselines). Those targets are kept, and printed as met or missed like the \
             others."
                .to_owned(),
        );
        let exactly = rate(0);
        let like = "like for like: per-row `INSERT`, 8 batches in flight";
        self.target("S1: exactly / at-least-once, task per partition, per-row (a)", like, exactly, baseline, 0.9);
        self.target(
            "S1: exactly one batch at a time / at-least-once, one loop, per-row",
            "like for like: per-row `INSERT`, 1 batch in flight",
            rate(1),
            rate(5),
            0.9,
        );
        let unlike = "not like for like: exactly per-row (per-message handler; S7 measures batch handlers) \
                      against one statement per batch, both 8 batches in flight";
        self.target("S1: exactly / at-least-once, task per partition, `UNNEST`", unlike, exactly, rate(3), 0.9);
        self.target("S1: exactly / at-least-once, task per partition, `COPY`", unlike, exactly, rate(4), 0.9);
        self.s1_rates = Some((exactly, baseline));
        self.report.sections.push(section);
        Ok(())
    }

    /// S1's consume-only ceiling, on a backlog of its own.
    async fn consume_ceiling(&mut self) -> anyhow::Result<Vec<Throughput>> {
        let n = self.profile.consume_messages;
        self.say(&format!("S1: filling a topic with {n} messages of 1 KB (consume only)"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        let variants = [Variant::of(System::ConsumeOnly)];
        let mut results = self.compare(&variants, &input, PARTITIONS, KB, n, self.profile.repeats).await?;
        self.bed.delete_topics(&[&input]).await?;
        Ok(results.remove(0))
    }

    /// S2: Kafka to PostgreSQL, one message per transaction.
    pub(crate) async fn s2(&mut self) -> anyhow::Result<()> {
        let n = self.profile.s2_messages;
        self.say(&format!("S2: filling a topic with {n} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        let single = Variant { batch: 1, ..Variant::of(System::ExactlyDatabase) };
        let variants = [
            single.clone().labelled("exactly, Database mode, `Batch::single()`"),
            Variant { concurrency: 1, ..single }.labelled("exactly, `Batch::single()`, one at a time"),
            Variant::of(System::PlainLoopPerPartition),
            Variant::of(System::PlainLoop),
        ];
        let results = self.compare(&variants, &input, PARTITIONS, KB, n, self.profile.repeats).await?;
        let rate = |index: usize| median(&results[index]).rate();
        let baseline = rate(2);
        let mut section = Section::new(
            "S2: Kafka to PostgreSQL, one message per transaction",
            &format!(
                "{n} messages of 1 KB in {PARTITIONS} partitions; each transaction holds one `INSERT` and the \
                 position (exactly's stored position; the plain loops' upsert into their own table). exactly \
                 runs up to {DEFAULT_CONCURRENCY} partitions' transactions at once by default, and one at a \
                 time when asked; the plain loop runs once per partition on {DEFAULT_CONCURRENCY} connections \
                 (a), and as a single loop. Median of {} runs; ratios are to (a).",
                self.profile.repeats
            ),
            &["system", "settings", "msg/s", "MB/s", "ratio to (a)", "peak RSS", "CPU per msg", "broker CPU per msg"],
        );
        for (index, (variant, runs)) in variants.iter().zip(&results).enumerate() {
            let mut row = throughput_row(variant, runs, KB, baseline);
            if index == 2 {
                row[0].push_str(" (a)");
            }
            section.row(row);
        }
        self.target(
            "S2: exactly / plain loop per partition (a)",
            "like for like: one message per transaction, 8 in flight",
            rate(0),
            baseline,
            0.85,
        );
        self.target(
            "S2: exactly one at a time / plain loop, one loop",
            "like for like: one message per transaction, 1 in flight",
            rate(1),
            rate(3),
            0.85,
        );
        self.report.sections.push(section);
        self.bed.delete_topics(&[&input]).await?;
        Ok(())
    }

    /// S3: consume-transform-produce, at 1 KB and 100 B, then the commit-interval curve.
    pub(crate) async fn s3(&mut self) -> anyhow::Result<()> {
        streams::build().await?;
        let n = self.profile.s3_messages;
        let variants = [
            Variant::of(System::ExactlyKafka),
            Variant::of(System::IdempotentCopy),
            Variant::streams(1),
            Variant::streams(2),
        ];
        let mut section = Section::new(
            "S3: consume-transform-produce",
            &format!(
                "{n} messages copied from a topic of {PARTITIONS} partitions to another, committing every \
                 {COMMIT_MS} ms; exactly and Kafka Streams in transactions (read_committed), the baseline \
                 idempotent and at-least-once: it commits the offsets of delivered records without stopping its \
                 loop. Kafka Streams with the producer settings a user tunes for throughput (batch.size {} KB, \
                 linger.ms {}), with one and with two stream threads (b is one). Every output is read back: it \
                 holds each input once (distinct input keys). Median of {} runs; ratios are to the idempotent \
                 copy (a) and to Kafka Streams with one thread (b). CPU per msg: the process's user and system \
                 time over the measured window, per message; broker CPU per msg: the broker container's, over \
                 the same window (the transactional work of exactly and Kafka Streams is there).",
                streams::BATCH_SIZE / 1024,
                streams::LINGER_MS,
                self.profile.repeats
            ),
            &[
                "system",
                "message size",
                "msg/s",
                "MB/s",
                "ratio to (a)",
                "ratio to (b)",
                "peak RSS",
                "CPU per msg",
                "broker CPU per msg",
            ],
        );
        for size in [KB, 100] {
            self.say(&format!("S3: filling a topic with {n} messages of {size} B"));
            let input = self.bed.filled_topic(PARTITIONS, n, size).await?;
            let results = self.compare(&variants, &input, PARTITIONS, size, n, self.profile.repeats).await?;
            let rate = |index: usize| median(&results[index]).rate();
            let (exactly, copy, streams) = (rate(0), rate(1), rate(2));
            for (index, (variant, runs)) in variants.iter().zip(&results).enumerate() {
                let mut row = throughput_row(variant, runs, size, copy);
                row[1] = format!("{size} B");
                row.insert(5, format!("{:.2}", median(runs).rate() / streams));
                match index {
                    1 => row[0].push_str(" (a)"),
                    2 => row[0].push_str(" (b)"),
                    _ => {}
                }
                section.row(row);
            }
            if let Some(note) = cpu_account(size, &median(&results[0]), &median(&results[1])) {
                section.note(note);
            }
            let at = if size == KB { "1 KB" } else { "100 B" };
            if size == KB {
                self.target(
                    "S3 (1 KB): exactly / idempotent at-least-once copy (a)",
                    "like for like in work and concurrency (one loop copies, commits every 100 ms); exactly once against at-least-once",
                    exactly,
                    copy,
                    0.9,
                );
                let (streams, streams_threads) = if rate(3) > streams { (rate(3), 2) } else { (streams, 1) };
                self.s3_rates = Some(S3Rates { exactly, copy, streams, streams_threads });
            }
            self.target(
                &format!("S3 ({at}): exactly / Kafka Streams, 1 stream thread (b)"),
                "like for like: both exactly once, one processing thread, committing every 100 ms",
                exactly,
                rate(2),
                1.5,
            );
            self.target(
                &format!("S3 ({at}): exactly / Kafka Streams, 2 stream threads"),
                "not like for like: Kafka Streams on two threads, exactly's Kafka mode on one loop; both exactly once",
                exactly,
                rate(3),
                1.5,
            );
            self.bed.delete_topics(&[&input]).await?;
        }
        self.report.sections.push(section);
        self.curve().await
    }

    /// S3's curve: throughput against the commit interval.
    async fn curve(&mut self) -> anyhow::Result<()> {
        let n = self.profile.curve_messages;
        self.say(&format!("S3 curve: filling a topic with {n} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, n, KB).await?;
        let mut section = Section::new(
            "S3: throughput against the commit interval",
            &format!(
                "{n} messages of 1 KB (at least ten commit intervals of work at every point), one run per point. \
                 A Kafka-mode transaction commits every interval; the baseline commits the offsets of its \
                 delivered records as often."
            ),
            &["commit interval", "exactly msg/s", "baseline msg/s", "ratio", "exactly peak RSS"],
        );
        for interval in [10, 50, 100, 500, 1000] {
            let variants = [
                Variant { commit_interval_ms: interval, ..Variant::of(System::ExactlyKafka) },
                Variant { commit_interval_ms: interval, ..Variant::of(System::IdempotentCopy) },
            ];
            let results = self.compare(&variants, &input, PARTITIONS, KB, n, 1).await?;
            let (exactly, copy) = (median(&results[0]), median(&results[1]));
            section.row(vec![
                format!("{interval} ms"),
                count(exactly.rate()),
                count(copy.rate()),
                format!("{:.2}", exactly.rate() / copy.rate()),
                mib(exactly.peak_rss_kib),
            ]);
        }
        self.report.sections.push(section);
        self.bed.delete_topics(&[&input]).await?;
        Ok(())
    }

    /// S4: end-to-end latency at half of the maximum rate.
    pub(crate) async fn s4(&mut self) -> anyhow::Result<()> {
        let (Some((s1_exactly, s1_base)), Some(s3)) = (self.s1_rates, self.s3_rates) else {
            bail!("S4 runs at half the rates S1 and S3 measured: run them in the same run");
        };
        streams::build().await?;
        let (warm_up, measured) = self.profile.latency;
        let mut section = Section::new(
            "S4: end-to-end latency at half of the maximum rate",
            &format!(
                "Messages of 1 KB sent at a steady rate: half the median rate S1 (or S3 at 1 KB) measured for the \
                 slowest of the systems compared in the group, so that each runs at half its own maximum or \
                 less; {}s of warm-up, then {}s measured. Latency is from the send to the moment a reader sees \
                 the result: the row's commit (a trigger's notification, delivered at commit) or the output \
                 record under read_committed (the at-least-once copy's output needs no commit to be seen). The \
                 percentiles are over every message sent after the warm-up (\"sent\"): the run waits up to {}s \
                 after the last send for each to be seen, and a message never seen counts as slower than any \
                 seen (\"never seen\" where a percentile falls among them). A row with messages never seen did \
                 not keep up with the rate.",
                warm_up.as_secs(),
                measured.as_secs(),
                Latency::drain().as_secs()
            ),
            &["scenario", "system", "rate (msg/s)", "p50", "p99", "sent", "seen", "kept up", "peak RSS"],
        );
        let s1_rate = s1_exactly.min(s1_base) / 2.0;
        for variant in [Variant::of(System::ExactlyDatabase), Variant::of(System::PerPartition(Statement::PerRow))] {
            let latency = self.latency_db(&variant, s1_rate).await?;
            section.row(latency_row("S1", &variant, &latency));
        }
        let s3_rate = s3.exactly.min(s3.copy).min(s3.streams) / 2.0;
        let streams = Variant::streams(s3.streams_threads);
        for variant in [Variant::of(System::ExactlyKafka), Variant::of(System::IdempotentCopy), streams] {
            let latency = self.latency_kafka(&variant, s3_rate).await?;
            section.row(latency_row("S3", &variant, &latency));
        }
        self.report.sections.push(section);
        Ok(())
    }

    async fn latency_db(&mut self, variant: &Variant, rate: f64) -> anyhow::Result<Latency> {
        self.say(&format!("S4: {} at {rate:.0} msg/s", variant.label));
        let input = self.bed.kafka.unique_topic("bench_lat", PARTITIONS).await?;
        let table = self.bed.table().await?;
        measure::add_visibility_trigger(self.bed, &table).await?;
        let spec = self.spec(variant, &input, &unique("bench_g"), &table, "");
        let process = Measured::worker(&spec, &self.run_name(variant), &self.logs)?;
        let latency = measure::latency(
            self.bed,
            process,
            (&input, PARTITIONS),
            Visible::Table(&table),
            rate,
            KB,
            self.profile.latency,
        )
        .await?;
        self.bed.drop_table(&table).await?;
        self.bed.delete_topics(&[&input]).await?;
        Ok(latency)
    }

    async fn latency_kafka(&mut self, variant: &Variant, rate: f64) -> anyhow::Result<Latency> {
        self.say(&format!("S4: {} at {rate:.0} msg/s", variant.label));
        let input = self.bed.kafka.unique_topic("bench_lat", PARTITIONS).await?;
        let output = self.bed.empty_topic(PARTITIONS).await?;
        let group = unique("bench_g");
        let process = self.start(variant, &input, &group, "", &output).await?;
        let latency = measure::latency(
            self.bed,
            process,
            (&input, PARTITIONS),
            Visible::Topic(&output, PARTITIONS),
            rate,
            KB,
            self.profile.latency,
        )
        .await?;
        self.bed.delete_topics(&[&input, &output]).await?;
        Ok(latency)
    }

    /// S5: throughput with 1, 8 and 64 input partitions.
    pub(crate) async fn s5(&mut self) -> anyhow::Result<()> {
        // Each side gets its own scenario's backlog: the Kafka side copies several times
        // faster, and S1's backlog would be over in about a second.
        let database = (
            self.profile.s5_messages,
            1,
            [Variant::of(System::ExactlyDatabase), Variant::of(System::PerPartition(Statement::PerRow))],
        );
        let kafka = (
            self.profile.s3_messages,
            self.profile.repeats,
            [Variant::of(System::ExactlyKafka), Variant::of(System::IdempotentCopy)],
        );
        let mut section = Section::new(
            "S5: input partitions",
            &format!(
                "Messages of 1 KB spread over 1, 8 or 64 partitions: S1's workload ({} messages, one run) and \
                 S3's ({} messages, median of {} runs). \"vs 1 partition\" compares a system with itself; \
                 \"vs baseline\" compares exactly with its hand-written baseline at the same partition count: the \
                 task-per-partition at-least-once consumer (per-row `INSERT`, 8 connections) and the idempotent \
                 copy.",
                database.0, kafka.0, kafka.1
            ),
            &["partitions", "system", "msg/s", "vs 1 partition", "vs baseline", "peak RSS"],
        );
        let mut at_one: Vec<f64> = Vec::new();
        for partitions in [1, 8, 64] {
            let mut rows = Vec::new();
            for (n, repeats, variants) in [&database, &kafka] {
                self.say(&format!("S5: filling a topic of {partitions} partitions with {n} messages"));
                let input = self.bed.filled_topic(partitions, *n, KB).await?;
                let results = self.compare(variants, &input, partitions, KB, *n, *repeats).await?;
                self.bed.delete_topics(&[&input]).await?;
                rows.extend(variants.iter().zip(results));
            }
            let rates: Vec<f64> = rows.iter().map(|(_, runs)| median(runs).rate()).collect();
            if at_one.is_empty() {
                at_one.clone_from(&rates);
            }
            if partitions == PARTITIONS {
                // S1's and S3's workloads measured a second time in the same run: the targets
                // are judged here too, so that one lucky measurement cannot pass them alone.
                self.target(
                    "S1, measured again in S5: exactly / at-least-once, task per partition, per-row (a)",
                    "like for like: per-row `INSERT`, 8 batches in flight",
                    rates[0],
                    rates[1],
                    0.9,
                );
                self.target(
                    "S3 (1 KB), measured again in S5: exactly / idempotent at-least-once copy (a)",
                    "like for like in work and concurrency (one loop copies, commits every 100 ms); exactly once against at-least-once",
                    rates[2],
                    rates[3],
                    0.9,
                );
            }
            for (i, (variant, runs)) in rows.iter().enumerate() {
                let versus_baseline =
                    if i % 2 == 0 { format!("{:.2}", rates[i] / rates[i + 1]) } else { "—".to_owned() };
                section.row(vec![
                    partitions.to_string(),
                    variant.label.clone(),
                    count(rates[i]),
                    format!("{:.2}", rates[i] / at_one[i]),
                    versus_baseline,
                    mib(median(runs).peak_rss_kib),
                ]);
            }
        }
        self.report.sections.push(section);
        Ok(())
    }

    /// S6: recovery after SIGKILL.
    pub(crate) async fn s6(&mut self) -> anyhow::Result<()> {
        let (Some((s1, _)), Some(S3Rates { exactly: s3, .. })) = (self.s1_rates, self.s3_rates) else {
            bail!("S6 sizes its backlog from the rates S1 and S3 measured: run them in the same run");
        };
        // Enough for the steady run, a session timeout and the window after it, at twice the
        // median rate: one S3 run went at 1.6 times the median, and a process that fast used
        // up a backlog sized at the median before the window ended.
        let seconds = self.profile.steady.as_secs_f64() + 17.0;
        // A smoke run's rates come from tiny backlogs and say little: it uses its cap.
        let backlog = if self.profile.dynamic_recovery {
            ((2.0 * s1.max(s3) * seconds) as u64).min(self.profile.recovery_cap)
        } else {
            self.profile.recovery_cap
        };
        self.say(&format!("S6: filling a topic with {backlog} messages of 1 KB"));
        let input = self.bed.filled_topic(PARTITIONS, backlog, KB).await?;
        let mut section = Section::new(
            "S6: recovery after SIGKILL",
            &format!(
                "A process works through a backlog of {backlog} messages of 1 KB in {PARTITIONS} partitions; after \
                 {}s it is killed with SIGKILL and started again at once. \"Resumed\" is the time from the kill \
                 to the restarted process's first durable progress; \"back to 90%\" until a one-second window runs \
                 at 90% of the rate before the kill. With static membership (`group.instance.id`) the restarted \
                 process takes its predecessor's place at once; without it, the broker waits for the dead \
                 member's session ({}s here) to expire before it reassigns the partitions.",
                self.profile.steady.as_secs(),
                SESSION_TIMEOUT_MS / 1000
            ),
            &["system", "membership", "rate before", "resumed", "back to 90%", "peak RSS"],
        );
        let mut cases = vec![(System::ExactlyDatabase, true), (System::ExactlyKafka, true)];
        if self.profile.dynamic_recovery {
            cases.extend([(System::ExactlyDatabase, false), (System::ExactlyKafka, false)]);
        }
        for (system, fixed) in cases {
            let variant = Variant::of(system);
            self.say(&format!("S6: {} ({})", variant.label, if fixed { "static" } else { "dynamic" }));
            let recovery = self.recovery(&variant, &input, fixed, i64::try_from(backlog)?).await?;
            section.row(vec![
                variant.label.clone(),
                if fixed { "static" } else { "dynamic" }.to_owned(),
                format!("{} msg/s", count(recovery.rate_before)),
                format!("{:.1} s", recovery.resumed_s),
                format!("{:.1} s", recovery.back_to_90_s),
                mib(recovery.peak_rss_kib),
            ]);
        }
        self.report.sections.push(section);
        self.bed.delete_topics(&[&input]).await?;
        Ok(())
    }

    async fn recovery(
        &mut self,
        variant: &Variant,
        input: &str,
        fixed: bool,
        backlog: i64,
    ) -> anyhow::Result<Recovery> {
        let group = unique("bench_g");
        let (System::ExactlyDatabase | System::ExactlyKafka) = self.system(variant)? else {
            bail!("recovery is measured for exactly only");
        };
        let (table, output) = match self.system(variant)? {
            System::ExactlyDatabase => (self.bed.table().await?, String::new()),
            _ => (String::new(), self.bed.empty_topic(PARTITIONS).await?),
        };
        let mut spec = self.spec(variant, input, &group, &table, &output);
        if fixed {
            spec.instance = Some("bench-instance".to_owned());
        }
        spec.handler_delay_us = u64::try_from(self.profile.recovery_handler_delay.as_micros())?;
        let progress = self.progress(&spec, PARTITIONS)?;
        let name = self.run_name(variant);
        let logs = self.logs.clone();
        let recovery = measure::recovery(
            |phase| Measured::worker(&spec, &format!("{name}-{phase}"), &logs),
            &progress,
            self.profile.steady,
            (backlog, if self.profile.dynamic_recovery { 12.0 } else { 2.0 }),
        )
        .await?;
        if table.is_empty() {
            self.bed.delete_topics(&[&output]).await?;
        } else {
            self.bed.drop_table(&table).await?;
        }
        Ok(recovery)
    }

    /// Measures each variant `repeats` times, interleaved, on `input`. Each round starts
    /// with the next variant, so that none always runs first: the broker's rate drifts over
    /// a run (its JVM still compiling, its page cache filling), and a fixed order would
    /// give the later systems the warmer broker every time.
    async fn compare(
        &mut self,
        variants: &[Variant],
        input: &str,
        partitions: i32,
        size: usize,
        n: u64,
        repeats: usize,
    ) -> anyhow::Result<Vec<Vec<Throughput>>> {
        let mut results = vec![Vec::new(); variants.len()];
        for round in 0..repeats {
            for index in (0..variants.len()).map(|i| (i + round) % variants.len()) {
                let (variant, runs) = (&variants[index], &mut results[index]);
                let run = self.throughput(variant, input, partitions, size, n).await?;
                self.say(&format!(
                    "  {}, {}: {} msg/s, peak RSS {}",
                    variant.label,
                    variant.settings(),
                    count(run.rate()),
                    mib(run.peak_rss_kib)
                ));
                runs.push(run);
            }
        }
        Ok(results)
    }

    /// One throughput run of `variant` over the `n` messages of `input`, checked afterwards:
    /// every input message is in the table or the output topic once ([`Self::check`]).
    async fn throughput(
        &mut self,
        variant: &Variant,
        input: &str,
        partitions: i32,
        size: usize,
        n: u64,
    ) -> anyhow::Result<Throughput> {
        let target = i64::try_from(n)?;
        let timeout = Duration::from_secs(900);
        let group = unique("bench_g");
        let writes_rows = matches!(variant.subject, Subject::Worker(system) if system.writes_rows());
        let writes_topic = matches!(
            variant.subject,
            Subject::Worker(System::ExactlyKafka | System::IdempotentCopy) | Subject::KafkaStreams
        );
        let table = if writes_rows { self.bed.table().await? } else { String::new() };
        let output = if writes_topic { self.bed.empty_topic(partitions).await? } else { String::new() };
        let result = if let Subject::Worker(System::PostgresOnly(_)) = variant.subject {
            let mut spec = self.spec(variant, input, &group, &table, &output);
            (spec.rows, spec.row_bytes) = (n, size);
            let mut process = Measured::worker(&spec, &self.run_name(variant), &self.logs)?;
            let line = process.line_starting("RESULT").await?;
            let outcome: Outcome = serde_json::from_str(&line).context("a malformed RESULT line")?;
            process.kill().await?;
            Throughput {
                messages: outcome.messages,
                seconds: outcome.seconds,
                peak_rss_kib: outcome.peak_rss_kib,
                cpu_seconds: None,
                broker_cpu_seconds: None,
            }
        } else {
            let process = self.start(variant, input, &group, &table, &output).await?;
            let progress = match variant.subject {
                Subject::Worker(_) => self.progress(&self.spec(variant, input, &group, &table, &output), partitions)?,
                Subject::KafkaStreams => Progress::committed(&self.bed.brokers(), &group, input, partitions)?,
            };
            measure::throughput(process, &progress, target, timeout, &self.bed.broker_cpu).await?
        };
        self.check(variant, (input, partitions), &group, &table, &output, n).await?;
        Ok(result)
    }

    /// Checks a run's output against its input, then drops it: the table holds each input
    /// message once (distinct partition and offset, against the input's offsets), the
    /// output topic holds each input once (distinct input keys, no more records), and no
    /// dead letter was written.
    async fn check(
        &self,
        variant: &Variant,
        (input, partitions): (&str, i32),
        group: &str,
        table: &str,
        output: &str,
        n: u64,
    ) -> anyhow::Result<()> {
        let dead_letters = self.bed.dead_letters(group).await?;
        anyhow::ensure!(dead_letters == 0, "{}: {dead_letters} dead letters", variant.label);
        if !table.is_empty() {
            let expected = if let Subject::Worker(System::PostgresOnly(_)) = variant.subject {
                std::collections::BTreeMap::from([(0, i64::try_from(n)?)])
            } else {
                self.bed.partition_ends(input, partitions).await?
            };
            self.bed.check_rows(table, &expected).await.with_context(|| variant.label.clone())?;
            self.bed.drop_table(table).await?;
        }
        if !output.is_empty() {
            let found = measure::count_committed(&self.bed.brokers(), output, partitions, n).await?;
            if found.records != n || found.distinct != n {
                bail!(
                    "{}: {} committed output records copying {} distinct inputs, for {n} messages",
                    variant.label,
                    found.records,
                    found.distinct
                );
            }
            self.bed.delete_topics(&[output]).await?;
        }
        Ok(())
    }

    /// Starts `variant` (not PostgreSQL alone) as a measured process.
    async fn start(
        &mut self,
        variant: &Variant,
        input: &str,
        group: &str,
        table: &str,
        output: &str,
    ) -> anyhow::Result<Measured> {
        let name = self.run_name(variant);
        match variant.subject {
            Subject::Worker(_) => Measured::worker(&self.spec(variant, input, group, table, output), &name, &self.logs),
            Subject::KafkaStreams => {
                let copy = StreamsCopy {
                    brokers: self.bed.brokers(),
                    input: input.to_owned(),
                    output: output.to_owned(),
                    application_id: group.to_owned(),
                    commit_interval_ms: variant.commit_interval_ms,
                    threads: variant.concurrency,
                };
                copy.start(&name, &self.logs).await
            }
        }
    }

    fn system(&self, variant: &Variant) -> anyhow::Result<System> {
        match variant.subject {
            Subject::Worker(system) => Ok(system),
            Subject::KafkaStreams => bail!("Kafka Streams is not a worker"),
        }
    }

    fn spec(&self, variant: &Variant, input: &str, group: &str, table: &str, output: &str) -> WorkerSpec {
        WorkerSpec {
            system: match variant.subject {
                Subject::Worker(system) => system,
                Subject::KafkaStreams => System::ExactlyKafka,
            },
            brokers: self.bed.brokers(),
            database_url: self.bed.database.url.clone(),
            input: input.to_owned(),
            output: output.to_owned(),
            table: table.to_owned(),
            group: group.to_owned(),
            batch: variant.batch,
            batch_wait_ms: variant.batch_wait_ms,
            commit_interval_ms: variant.commit_interval_ms,
            concurrency: variant.concurrency,
            key_concurrency: variant.key_concurrency,
            instance: None,
            session_timeout_ms: SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: None,
            group_protocol: GroupProtocol::Classic,
            rows: 0,
            row_bytes: 0,
            handler_delay_us: variant.handler_delay_us,
        }
    }

    /// Where the system `spec` runs makes its progress durable (`partitions`: the input's).
    fn progress(&self, spec: &WorkerSpec, partitions: i32) -> anyhow::Result<Progress> {
        match spec.system {
            System::ExactlyDatabase | System::ExactlyBatch(_) | System::ExactlyIoBound => {
                Ok(Progress::Stored { pool: self.bed.pool.clone(), group: spec.group.clone() })
            }
            System::PlainLoop | System::PlainLoopPerPartition => {
                Ok(Progress::Upserted { pool: self.bed.pool.clone(), group: spec.group.clone() })
            }
            _ => Progress::committed(&self.bed.brokers(), &spec.group, &spec.input, partitions),
        }
    }

    fn run_name(&mut self, variant: &Variant) -> String {
        self.runs += 1;
        let slug: String = variant
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        format!("{:03}-{slug}", self.runs)
    }

    /// Adds a target: `measured / baseline` against `goal`; `basis` says whether the two
    /// are like for like, and in what.
    fn target(&mut self, what: &str, basis: &str, measured: f64, baseline: f64, goal: f64) {
        self.report.targets.push(Target {
            what: what.to_owned(),
            basis: basis.to_owned(),
            ratio: measured / baseline,
            goal,
            detail: format!("{} / {} msg/s", count(measured), count(baseline)),
        });
    }
}

/// The run with the median rate (the lower middle for an even count).
fn median(runs: &[Throughput]) -> Throughput {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted[(sorted.len() - 1) / 2]
}

/// "4.2 µs", or "—" when not known.
fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |micros| format!("{micros:.1} µs"))
}

fn throughput_row(variant: &Variant, runs: &[Throughput], size: usize, baseline: f64) -> Vec<String> {
    let middle = median(runs);
    let rate = if runs.len() > 1 {
        let low = runs.iter().map(Throughput::rate).fold(f64::INFINITY, f64::min);
        let high = runs.iter().map(Throughput::rate).fold(0.0, f64::max);
        format!("{} ({}–{})", count(middle.rate()), count(low), count(high))
    } else {
        count(middle.rate())
    };
    let peak = runs.iter().map(|run| run.peak_rss_kib).max().unwrap_or_default();
    vec![
        variant.label.clone(),
        variant.settings(),
        rate,
        format!("{:.1}", middle.rate() * size as f64 / 1e6),
        format!("{:.2}", middle.rate() / baseline),
        mib(peak),
        micros(middle.cpu_micros_per_message()),
        micros(middle.broker_cpu_micros_per_message()),
    ]
}

/// `difference` with its sign, to a tenth: "+0.3", "-0.1", "0.0" (never "-0.0").
fn signed(difference: f64) -> String {
    if difference.abs() < 0.05 { "0.0".to_owned() } else { format!("{difference:+.1}") }
}

/// What S3's CPU figures say about its ratio at `size`: on two cores shared by the
/// process and the broker, the rates should go as the inverse of the CPU both spend per
/// message; and the ratio exactly could reach with its own process as cheap per message as
/// the copy's, the broker's share unchanged. `None` without CPU figures.
fn cpu_account(size: usize, exactly: &Throughput, copy: &Throughput) -> Option<String> {
    let (exactly_own, exactly_broker) = (exactly.cpu_micros_per_message()?, exactly.broker_cpu_micros_per_message()?);
    let (copy_own, copy_broker) = (copy.cpu_micros_per_message()?, copy.broker_cpu_micros_per_message()?);
    let (exactly_total, copy_total) = (exactly_own + exactly_broker, copy_own + copy_broker);
    Some(format!(
        "At {size} B, process and broker together spend {exactly_total:.1} µs of CPU per message for exactly \
         and {copy_total:.1} µs for the copy: on two cores shared by both, that predicts a ratio of {:.2} \
         (measured: {:.2}). Per message, exactly's traffic costs the broker {} µs against the copy's, and \
         exactly's own process {} µs; with its process as cheap per message as the copy's, exactly would \
         reach at most {:.2}.",
        copy_total / exactly_total,
        exactly.rate() / copy.rate(),
        signed(exactly_broker - copy_broker),
        signed(exactly_own - copy_own),
        copy_total / (copy_own + exactly_broker),
    ))
}

fn latency_row(scenario: &str, variant: &Variant, latency: &Latency) -> Vec<String> {
    let percentile = |ms: Option<f64>| ms.map_or_else(|| "never seen".to_owned(), |ms| format!("{ms:.1} ms"));
    let kept_up = match latency.never_seen() {
        0 => "yes".to_owned(),
        missing => format!("no: {} never seen", count(missing as f64)),
    };
    vec![
        scenario.to_owned(),
        variant.label.clone(),
        count(latency.rate),
        percentile(latency.p50_ms),
        percentile(latency.p99_ms),
        latency.sent.to_string(),
        latency.seen.to_string(),
        kept_up,
        mib(latency.peak_rss_kib),
    ]
}

#[cfg(test)]
mod tests {
    use super::signed;

    #[test]
    fn differences_carry_their_sign_and_never_read_minus_zero() {
        assert_eq!(signed(-0.03), "0.0");
        assert_eq!(signed(0.26), "+0.3");
        assert_eq!(signed(-0.14), "-0.1");
    }
}
