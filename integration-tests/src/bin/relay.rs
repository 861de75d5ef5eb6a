//! An outbox relay process for crash tests: `relay BROKERS DATABASE_URL NAME POSITIONS_TOPIC`.
//! Publishes the outbox until SIGTERM, or until it is killed.
//! `EXACTLY_TEST_RELAY_LEADER_TIMEOUT_MS=N` sets `Relay::leader_timeout` (60 s by default).

use exactly::outbox::Relay;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, database_url, name, positions_topic] = args.as_slice() else {
        eprintln!("usage: relay BROKERS DATABASE_URL NAME POSITIONS_TOPIC");
        return std::process::ExitCode::FAILURE;
    };
    let outcome = async {
        let pool = sqlx::PgPool::connect(database_url).await?;
        let mut relay = Relay::new(name, brokers, pool);
        if let Ok(millis) = std::env::var("EXACTLY_TEST_RELAY_LEADER_TIMEOUT_MS") {
            relay = relay.leader_timeout(std::time::Duration::from_millis(millis.parse()?));
        }
        let relay = relay
            .positions_topic(positions_topic)
            .batch_size(200)
            .on_error(|e| eprintln!("relay error: {e}"))
            .start()
            .await?;
        let _ = tokio::signal::ctrl_c().await; // SIGTERM ends the process; SIGINT stops cleanly
        relay.stop().await?;
        anyhow::Ok(())
    }
    .await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
