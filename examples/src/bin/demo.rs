//! The main demo of exactly.
//!
//! **Guarantee shown:** every order published to Kafka is recorded in PostgreSQL exactly
//! once, in order per customer, although the process that records them is killed with
//! SIGKILL again and again at random moments.
//!
//! It starts Kafka and PostgreSQL (containers, or `EXACTLY_BROKERS` / `DATABASE_URL`),
//! publishes orders while a worker process records them, kills the worker at random points
//! and restarts it, then checks the database on its own and prints what it found. It exits
//! 0 only when nothing was lost or doubled.
//!
//! ```text
//! cargo run --release -p exactly-examples --bin demo -- [--orders N] [--crashes K] [--quick]
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exactly::Runtime;
use exactly_examples::environment::Environment;
use exactly_examples::orders::{self, Order, RecordOrders};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};

struct Options {
    orders: i64,
    crashes: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options { orders: 20_000, crashes: 30 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options = Options { orders: 10_000, crashes: 20 },
            "--orders" => options.orders = args.next().unwrap_or_default().parse()?,
            "--crashes" => options.crashes = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument `{other}`: expected --orders N, --crashes K or --quick"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let outcome = if args.get(1).map(String::as_str) == Some("worker") {
        worker(args.get(2).cloned().unwrap_or_default(), args.get(3).cloned().unwrap_or_default()).await
    } else {
        demo().await
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The child process: records orders until SIGTERM (or SIGKILL).
async fn worker(brokers: String, database_url: String) -> anyhow::Result<bool> {
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").init();
    Runtime::builder()
        .brokers(brokers)
        .database_url(database_url)
        // Static membership: a restarted worker takes over its predecessor's partitions at
        // once instead of waiting for the dead one's session to time out.
        .kafka_setting("group.instance.id", "demo-worker")
        .kafka_setting("session.timeout.ms", "10000")
        .handler(RecordOrders)
        .build()
        .await?
        .run()
        .await?;
    Ok(true)
}

async fn demo() -> anyhow::Result<bool> {
    let options = options()?;
    println!("exactly demo: {} orders, {} crashes of the recording process", options.orders, options.crashes);
    let environment = Environment::start().await?;
    environment.create_topic(orders::TOPIC, orders::PARTITIONS).await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&environment.database_url).await?;
    orders::create_schema(&pool).await?;
    sqlx::query("TRUNCATE orders").execute(&pool).await?;

    // Publish at a steady pace, so the crashes fall while orders flow.
    let all = orders::make_orders(options.orders, 97);
    let pace = Duration::from_millis(1500 * options.crashes as u64 / (options.orders as u64 / 100).max(1));
    let publisher = tokio::spawn(publish(environment.brokers.clone(), all, pace));

    let log_path = std::env::temp_dir().join("exactly-demo-worker.log");
    let log = std::fs::File::create(&log_path)?;
    println!("worker output goes to {}", log_path.display());
    let spawn_worker = || -> anyhow::Result<Child> {
        Ok(Command::new(std::env::current_exe()?)
            .args(["worker", &environment.brokers, &environment.database_url])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()?)
    };

    let started = Instant::now();
    for crash in 1..=options.crashes {
        let mut child = spawn_worker()?;
        let lifetime = Duration::from_millis(rand::rng().random_range(300..2500));
        tokio::time::sleep(lifetime).await;
        child.kill()?; // SIGKILL: no shutdown, no flush, transactions cut mid-way
        child.wait()?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await?;
        println!(
            "crash {crash:>2}/{}: killed the worker after {:.1} s; {rows:>6}/{} orders recorded",
            options.crashes,
            lifetime.as_secs_f64(),
            options.orders
        );
    }
    publisher.await??;

    println!("last run: the worker finishes the remaining orders ...");
    let mut child = spawn_worker()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await?;
        if rows >= options.orders || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_gracefully(&mut child)?;

    let verdict = orders::verify(&pool, options.orders).await?;
    println!(
        "\nmessages in: {}\nrows written: {}\nduplicates: {}\nmissing: {}\nout of order: {}\ntook {:.0} s",
        verdict.published,
        verdict.rows,
        verdict.duplicates,
        verdict.missing,
        verdict.out_of_order,
        started.elapsed().as_secs_f64()
    );
    if verdict.exact() {
        println!("EXACTLY ONCE: every order recorded once, in order, despite {} SIGKILLs", options.crashes);
    } else {
        println!("NOT EXACT: see the worker output in {}", log_path.display());
    }
    Ok(verdict.exact())
}

async fn publish(brokers: String, all: Vec<Order>, pace: Duration) -> anyhow::Result<()> {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for chunk in all.chunks(100) {
        let sends = chunk.iter().map(|order| {
            let producer = producer.clone();
            let payload = serde_json::to_vec(order);
            async move {
                let payload = payload?;
                let record = FutureRecord::to(orders::TOPIC).key(&order.customer).payload(&payload);
                producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(sends).await?;
        tokio::time::sleep(pace).await;
    }
    Ok(())
}

/// SIGTERM, then wait: the worker commits its in-flight batch and leaves the group.
fn stop_gracefully(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    anyhow::ensure!(status.success(), "cannot send SIGTERM to the worker");
    child.wait()?;
    Ok(())
}
