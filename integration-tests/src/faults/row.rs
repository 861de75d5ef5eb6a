//! One row of the fault table, printed by every fault test and collected by `scripts/faults`.

use std::io::Write as _;
use std::time::Duration;

/// One row of the fault table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The fault injected.
    pub fault: String,
    /// The mode under test (Database, Kafka, outbox).
    pub mode: &'static str,
    /// How many times the fault was injected (a failpoint that never fired does not count).
    pub iterations: usize,
    /// Input messages.
    pub messages: usize,
    /// Extra applications: effects beyond the first of their input, and effects of no input.
    pub duplicates: usize,
    /// Messages never applied.
    pub missing: usize,
    /// Time from each fault's end (restart, resume) until processing moved again.
    pub recovery: Vec<Duration>,
}

/// The header of the fault table, in markdown.
pub const TABLE_HEADER: &str = "| fault | mode | iterations | messages | duplicates | missing | recovery p50 | recovery p99 |\n\
                                | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |";

impl Row {
    /// The row in markdown.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.fault,
            self.mode,
            self.iterations,
            self.messages,
            self.duplicates,
            self.missing,
            show(percentile(&self.recovery, 50)),
            show(percentile(&self.recovery, 99)),
        )
    }

    /// Prints the row (with the header) to stderr, bypassing the test harness's capture,
    /// and appends it to `EXACTLY_FAULT_REPORT` if set.
    pub fn report(&self) {
        let line = self.markdown();
        let _ = writeln!(std::io::stderr().lock(), "\n{TABLE_HEADER}\n{line}\n");
        if let Ok(path) = std::env::var("EXACTLY_FAULT_REPORT")
            && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The `p`-th percentile (nearest rank).
pub fn percentile(samples: &[Duration], p: usize) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
