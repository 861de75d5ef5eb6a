//! Runs the main demo (quick profile: 10 000 orders, 20 SIGKILLs of the recording process)
//! and every other example, as a user would, and checks what they print: for those that
//! kill their worker, that every kill landed while work remained. Then runs the demo with
//! its handler broken on purpose, to show that its check fails when it should.

use std::process::{Command, Output};
use std::sync::Mutex;

use exactly_examples::fault::FAULT_VAR;

/// One example at a time: each starts its own Kafka and PostgreSQL, as a user's run does.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Orders and kills of the demo's quick profile.
const QUICK_ORDERS: i64 = 10_000;
const QUICK_CRASHES: usize = 20;
/// A short demo run, for the runs that must fail.
const SHORT: &[&str] = &["--orders", "2000", "--crashes", "3"];

fn execute(binary: &str, args: &[&str], fault: Option<&str>) -> (Output, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut command = Command::new(binary);
    command.args(args).env_remove(FAULT_VAR);
    if let Some(fault) = fault {
        command.env(FAULT_VAR, fault);
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

/// Runs `binary` and returns what it printed; fails the test unless it exited 0.
fn run(binary: &str, args: &[&str]) -> String {
    let (output, stdout) = execute(binary, args, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{binary} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// Runs the demo with `fault` in its handler; returns what it printed, having checked that
/// it exited non-zero after reaching its verdict (not on some unrelated error).
fn run_demo_with_fault(fault: &str) -> String {
    let (output, stdout) = execute(env!("CARGO_BIN_EXE_demo"), SHORT, Some(fault));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the demo passed with fault {fault}:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("NOT EXACT"), "no verdict with fault {fault}:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// The figure printed as `name: <n>` on a line of its own.
fn figure(out: &str, name: &str) -> i64 {
    let prefix = format!("{name}: ");
    let line =
        out.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no `{name}` in:\n{out}"));
    line.trim().parse().unwrap_or_else(|e| panic!("`{name}: {line}` is not a number ({e}) in:\n{out}"))
}

/// What was done at each kill, from the lines `crash k/K: ...; done/total <what>`.
fn done_at_kills(out: &str) -> Vec<i64> {
    out.lines()
        .filter(|line| line.starts_with("crash "))
        .map(|line| {
            let (_, tail) = line.rsplit_once("; ").unwrap_or_else(|| panic!("unexpected line `{line}`"));
            let done = tail.trim_start().split('/').next().unwrap_or_default();
            done.parse().unwrap_or_else(|e| panic!("no count of what was done ({e}) in `{line}`"))
        })
        .collect()
}

/// Every one of `crashes` kills landed while work remained: some of the `total` done, not
/// all, more than at the kill before (the worker had been at work), and input waiting.
fn assert_kills_landed_mid_work(out: &str, crashes: usize, total: i64) {
    let done = done_at_kills(out);
    assert_eq!(done.len(), crashes, "{out}");
    assert!(done.iter().all(|&d| 0 < d && d < total), "a kill fell before or after the work: {done:?}\n{out}");
    assert!(done.windows(2).all(|w| w[0] < w[1]), "a kill fell on a worker that did nothing: {done:?}\n{out}");
    assert!(!out.contains("NO input waiting"), "a kill fell while no input was waiting:\n{out}");
}

#[test]
fn the_demo_survives_twenty_sigkills_with_every_order_recorded_once() {
    let out = run(env!("CARGO_BIN_EXE_demo"), &["--quick"]);

    assert_kills_landed_mid_work(&out, QUICK_CRASHES, QUICK_ORDERS);

    assert_eq!(figure(&out, "messages in"), QUICK_ORDERS, "{out}");
    assert_eq!(figure(&out, "rows written"), QUICK_ORDERS, "{out}");
    for name in ["duplicates", "missing", "out of order", "dead letters", "handler failures"] {
        assert_eq!(figure(&out, name), 0, "{name}:\n{out}");
    }
    assert!(out.contains("EXACTLY ONCE"), "{out}");
}

#[test]
fn the_demo_fails_when_its_handler_applies_each_order_twice() {
    let out = run_demo_with_fault("apply-twice");
    assert!(figure(&out, "duplicates") > 0, "{out}");
}

#[test]
fn the_demo_fails_when_an_order_is_dead_lettered() {
    let out = run_demo_with_fault("reject:7");
    assert_eq!(figure(&out, "dead letters"), 1, "{out}");
    assert!(figure(&out, "handler failures") >= 1, "{out}");
    assert_eq!(figure(&out, "missing"), 1, "{out}");
    assert_eq!(figure(&out, "duplicates"), 0, "{out}");
}

#[test]
fn point_to_point_example_shares_jobs_and_does_each_once() {
    let out = run(env!("CARGO_BIN_EXE_point-to-point"), &[]);
    assert!(out.contains("POINT-TO-POINT: each job done exactly once, shared by 2 instances"), "{out}");
}

#[test]
fn publish_subscribe_example_gives_each_subscriber_every_event() {
    let out = run(env!("CARGO_BIN_EXE_publish-subscribe"), &[]);
    assert!(out.contains("PUBLISH-SUBSCRIBE: each of 2 subscribers handled all 1000 events exactly once"), "{out}");
}

#[test]
fn kafka_mode_example_survives_five_sigkills_invoicing_each_order_once() {
    let out = run(env!("CARGO_BIN_EXE_kafka-mode"), &[]);
    assert_kills_landed_mid_work(&out, 5, 2_000);
    assert_eq!(figure(&out, "invoices read (read_committed)"), 2_000, "{out}");
    assert_eq!(figure(&out, "orders invoiced"), 2_000, "{out}");
    assert_eq!(figure(&out, "handler failures"), 0, "{out}");
    assert!(out.contains("KAFKA MODE: one invoice per order, exactly once"), "{out}");
}

#[test]
fn batch_example_survives_five_sigkills_storing_each_reading_once_in_bulk() {
    let out = run(env!("CARGO_BIN_EXE_batch"), &[]);
    assert_kills_landed_mid_work(&out, 5, 19_999);
    assert_eq!(figure(&out, "rows written"), 19_999, "{out}");
    assert_eq!(figure(&out, "readings in the totals"), 19_999, "{out}");
    for name in ["duplicates", "missing"] {
        assert_eq!(figure(&out, name), 0, "{name}:\n{out}");
    }
    assert!(out.contains("BATCH: each reading stored once in bulk"), "{out}");
}

#[test]
fn outbox_example_survives_five_sigkills_recording_and_announcing_each_order_once() {
    let out = run(env!("CARGO_BIN_EXE_outbox"), &[]);
    assert_kills_landed_mid_work(&out, 5, 1_000);
    assert_eq!(figure(&out, "rows written"), 1_000, "{out}");
    assert_eq!(figure(&out, "events read (read_committed)"), 1_000, "{out}");
    assert_eq!(figure(&out, "orders announced"), 1_000, "{out}");
    for name in ["duplicates", "missing", "out of order", "dead letters", "handler failures"] {
        assert_eq!(figure(&out, name), 0, "{name}:\n{out}");
    }
    assert!(out.contains("OUTBOX: each order recorded once and announced once"), "{out}");
}
