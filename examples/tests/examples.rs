//! Runs the main demo (quick profile: 10 000 orders, 20 SIGKILLs of the recording process)
//! and both delivery-mode examples, as a user would, and checks what they print.

use std::process::Command;
use std::sync::Mutex;

/// One example at a time: each starts its own Kafka and PostgreSQL, as a user's run does.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(binary: &str, args: &[&str]) -> String {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let output = Command::new(binary).args(args).output().unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{binary} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

#[test]
fn the_demo_survives_twenty_sigkills_with_every_order_recorded_once() {
    let out = run(env!("CARGO_BIN_EXE_demo"), &["--quick"]);
    assert_eq!(out.matches("killed the worker").count(), 20, "{out}");
    for line in ["messages in: 10000", "rows written: 10000", "duplicates: 0", "missing: 0", "out of order: 0"] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
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
fn kafka_mode_example_invoices_each_order_once() {
    let out = run(env!("CARGO_BIN_EXE_kafka-mode"), &[]);
    assert!(out.contains("KAFKA MODE: one invoice per order, exactly once"), "{out}");
}

#[test]
fn outbox_example_records_and_announces_each_order_once() {
    let out = run(env!("CARGO_BIN_EXE_outbox"), &[]);
    assert!(out.contains("OUTBOX: each order recorded once and announced once"), "{out}");
}
