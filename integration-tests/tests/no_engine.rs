//! Without a Docker engine the container tests fail, with a sentence saying how to start
//! one; nothing is skipped silently.

use std::process::Command;

#[test]
fn without_an_engine_container_tests_fail_and_say_how_to_start_one() {
    // A child process, so the bogus DOCKER_HOST cannot reach the other tests.
    let output = Command::new(env!("CARGO_BIN_EXE_harness-check"))
        .arg("--start")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap_or_else(|e| panic!("cannot run harness-check: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "starting containers without an engine succeeded:\n{stderr}");
    assert!(stderr.contains("no Docker engine answered at unix:///nonexistent/docker.sock"), "{stderr}");
    assert!(stderr.contains("scripts/setup"), "the message must say how to start an engine:\n{stderr}");
}
