//! Point-to-point delivery.
//!
//! **Guarantee shown:** two instances of a handler share one consumer group; each message
//! is handled by exactly one of them, and its effect is written exactly once, even as the
//! second instance joins and takes over half of the partitions mid-stream.
//!
//! Runs against containers, or against `EXACTLY_BROKERS` and `DATABASE_URL`:
//!
//! ```text
//! cargo run -p exactly-examples --bin point-to-point
//! ```

use std::time::Duration;

use exactly::{Context, Handler, HandlerError, Message, Runtime};
use exactly_examples::environment::Environment;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A task queue: each job is done once, by whichever instance owns its partition.
#[derive(Debug, Clone, exactly::Handler)]
#[exactly(topic = "jobs", group = "job-runners", delivery = point_to_point, payload = String, codec = utf8)]
struct RunJobs {
    instance: &'static str,
}

#[exactly::async_trait]
impl Handler for RunJobs {
    async fn handle(&self, message: &Message<Vec<u8>, String>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO jobs_done (job, instance) VALUES ($1, $2)")
            .bind(&message.payload)
            .bind(self.instance)
            .execute(cx.db())
            .await?;
        Ok(())
    }
}

const JOBS: usize = 2_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let environment = Environment::start().await?;
    environment.create_topic("jobs", 4).await?;
    let pool = sqlx::PgPool::connect(&environment.database_url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS jobs_done (job TEXT NOT NULL, instance TEXT NOT NULL)")
        .execute(&pool)
        .await?;

    let instance = |name: &'static str| {
        Runtime::builder()
            .brokers(environment.brokers.clone())
            .database_url(environment.database_url.clone())
            .handler(RunJobs { instance: name })
            .build()
    };
    let first = instance("instance-1").await?;
    let first_stop = first.shutdown_handle();
    let first = tokio::spawn(first.run_until(std::future::pending()));

    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &environment.brokers).create()?;
    let mut second = None;
    for job in 0..JOBS {
        if job == JOBS / 4 {
            // A second instance joins the group mid-stream and takes over some partitions.
            let runtime = instance("instance-2").await?;
            second = Some((runtime.shutdown_handle(), tokio::spawn(runtime.run_until(std::future::pending()))));
        }
        let payload = format!("job-{job}");
        producer
            .send(FutureRecord::<str, str>::to("jobs").key(&payload).payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs_done").fetch_one(&pool).await? < JOBS as i64 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "jobs were not all done within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first_stop.shutdown();
    first.await??;
    if let Some((stop, task)) = second {
        stop.shutdown();
        task.await??;
    }

    let (total, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT job) FROM jobs_done").fetch_one(&pool).await?;
    let shares: Vec<(String, i64)> =
        sqlx::query_as("SELECT instance, count(*) FROM jobs_done GROUP BY instance ORDER BY instance")
            .fetch_all(&pool)
            .await?;
    for (instance, count) in &shares {
        println!("{instance} did {count} jobs");
    }
    println!("jobs published: {JOBS}, done: {total}, distinct: {distinct}");
    anyhow::ensure!(total == JOBS as i64 && distinct == total, "a job was lost or done twice");
    anyhow::ensure!(shares.len() == 2, "both instances should have done work: {shares:?}");
    println!("POINT-TO-POINT: each job done exactly once, shared by {} instances", shares.len());
    Ok(())
}
