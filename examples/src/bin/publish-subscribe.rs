//! Publish-subscribe delivery.
//!
//! **Guarantee shown:** two subscribers (two consumer groups, each a runtime instance of
//! its own) read the same topic; each subscriber handles every event exactly once, keeping
//! its own position, independent of the other.
//!
//! Runs against containers, or against `EXACTLY_BROKERS` and `DATABASE_URL`:
//!
//! ```text
//! cargo run -p exactly-examples --bin publish-subscribe
//! ```

use std::time::Duration;

use exactly::{Context, Handler, HandlerError, Message, Runtime};
use exactly_examples::environment::Environment;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Sends an e-mail per sign-up (here: records that it would).
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "signups", group = "welcome-mailer", delivery = publish_subscribe, payload = String, codec = utf8)]
struct WelcomeMailer;

/// Counts sign-ups for a report.
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "signups", group = "signup-stats", delivery = publish_subscribe, payload = String, codec = utf8)]
struct SignupStats;

#[exactly::async_trait]
impl Handler for WelcomeMailer {
    async fn handle(&self, message: &Message<Vec<u8>, String>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        record(cx, "welcome-mailer", &message.payload).await
    }
}

#[exactly::async_trait]
impl Handler for SignupStats {
    async fn handle(&self, message: &Message<Vec<u8>, String>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        record(cx, "signup-stats", &message.payload).await
    }
}

async fn record(cx: &mut Context<'_>, subscriber: &str, user: &str) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO seen (subscriber, user_name) VALUES ($1, $2)")
        .bind(subscriber)
        .bind(user)
        .execute(cx.db())
        .await?;
    Ok(())
}

const SIGNUPS: i64 = 1_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let environment = Environment::start().await?;
    environment.create_topic("signups", 3).await?;
    let pool = sqlx::PgPool::connect(&environment.database_url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS seen (subscriber TEXT NOT NULL, user_name TEXT NOT NULL)")
        .execute(&pool)
        .await?;

    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &environment.brokers).create()?;
    for user in 0..SIGNUPS {
        let payload = format!("user-{user}");
        producer
            .send(FutureRecord::<str, str>::to("signups").key(&payload).payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }

    let base =
        || Runtime::builder().brokers(environment.brokers.clone()).database_url(environment.database_url.clone());
    let mailer = base().handler(WelcomeMailer).build().await?;
    let stats = base().handler(SignupStats).build().await?;
    let (mailer_stop, stats_stop) = (mailer.shutdown_handle(), stats.shutdown_handle());
    let mailer = tokio::spawn(mailer.run_until(std::future::pending()));
    let stats = tokio::spawn(stats.run_until(std::future::pending()));

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM seen").fetch_one(&pool).await? < 2 * SIGNUPS {
        anyhow::ensure!(std::time::Instant::now() < deadline, "subscribers did not finish within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mailer_stop.shutdown();
    stats_stop.shutdown();
    mailer.await??;
    stats.await??;

    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT subscriber, count(*), count(DISTINCT user_name) FROM seen GROUP BY subscriber ORDER BY subscriber",
    )
    .fetch_all(&pool)
    .await?;
    for (subscriber, total, distinct) in &rows {
        println!("{subscriber}: {total} events handled, {distinct} distinct");
        anyhow::ensure!(*total == SIGNUPS && *distinct == SIGNUPS, "{subscriber} lost or doubled an event");
    }
    anyhow::ensure!(rows.len() == 2, "both subscribers should have run: {rows:?}");
    println!("PUBLISH-SUBSCRIBE: each of {} subscribers handled all {SIGNUPS} events exactly once", rows.len());
    Ok(())
}
