//! `exactly-bench`: measures exactly against hand-written rdkafka baselines and Kafka
//! Streams, every system in the same run on the same broker and database, and writes the
//! figures and ratios as a markdown table.
//!
//! `scripts/bench` runs the full set and writes `docs/benchmarks.md` (and its charts, in
//! `docs/benchmarks/`); the test suite runs the smoke profile (`bench/tests/smoke.rs`) so
//! that the benchmark keeps working.

mod bed;
mod chart;
mod group_watch;
mod instances;
mod keys;
mod measure;
mod process;
mod profile;
mod progress;
mod report;
mod stalls;
mod streams;
mod suite;
mod variant;
mod worker;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::profile::Profile;
use crate::suite::Suite;

/// Benchmarks of exactly against its baselines.
#[derive(Debug, Parser)]
#[command(name = "exactly-bench", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts Kafka and PostgreSQL in containers, runs the scenarios and writes the report.
    Run {
        /// How big a run: `full` (the measured one) or `smoke` (seconds; checks it works).
        #[arg(long, value_enum, default_value = "full")]
        profile: ProfileName,
        /// Where the markdown report goes; its charts go to a directory beside it named
        /// after it (`docs/benchmarks/`).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Only these scenarios (S4 and S6 need S1 and S3; S7 is batch handlers; S8 is key-level
        /// concurrency inside a partition; S9 is rebalance time under both group protocols).
        #[arg(long, value_delimiter = ',', default_values = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"])]
        only: Vec<Scenario>,
        /// Multiplies every message count (for a quick look; the report says so).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// How often each S1–S3 measurement, each system of S7's comparison, each run S8's
        /// targets judge, and each S9 event, runs (default: the profile's).
        #[arg(long)]
        repeats: Option<usize>,
        /// Where the processes' logs go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("exactly-bench-logs"))]
        logs: PathBuf,
    },
    /// Runs one measured process (started by `run`).
    #[command(hide = true)]
    Worker {
        /// The worker's spec, as JSON.
        spec: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileName {
    Full,
    Smoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    S8,
    S9,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let outcome = match Args::parse().command {
        Command::Worker { spec } => match serde_json::from_str(&spec) {
            Ok(spec) if std::env::var_os("RUST_LOG").is_some() => {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .with_writer(std::io::stderr)
                    .init();
                worker::run(spec).await
            }
            Ok(spec) => worker::run(spec).await,
            Err(e) => Err(anyhow::anyhow!("a malformed worker spec: {e}")),
        },
        Command::Run { profile, out, only, logs, scale, repeats } => {
            run(profile, &out, &only, logs, scale, repeats).await
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exactly-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    profile: ProfileName,
    out: &std::path::Path,
    only: &[Scenario],
    logs: PathBuf,
    scale: f64,
    repeats: Option<usize>,
) -> anyhow::Result<()> {
    let mut profile = match profile {
        ProfileName::Full => Profile::full(),
        ProfileName::Smoke => Profile::smoke(),
    };
    if scale != 1.0 {
        profile = profile.scaled(scale);
    }
    if let Some(repeats) = repeats {
        profile = profile.repeated(repeats);
    }
    let started = std::time::Instant::now();
    bed::check_free_disk(profile.disk_needed(only.contains(&Scenario::S6))).await?;
    eprintln!("exactly-bench: starting Kafka and PostgreSQL (profile {}; logs in {})", profile.name, logs.display());
    let bed = bed::Bed::start().await?;
    let context = context(&bed, &profile).await;
    let mut suite = Suite::new(&bed, profile, logs);
    suite.report.context = context;
    suite.warm_up().await.context("warming up")?;
    // A scenario that fails is reported in its place; the others' figures are kept.
    let mut failed = Vec::new();
    for scenario in only {
        let outcome = match scenario {
            Scenario::S1 => suite.s1().await,
            Scenario::S2 => suite.s2().await,
            Scenario::S3 => suite.s3().await,
            Scenario::S4 => suite.s4().await,
            Scenario::S5 => suite.s5().await,
            Scenario::S6 => suite.s6().await,
            Scenario::S7 => suite.s7().await,
            Scenario::S8 => suite.s8().await,
            Scenario::S9 => suite.s9().await,
        };
        if let Err(error) = outcome {
            let name = format!("{scenario:?}");
            eprintln!("exactly-bench: {name} failed: {error:#}");
            suite.report.failed(&name, &format!("{error:#}"));
            failed.push(name);
        }
    }
    suite.report.context.push(("took".into(), format!("{:.0} s", started.elapsed().as_secs_f64())));
    write_report(&suite.report, out)?;
    anyhow::ensure!(failed.is_empty(), "{} failed (the report says why)", failed.join(", "));
    Ok(())
}

/// Writes the report to `out`, and its charts beside it, into a directory named after it
/// (`docs/benchmarks.md` links `benchmarks/s7-batch-size.svg`, in `docs/benchmarks/`,
/// S8's `benchmarks/s8-key-concurrency-*.svg` and S9's `benchmarks/s9-rebalance-*.svg`).
fn write_report(report: &report::Report, out: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let charts_name = out.file_stem().map_or_else(|| "charts".to_owned(), |stem| stem.to_string_lossy().into_owned());
    let charts_dir = out.with_file_name(&charts_name);
    for chart in report.charts() {
        std::fs::create_dir_all(&charts_dir)?;
        let path = charts_dir.join(&chart.file);
        std::fs::write(&path, &chart.svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("exactly-bench: wrote {}", path.display());
    }
    std::fs::write(out, report.to_markdown(&charts_name)).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("exactly-bench: wrote {}", out.display());
    Ok(())
}

/// How clients reach the containers' published ports on 127.0.0.1. A `docker-proxy`
/// process per port (Docker's userland proxy, on by default) copies every byte in user
/// space, on the cores the bench measures, and its CPU counts against neither side. The
/// committed figures were measured with the engine started as `dockerd
/// --userland-proxy=false` (docs/src/performance.md, fix 7).
fn network() -> String {
    let proxied =
        std::process::Command::new("pgrep").args(["-x", "docker-proxy"]).output().is_ok_and(|o| o.status.success());
    if proxied {
        eprintln!(
            "exactly-bench: warning: docker-proxy relays the containers' ports; its CPU is not counted and it \
             shares the measured cores (the committed figures were measured with dockerd --userland-proxy=false)"
        );
        "through Docker's userland proxy (docker-proxy): its CPU, counted against neither side, shares the cores".into()
    } else {
        "published ports on 127.0.0.1, forwarded by the kernel (dockerd --userland-proxy=false)".into()
    }
}

/// The commit measured: the full hash of the checkout's `HEAD`, and whether the working
/// tree had changes (the figures are then of those changes, not of the commit alone).
fn commit() -> String {
    let checkout = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(checkout)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "HEAD"]) else { return "commit unknown (not a git checkout)".into() };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => format!("commit {head}, clean"),
        Some(changes) => format!("commit {head}, dirty: {} changed files not committed", changes.lines().count()),
        None => format!("commit {head}, clean or dirty unknown"),
    }
}

/// Date, versions, machine and settings, for the report's head.
/// The options the run was given after `run` (`--only`, `--out`, ...), as typed, so a
/// report of some scenarios says so.
fn options() -> String {
    std::env::args().skip(2).map(|option| format!(" {option}")).collect()
}

async fn context(bed: &bed::Bed, profile: &Profile) -> Vec<(String, String)> {
    let command_line = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let postgres: String =
        sqlx::query_scalar("SHOW server_version").fetch_one(&bed.pool).await.unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let commit = commit();
    vec![
        ("date".into(), command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("command".into(), format!("`scripts/bench{}` (profile {}{})", options(), profile.name, profile.note())),
        ("build".into(), if cfg!(debug_assertions) { "debug".into() } else { "release".into() }),
        ("exactly".into(), commit),
        (
            "versions".into(),
            format!(
                "Apache Kafka 4.1.1 (one KRaft broker in a container), PostgreSQL {postgres} (container), \
                 librdkafka {}, {}, Kafka Streams 4.1.1 on {}",
                rdkafka::util::get_rdkafka_version().1,
                command_line("rustc", &["-V"]),
                streams::java_version().await
            ),
        ),
        ("machine".into(), format!("{cores} cores ({cpu}), {memory}; broker, database and processes share it")),
        ("network".into(), network()),
        (
            "settings".into(),
            format!(
                "PostgreSQL's defaults but max_wal_size {MAX_WAL} GB (for bulk ingestion, as its users set it); client \
                 defaults except: exactly's safe defaults (acks=all, idempotence, read_committed), baselines \
             acks=all + idempotence where they produce; every librdkafka consumer with fetch.queue.backoff.ms=20 \
             (exactly's default; librdkafka's 1000 ms starves a fast consumer); batches ≤ 500 messages / 50 ms; \
             commit interval 100 ms; session timeout 10 s (S9: 6 s with a 1 s heartbeat, under both group \
             protocols); exactly's Kafka-mode copy declines the headers \
             (Subscription::without_headers; neither copy reads them); the task-per-partition baselines and \
             exactly up to 8 batches in flight on 8 connections; Kafka Streams with -Xmx1g, producer batch.size \
             128 KB and linger.ms 10, one and two stream threads",
                MAX_WAL = bed::MAX_WAL_GIB
            ),
        ),
    ]
}
