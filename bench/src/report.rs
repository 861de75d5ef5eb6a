//! The markdown report: the run's context, the targets met or missed, then one table
//! per scenario, with the charts a scenario draws linked below its table.

use std::fmt::Write as _;

/// A target the issue set, and how this run measured against it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) what: String,
    /// Whether the two systems compared are like for like (same concurrency, same
    /// statement shape), and if not, how they differ.
    pub(crate) basis: String,
    pub(crate) ratio: f64,
    pub(crate) goal: f64,
    /// What the ratio is of (e.g. "12 345 / 13 000 msg/s").
    pub(crate) detail: String,
}

/// One scenario's table.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) text: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    /// Paragraphs after the table: what its figures add up to.
    pub(crate) notes: Vec<String>,
    /// Charts of the table's figures, linked after it.
    pub(crate) charts: Vec<Chart>,
}

/// A chart drawn by the bench as an SVG file, written next to the report (in a directory
/// named after it) and linked from its section, so that the committed report and its
/// pictures come from the same run.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// Its file name, e.g. `s7-batch-size.svg`.
    pub(crate) file: String,
    /// What it shows: the link's text.
    pub(crate) caption: String,
    /// The picture itself.
    pub(crate) svg: String,
}

impl Section {
    pub(crate) fn new(title: &str, text: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            text: text.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
            charts: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a paragraph after the table.
    pub(crate) fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Adds a chart, linked after the table.
    pub(crate) fn chart(&mut self, chart: Chart) {
        self.charts.push(chart);
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// (what, value) lines: date, versions, settings.
    pub(crate) context: Vec<(String, String)>,
    pub(crate) targets: Vec<Target>,
    pub(crate) sections: Vec<Section>,
}

impl Report {
    /// Puts a failed scenario in the report, where its figures would be.
    pub(crate) fn failed(&mut self, scenario: &str, error: &str) {
        let mut section = Section::new(&format!("{scenario}: failed"), "This scenario did not finish.", &["error"]);
        section.row(vec![error.replace('\n', " ")]);
        self.sections.push(section);
    }

    /// Every chart of every section, for the caller to write into `charts_dir` (see
    /// [`Self::to_markdown`]).
    pub(crate) fn charts(&self) -> impl Iterator<Item = &Chart> {
        self.sections.iter().flat_map(|section| &section.charts)
    }

    /// The report; each chart is linked as `charts_dir/<file>`, relative to the report.
    pub(crate) fn to_markdown(&self, charts_dir: &str) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str(
            "<!-- Written by `scripts/bench` (exactly-bench); do not edit by hand. What the figures mean, \
             and why a target is missed, is in docs/src/performance.md. -->\n\n",
        );
        out.push_str(
            "Every figure comes from one run, on one broker and one database shared by every system, and \
             every ratio compares systems measured in that same run. Throughput counts messages made \
             durable (committed rows and positions, or committed offsets) from the first progress seen to \
             the last, so start-up and group joining are not counted. Peak RSS is the process's `VmHWM`. \
             After each run the output is compared with the input (distinct rows or records, and no dead \
             letter) and a run that differs fails. The targets table says, for each, whether the two sides \
             are like for like; a target missed is printed as missed.\n\n",
        );
        for (what, value) in &self.context {
            let _ = writeln!(out, "- **{what}**: {value}");
        }
        out.push('\n');
        if !self.targets.is_empty() {
            out.push_str(
                "## Targets\n\n| target | compares | measured | goal | result |\n| --- | --- | --- | --- | --- |\n",
            );
            for target in &self.targets {
                let result = if target.ratio >= target.goal { "met" } else { "**missed**" };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} ({}) | ≥ {:.2} | {result} |",
                    target.what, target.basis, target.ratio, target.detail, target.goal
                );
            }
            out.push('\n');
        }
        for section in &self.sections {
            let _ = writeln!(out, "## {}\n\n{}\n", section.title, section.text);
            let _ = writeln!(out, "| {} |", section.header.join(" | "));
            let _ = writeln!(out, "|{}", " --- |".repeat(section.header.len()));
            for row in &section.rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
            out.push('\n');
            for chart in &section.charts {
                let _ = writeln!(out, "![{}]({charts_dir}/{})\n", chart.caption, chart.file);
            }
            for note in &section.notes {
                let _ = writeln!(out, "{note}\n");
            }
        }
        out
    }
}

/// `12345.6` as "12 346".
pub(crate) fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A peak RSS in KiB as "123 MiB".
pub(crate) fn mib(kib: u64) -> String {
    if kib == 0 { "n/a".to_owned() } else { format!("{:.0} MiB", kib as f64 / 1024.0) }
}
