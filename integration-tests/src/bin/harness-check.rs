//! Checks that the container tests can run here: the engine answers, and which images the
//! harness would start. Exits non-zero, with the harness's own message, when they cannot.
//!
//! `cargo run -p exactly-integration-tests --bin harness-check [--start]`; with `--start` it
//! also starts PostgreSQL and one Kafka broker and waits until both answer.

use exactly_integration_tests::{Kafka, Postgres, engine, images};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match check(std::env::args().any(|a| a == "--start")).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness-check: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn check(start: bool) -> anyhow::Result<()> {
    engine::ensure_engine().await?;
    let (kafka, postgres) = images::chosen().await?;
    println!("engine: answers\nkafka image: {kafka}\npostgres image: {postgres}");
    if start {
        let kafka = Kafka::single().await?;
        println!("kafka: ready at {}", kafka.bootstrap_servers());
        let postgres = Postgres::dedicated().await?;
        println!("postgres: ready at {}", postgres.url("postgres"));
    }
    Ok(())
}
