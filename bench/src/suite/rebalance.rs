//! S9: rebalance time under both consumer group protocols. A group of exactly instances in
//! Database mode, each its own process, reads a topic that receives a steady flow of input;
//! one instance joins, leaves (SIGTERM) or is killed (SIGKILL), and the bench reads, from
//! exactly's stored positions, how long partitions stalled and when the group worked as a
//! whole again ([`crate::stalls`]). Groups of 1, 2 and 3 instances after the event, under
//! the classic protocol (cooperative-sticky) and the consumer protocol (KIP-848), side by
//! side: no target, figures only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use exactly_integration_tests::unique;

use super::{PARTITIONS, Suite};
use crate::chart::{LineChart, Series};
use crate::group_watch::{GroupWatch, POLL, Until};
use crate::instances::Instances;
use crate::measure;
use crate::report::{Chart, Section};
use crate::stalls::{QUIET, Rebalance, STALL, Stalls};
use crate::variant::{BATCH_WAIT_MS, DEFAULT_BATCH, DEFAULT_CONCURRENCY, Variant};
use crate::worker::{GroupProtocol, System, WorkerSpec};

/// Messages a second sent into the input throughout a run: modest, so that any instance
/// keeps up, and steady, so that every partition always has work and a stall is the
/// rebalance's, not a lack of input.
const RATE: f64 = 2_000.0;

/// Bytes per message: small, so that the flow costs the shared cores little.
const MESSAGE_BYTES: usize = 100;

/// The session timeout both protocols get: the test bed's broker gives consumer-protocol
/// groups 6 s (`group.consumer.session.timeout.ms`), so classic members set as much, and a
/// kill costs the same wait under both.
const SESSION_TIMEOUT_MS: u32 = 6_000;

/// The heartbeat interval both protocols get, as the session timeout: the broker's for the
/// consumer protocol (`group.consumer.heartbeat.interval.ms`), set by classic members.
const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

/// How long an instance may take to end after SIGTERM before it is killed (and the run fails).
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The input flow's end at the latest, should a run never stop it (each wait of a run gives
/// up after a minute, so none lasts this long).
const FLOW_LIMIT: Duration = Duration::from_secs(300);

/// Two figures closer than this, or than [`EVEN_SHARE`] of the larger, are taken as even:
/// the reads are 50 ms apart.
const EVEN_SECONDS: f64 = 0.1;

/// See [`EVEN_SECONDS`].
const EVEN_SHARE: f64 = 0.1;

/// The membership changes measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// One more instance starts.
    Join,
    /// The instance started first is stopped with SIGTERM: it commits or rolls back what is
    /// in flight, revokes its partitions and leaves the group.
    Leave,
    /// The instance started first is killed with SIGKILL: its partitions come back when its
    /// session expires.
    Kill,
}

impl Event {
    const ALL: [Self; 3] = [Self::Join, Self::Leave, Self::Kill];

    /// Its name in log file names and progress lines.
    fn name(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Kill => "kill",
        }
    }

    /// Its row label in the table.
    fn label(self) -> &'static str {
        match self {
            Self::Join => "join (k − 1 → k)",
            Self::Leave => "leave, SIGTERM (k + 1 → k)",
            Self::Kill => "kill, SIGKILL (k + 1 → k)",
        }
    }

    /// Instances running before the event, for a group of `size` after it.
    fn instances_before(self, size: usize) -> usize {
        match self {
            Self::Join => size.saturating_sub(1),
            Self::Leave | Self::Kill => size + 1,
        }
    }

    /// Its line's colour in the charts (the protocol sets the dash).
    fn colour(self) -> &'static str {
        match self {
            Self::Join => "#1f77b4",
            Self::Leave => "#2ca02c",
            Self::Kill => "#d62728",
        }
    }
}

/// The runs of one event at one group size under one protocol.
#[derive(Debug)]
struct Cell {
    event: Event,
    /// Instances in the group after the event.
    size: usize,
    protocol: GroupProtocol,
    /// One per round, in the order measured.
    runs: Vec<Rebalance>,
}

/// Every cell S9 measured.
#[derive(Debug)]
struct Cells(Vec<Cell>);

impl Cells {
    /// Every event at every size under both protocols, none measured yet.
    fn new(sizes: &[usize]) -> Self {
        let cells = Event::ALL
            .iter()
            .flat_map(|&event| {
                sizes.iter().flat_map(move |&size| {
                    GroupProtocol::BOTH.map(|protocol| Cell { event, size, protocol, runs: Vec::new() })
                })
            })
            .collect();
        Self(cells)
    }

    /// Adds a run of `event` at `size` under `protocol`.
    fn record(&mut self, event: Event, size: usize, protocol: GroupProtocol, run: Rebalance) -> anyhow::Result<()> {
        let cell = self
            .0
            .iter_mut()
            .find(|cell| cell.event == event && cell.size == size && cell.protocol == protocol)
            .with_context(|| format!("S9: {} at {size} under {} was not planned", event.name(), protocol.label()))?;
        cell.runs.push(run);
        Ok(())
    }

    /// The runs of `event` at `size` under `protocol`.
    fn runs(&self, event: Event, size: usize, protocol: GroupProtocol) -> anyhow::Result<&[Rebalance]> {
        self.0
            .iter()
            .find(|cell| cell.event == event && cell.size == size && cell.protocol == protocol)
            .map(|cell| cell.runs.as_slice())
            .filter(|runs| !runs.is_empty())
            .with_context(|| format!("S9: {} at {size} under {} was not measured", event.name(), protocol.label()))
    }

    /// The median of `figure` over the runs of `event` at `size` under `protocol`.
    fn median(
        &self,
        event: Event,
        size: usize,
        protocol: GroupProtocol,
        figure: fn(&Rebalance) -> f64,
    ) -> anyhow::Result<f64> {
        Ok(median_of(&self.runs(event, size, protocol)?.iter().map(figure).collect::<Vec<_>>()))
    }
}

impl Suite<'_> {
    /// S9: every event at every group size under both protocols, `s9_repeats` rounds, the
    /// protocols taking turns to run first; then the table, what it shows, and the charts.
    pub(crate) async fn s9(&mut self) -> anyhow::Result<()> {
        let (sizes, repeats) = (self.profile.s9_group_sizes, self.profile.s9_repeats);
        let mut cells = Cells::new(sizes);
        for round in 0..repeats {
            let pairs = Event::ALL.iter().flat_map(|&event| sizes.iter().map(move |&size| (event, size)));
            for (index, (event, size)) in pairs.enumerate() {
                let mut order = GroupProtocol::BOTH;
                order.rotate_left((round + index) % GroupProtocol::BOTH.len());
                for protocol in order {
                    let what = format!("{}, {}, k = {size}", protocol.label(), event.name());
                    self.say(&format!("S9 (round {} of {repeats}): {what}", round + 1));
                    let figures = self.s9_run(protocol, event, size).await.with_context(|| format!("S9, {what}"))?;
                    self.say(&format!(
                        "  longest stall {:.2} s, settled after {:.2} s, {} partitions stalled",
                        figures.longest_stall.as_secs_f64(),
                        figures.settled_after.as_secs_f64(),
                        figures.partitions_stalled
                    ));
                    cells.record(event, size, protocol, figures)?;
                }
            }
        }
        self.s9_section(&cells, sizes, repeats)
    }

    /// One run: a fresh topic, table and group; the input flowing while the group forms,
    /// the event happens and the group settles; then the input stopped, the group caught up
    /// and stopped, and the table checked against the input.
    async fn s9_run(&mut self, protocol: GroupProtocol, event: Event, size: usize) -> anyhow::Result<Rebalance> {
        let bed = self.bed;
        let input = bed.kafka.unique_topic("bench_s9", PARTITIONS).await?;
        let table = bed.table().await?;
        let group = unique("bench_g");
        let names = self.s9_names(protocol, event, size);
        let mut instances = Instances::new(self.s9_spec(protocol, &input, &group, &table), self.logs.clone());
        let watch = GroupWatch::new(&bed.kafka, &bed.pool, &group, &input);
        let flowing = AtomicBool::new(true);
        let flow = measure::send_while(bed, (&input, PARTITIONS), RATE, MESSAGE_BYTES, |elapsed| {
            elapsed < FLOW_LIMIT && flowing.load(Ordering::Relaxed)
        });
        let measured = async {
            let figures = measure_event(&watch, &mut instances, event, size, names).await;
            flowing.store(false, Ordering::Relaxed);
            figures
        };
        let (sent, figures) = tokio::join!(flow, measured);
        let figures = figures?;
        let sent = sent.context("the input flow failed")?;
        let ends = bed.partition_ends(&input, PARTITIONS).await?;
        let in_topic: i64 = ends.values().sum();
        anyhow::ensure!(u64::try_from(in_topic)? == sent, "{sent} messages sent, {in_topic} in the input topic");
        watch.caught_up(&ends, || instances.check_running()).await?;
        instances.stop(STOP_GRACE).await?;
        let dead_letters = bed.dead_letters(&group).await?;
        anyhow::ensure!(dead_letters == 0, "{dead_letters} dead letters");
        bed.check_rows(&table, &ends).await?;
        bed.drop_table(&table).await?;
        bed.delete_topics(&[&input]).await?;
        Ok(figures)
    }

    /// The instances' spec: exactly's Database mode as S1 runs it, in `protocol`'s group,
    /// with S9's session timeout and heartbeat (the classic members' own settings; the
    /// worker leaves both to the broker under the consumer protocol).
    fn s9_spec(&self, protocol: GroupProtocol, input: &str, group: &str, table: &str) -> WorkerSpec {
        WorkerSpec {
            group_protocol: protocol,
            session_timeout_ms: SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: Some(HEARTBEAT_INTERVAL_MS),
            ..self.spec(&Variant::of(System::ExactlyDatabase), input, group, table, "")
        }
    }

    /// The log names of a run's instances, in the order they start.
    fn s9_names(&mut self, protocol: GroupProtocol, event: Event, size: usize) -> Vec<String> {
        let count = event.instances_before(size) + usize::from(event == Event::Join);
        (1..=count)
            .map(|instance| {
                self.runs += 1;
                format!("{:03}-s9-{}-{}-{size}-instance-{instance}", self.runs, protocol.label(), event.name())
            })
            .collect()
    }

    /// The section: a row per event and group size, both protocols side by side; what the
    /// figures show; the charts.
    fn s9_section(&mut self, cells: &Cells, sizes: &[usize], repeats: usize) -> anyhow::Result<()> {
        let mut section = Section::new(
            "S9: rebalance time, classic and consumer group protocols",
            &section_text(repeats),
            &[
                "event",
                "instances after (k)",
                "longest stall, classic",
                "longest stall, consumer",
                "settled after, classic",
                "settled after, consumer",
                "partitions stalled, classic",
                "partitions stalled, consumer",
            ],
        );
        for event in Event::ALL {
            for &size in sizes {
                let [classic, consumer] = GroupProtocol::BOTH.map(|protocol| cells.runs(event, size, protocol));
                let (classic, consumer) = (classic?, consumer?);
                let time = |runs: &[Rebalance], figure: fn(&Rebalance) -> f64| {
                    figure_cell(&runs.iter().map(figure).collect::<Vec<_>>(), seconds, " s")
                };
                let stalled = |runs: &[Rebalance]| {
                    figure_cell(&runs.iter().map(partitions_stalled).collect::<Vec<_>>(), partitions, "")
                };
                section.row(vec![
                    event.label().to_owned(),
                    size.to_string(),
                    time(classic, longest_stall),
                    time(consumer, longest_stall),
                    time(classic, settled_after),
                    time(consumer, settled_after),
                    stalled(classic),
                    stalled(consumer),
                ]);
            }
        }
        section.note(findings(cells, sizes)?);
        for (figure, file, name) in [
            (settled_after as fn(&Rebalance) -> f64, "s9-rebalance-settled-after.svg", "settled after"),
            (longest_stall, "s9-rebalance-longest-stall.svg", "longest stall"),
        ] {
            section.chart(chart(cells, sizes, figure, file, name)?);
        }
        self.report.sections.push(section);
        Ok(())
    }
}

/// Starts the instances before the event and waits until the group is steady (none for a
/// join into an empty group), makes the event happen and waits until the group has settled;
/// returns the figures. `names`: the instances' log names, in the order they start.
async fn measure_event(
    watch: &GroupWatch<'_>,
    instances: &mut Instances,
    event: Event,
    size: usize,
    names: Vec<String>,
) -> anyhow::Result<Rebalance> {
    let mut names = names.into_iter();
    let mut stalls = Stalls::new(usize::try_from(PARTITIONS)?);
    let before = event.instances_before(size);
    for name in names.by_ref().take(before) {
        instances.start(&name)?;
    }
    if before > 0 {
        watch
            .until(&mut stalls, Until::Steady, before, || instances.check_running())
            .await
            .context("before the event")?;
    }
    // The clock starts before the spawn or the signal: their own cost is the event's.
    let leaving = match event {
        Event::Join => {
            let name = names.next().context("no name for the joining instance")?;
            stalls.mark_event(watch.now());
            instances.start(&name)?;
            None
        }
        Event::Leave => {
            let leaving = instances.take_oldest()?;
            stalls.mark_event(watch.now());
            leaving.terminate().await?;
            Some(leaving)
        }
        Event::Kill => {
            let killed = instances.take_oldest()?;
            stalls.mark_event(watch.now());
            killed.kill().await?;
            None
        }
    };
    watch.until(&mut stalls, Until::Settled, size, || instances.check_running()).await.context("after the event")?;
    if let Some(leaving) = leaving {
        leaving.stopped(STOP_GRACE).await.context("the instance stopped with SIGTERM")?;
    }
    stalls.figures().context("the group settled, yet its figures are incomplete")
}

/// A run's longest stall, in seconds.
fn longest_stall(run: &Rebalance) -> f64 {
    run.longest_stall.as_secs_f64()
}

/// A run's time to settle, in seconds.
fn settled_after(run: &Rebalance) -> f64 {
    run.settled_after.as_secs_f64()
}

/// A run's stalled partitions.
fn partitions_stalled(run: &Rebalance) -> f64 {
    run.partitions_stalled as f64
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// Seconds to two decimals (the reads are 50 ms apart).
fn seconds(value: f64) -> String {
    format!("{value:.2}")
}

/// A count as a whole number, or to a tenth for a median half-way between two.
fn partitions(value: f64) -> String {
    if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.1}") }
}

/// The median of `values`, written by `write` and followed by `unit`, and their range in
/// brackets when there are several.
fn figure_cell(values: &[f64], write: fn(f64) -> String, unit: &str) -> String {
    let median = format!("{}{unit}", write(median_of(values)));
    if values.len() < 2 {
        return median;
    }
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{median} ({}–{})", write(low), write(high))
}

/// "with 1 instance", "with 2 and 3 instances", "with 1, 2 and 3 instances".
fn with_sizes(sizes: &[usize]) -> String {
    let names: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let listed = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let plural = if sizes == [1] { "instance" } else { "instances" };
    format!("with {listed} {plural}")
}

/// Which protocol came out lower at each group size, from `points` (size, classic,
/// consumer; in seconds): "under the consumer protocol with 2 and 3 instances, under
/// classic with 1 instance". Differences within [`EVEN_SECONDS`] or [`EVEN_SHARE`] count as
/// neither.
fn lower_under(points: &[(usize, f64, f64)]) -> String {
    let (mut consumer, mut classic, mut even) = (Vec::new(), Vec::new(), Vec::new());
    for &(size, classic_s, consumer_s) in points {
        let margin = EVEN_SECONDS.max(EVEN_SHARE * classic_s.max(consumer_s));
        if classic_s - consumer_s > margin {
            consumer.push(size);
        } else if consumer_s - classic_s > margin {
            classic.push(size);
        } else {
            even.push(size);
        }
    }
    let mut parts = Vec::new();
    if !consumer.is_empty() {
        parts.push(format!("under the consumer protocol {}", with_sizes(&consumer)));
    }
    if !classic.is_empty() {
        parts.push(format!("under classic {}", with_sizes(&classic)));
    }
    if !even.is_empty() {
        parts.push(format!("under neither by more than {EVEN_SECONDS} s or a tenth {}", with_sizes(&even)));
    }
    parts.join(", ")
}

/// What the medians show, event by event, computed from them: under which protocol the
/// group settled sooner and stalled less long, at which sizes.
fn findings(cells: &Cells, sizes: &[usize]) -> anyhow::Result<String> {
    let mut sentences = Vec::new();
    for event in Event::ALL {
        let points = |figure: fn(&Rebalance) -> f64| -> anyhow::Result<Vec<(usize, f64, f64)>> {
            sizes
                .iter()
                .map(|&size| {
                    let classic = cells.median(event, size, GroupProtocol::Classic, figure)?;
                    let consumer = cells.median(event, size, GroupProtocol::Consumer, figure)?;
                    Ok((size, classic, consumer))
                })
                .collect()
        };
        sentences.push(format!(
            "After a {}, the group settled sooner {}; its longest stall was shorter {}.",
            event.name(),
            lower_under(&points(settled_after)?),
            lower_under(&points(longest_stall)?)
        ));
    }
    Ok(format!("What the medians show (computed from the table): {}", sentences.join(" ")))
}

/// A chart of `figure` (in seconds, drawn in milliseconds) against the group size: a line
/// per event and protocol, the event's colour, classic dashed.
fn chart(
    cells: &Cells,
    sizes: &[usize],
    figure: fn(&Rebalance) -> f64,
    file: &str,
    name: &str,
) -> anyhow::Result<Chart> {
    let mut series = Vec::new();
    for event in Event::ALL {
        for protocol in GroupProtocol::BOTH {
            let values = sizes
                .iter()
                .map(|&size| Ok(1_000.0 * cells.median(event, size, protocol, figure)?))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            series.push(Series {
                name: format!("{}, {}", event.name(), protocol.label()),
                values,
                colour: event.colour(),
                dashed: protocol == GroupProtocol::Classic,
            });
        }
    }
    let chart = LineChart {
        title: format!("S9: {name} against the group size, both group protocols"),
        x_name: "instances in the group after the event (log scale)".to_owned(),
        y_name: format!("{name}, milliseconds (median)"),
        xs: sizes.iter().map(|&size| size as f64).collect(),
        series,
    };
    Ok(Chart {
        file: file.to_owned(),
        caption: format!(
            "S9: {name} against the group size; a colour per event, solid: the consumer protocol, dashed: classic"
        ),
        svg: chart.to_svg(),
    })
}

/// What S9 measures, above its table.
fn section_text(repeats: usize) -> String {
    let (stall_ms, quiet_s, poll_ms) = (STALL.as_millis(), QUIET.as_secs_f64(), POLL.as_millis());
    let (session_s, heartbeat_s) = (SESSION_TIMEOUT_MS / 1_000, HEARTBEAT_INTERVAL_MS / 1_000);
    let median = if repeats > 1 {
        format!("Median of {repeats} runs per cell (range in brackets)")
    } else {
        "One run per cell".to_owned()
    };
    format!(
        "A group of exactly instances in Database mode (S1's per-message handler, one `INSERT` per message; \
         batches of ≤ {DEFAULT_BATCH} messages / {BATCH_WAIT_MS} ms, {DEFAULT_CONCURRENCY} in flight), each its \
         own process with the same group id, reads a topic of {PARTITIONS} partitions into which the bench sends \
         {RATE} messages of {MESSAGE_BYTES} B a second, spread evenly, from the start of a run to its end, so \
         that every partition always has work. k is the number of instances in the group after the event. \
         **Join**: k − 1 instances run, then one more starts (k = 1 is a group's first member: its figures \
         include creating the group, and no partition changes hands). **Leave**: k + 1 run, then the one \
         started first gets SIGTERM and stops gracefully (it commits or rolls back what is in flight, revokes \
         its partitions and leaves the group). **Kill**: k + 1 run, then the one started first gets SIGKILL; \
         its partitions come back only when its session has expired, under either protocol. Before the event \
         the group must be steady: its coordinator reports it `Stable` with all its instances, every partition \
         has been advanced by its current owner, none has gone {stall_ms} ms without advancing, and none was \
         claimed in the last {quiet_s} s. The positions are read once more after the coordinator's answer, so \
         that the time spent asking it is not taken for a stall. The clock starts just after that read, before \
         the joining process is spawned or the signal is sent.\n\n\
         Both protocols get the same timings: a {session_s} s session timeout and a {heartbeat_s} s heartbeat. \
         Under the consumer protocol (KIP-848) they are the broker's (`group.consumer.session.timeout.ms` and \
         `group.consumer.heartbeat.interval.ms` of the test bed's broker), and the broker assigns the \
         partitions (its default assignor, `uniform`), always incrementally: only the partitions that change \
         owner stop. Under the classic protocol each member sets `session.timeout.ms={SESSION_TIMEOUT_MS}` and \
         `heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}`, and exactly assigns with `cooperative-sticky`: \
         incremental too, not the eager stop-the-world rebalance, but a join takes two rounds of JoinGroup and \
         SyncGroup (the partitions that move are revoked in the first and assigned in the second).\n\n\
         Every {poll_ms} ms the bench reads exactly's stored positions (`exactly.offsets`: per partition its \
         next offset, and its claim epoch, which exactly raises whenever an instance is assigned the \
         partition). A partition advances when its next offset rises between two reads; at this rate one whose \
         owner is working advances every 50 to 150 ms. **Longest stall**: the longest time, over all \
         partitions, between two consecutive advances of one partition, among the gaps that end after the \
         event (a gap that spans the event counts from the partition's last advance before it; a partition \
         never advanced before counts from the event). **Settled after**: from the event until every partition \
         claimed after the event has been advanced by its new owner (an advance seen in a read after the one \
         that showed the claim) and every partition that stalled has advanced again. **Partitions stalled**: \
         how many of the {PARTITIONS} went more than {stall_ms} ms without advancing, by gaps ending after the \
         event. Times are to the read, {poll_ms} ms. The watch ends when the coordinator reports the group \
         `Stable` with k instances, a partition has been claimed since the event and none for {quiet_s} s, \
         and every partition has advanced twice since the event, by its owner since its last claim, and none \
         for {stall_ms} ms; a run fails when that takes over a minute. Then the input stops, the group works \
         through what is left, the instances are stopped with SIGTERM, and the table must hold every input \
         message once (distinct partition and offset against the input's offsets) with no dead letter: a run \
         that lost or doubled a message fails. {median}, the protocols taking turns to run first; every run has \
         a topic, table and group of its own. No target is set: the figures are side by side."
    )
}

#[cfg(test)]
mod tests {
    use super::{figure_cell, lower_under, median_of, partitions, seconds, with_sizes};

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert!((median_of(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median_of(&[4.0, 1.0]) - 2.5).abs() < 1e-9);
        assert_eq!(figure_cell(&[1.0, 2.0, 4.0], seconds, " s"), "2.00 s (1.00–4.00)");
        assert_eq!(figure_cell(&[3.0, 2.0], partitions, ""), "2.5 (2–3)");
        assert_eq!(figure_cell(&[2.0], partitions, ""), "2");
    }

    #[test]
    fn the_findings_say_which_protocol_came_out_lower_and_where() {
        assert_eq!(with_sizes(&[1]), "with 1 instance");
        assert_eq!(with_sizes(&[1, 2, 3]), "with 1, 2 and 3 instances");
        let points = [(1, 2.0, 1.0), (2, 1.0, 2.0), (3, 6.5, 6.52)];
        assert_eq!(
            lower_under(&points),
            "under the consumer protocol with 1 instance, under classic with 2 instances, under neither by more \
             than 0.1 s or a tenth with 3 instances"
        );
    }
}
