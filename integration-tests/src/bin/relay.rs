//! An outbox relay process for crash tests: `relay BROKERS DATABASE_URL NAME POSITIONS_TOPIC`.
//! Publishes the outbox until SIGTERM, or until it is killed.

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
        let relay = Relay::new(name, brokers, pool)
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
