//! The benchmark's smoke run: every scenario (S1–S6), every system and every baseline,
//! Kafka Streams included, on a tiny backlog, so the benchmark keeps working. The figures
//! of such a run mean nothing and nothing here times anything; what is checked is that
//! each scenario ran, every system made its output exactly once (the bench verifies rows
//! and committed output records after each run and fails otherwise), and the report has
//! a figure in every row.

use std::process::Command;

#[test]
fn every_scenario_runs_and_reports_a_figure_for_every_system() {
    let dir = std::env::temp_dir().join(format!("exactly-bench-smoke-{}", std::process::id()));
    let out = dir.join("benchmarks.md");
    let status = Command::new(env!("CARGO_BIN_EXE_exactly-bench"))
        .args(["run", "--profile", "smoke", "--out"])
        .arg(&out)
        .arg("--logs")
        .arg(dir.join("logs"))
        .status()
        .expect("cannot start exactly-bench");
    assert!(status.success(), "exactly-bench run --profile smoke failed ({status}); its output above says why");
    let report = std::fs::read_to_string(&out).expect("the report was not written");

    for title in [
        "## Targets",
        "## S1: Kafka to PostgreSQL, exactly once, batched",
        "## S2: Kafka to PostgreSQL, one message per transaction",
        "## S3: consume-transform-produce",
        "## S3: throughput against the commit interval",
        "## S4: end-to-end latency at half of the maximum rate",
        "## S5: input partitions",
        "## S6: recovery after SIGKILL",
    ] {
        assert!(report.contains(title), "the report has no section {title:?}:\n{report}");
    }
    for system in [
        "exactly, Database mode",
        "exactly, Kafka mode",
        "rdkafka + sqlx, at-least-once",
        "rdkafka, consume only",
        "sqlx, inserts only",
        "rdkafka + sqlx loop, offset upsert",
        "rdkafka idempotent copy, at-least-once",
        "Kafka Streams, exactly_once_v2",
    ] {
        assert!(report.contains(&format!("| {system}")), "no row for {system}:\n{report}");
    }
    // Every table row of a scenario holds at least one positive figure; none is empty.
    let rows: Vec<&str> =
        report.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| ---") && !l.contains("| --- |")).collect();
    let figures = |row: &str| -> Vec<f64> {
        row.split('|')
            .filter_map(|cell| {
                let cell = cell.trim().replace('\u{202f}', "");
                let number = cell.split_whitespace().next()?;
                number.parse::<f64>().ok()
            })
            .collect()
    };
    let data_rows: Vec<&&str> = rows.iter().filter(|row| !figures(row).is_empty()).collect();
    assert!(data_rows.len() >= 30, "expected at least 30 rows of figures, found {}:\n{report}", data_rows.len());
    for row in &data_rows {
        assert!(!row.contains("|  |"), "an empty cell in {row}");
        assert!(!row.contains("NaN") && !row.contains("inf"), "a figure that is not a number in {row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
