//! The main demo of exactly.
//!
//! **Guarantee shown:** every order published to Kafka is recorded in PostgreSQL exactly
//! once, in order per customer, although the process that records them is killed with
//! SIGKILL again and again while it works.
//!
//! It starts Kafka and PostgreSQL (containers, or `EXACTLY_BROKERS` / `DATABASE_URL`),
//! publishes orders at a steady pace while a worker process records them, and kills the
//! worker once it has recorded more orders than before and while published orders wait
//! to be recorded; the last orders are published only after the last kill, so every kill
//! falls before the work is done. A last worker finishes, and the demo checks the database
//! on its own: rows per order id (no constraint would turn a second copy into an error,
//! so a duplicate shows as a row), no dead letter, and no handler failure reported by any
//! worker. It exits 0 only when nothing was lost, doubled or failed.
//!
//! ```text
//! cargo run --release -p exactly-examples --bin demo -- [--orders N] [--crashes K] [--quick]
//! ```
//!
//! Tests only: the worker honours [`FAULT_VAR`](exactly_examples::fault::FAULT_VAR), which
//! breaks its handler on purpose so the examples' test can show that this check fails then.

use std::path::Path;
use std::time::{Duration, Instant};

use exactly::{Consumes as _, Runtime};
use exactly_examples::environment::{Environment, high_watermarks};
use exactly_examples::failures::FailureLog;
use exactly_examples::fault::Fault;
use exactly_examples::orders::{self, RecordOrders};
use exactly_testkit::Input;
use exactly_testkit::kill_loop::{Feed, Worker, kill_while_working};
use sqlx::PgPool;

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
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        worker(arg(2), arg(3), FailureLog::at(arg(4))).await
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

/// The child process: records orders until SIGTERM (or SIGKILL), writing every handler
/// failure it reports to `failures`.
async fn worker(brokers: String, database_url: String, failures: FailureLog) -> anyhow::Result<bool> {
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").init();
    let handler = RecordOrders { fault: Fault::from_env()? };
    failures
        .watch(Runtime::builder())
        .brokers(brokers)
        .database_url(database_url)
        // Static membership: a restarted worker takes over its predecessor's partitions at
        // once instead of waiting for the dead one's session to time out.
        .kafka_setting("group.instance.id", "demo-worker")
        .kafka_setting("session.timeout.ms", "10000")
        .handler(handler)
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
    let failures = FailureLog::fresh(std::env::temp_dir().join("exactly-demo-handler-failures.log"))?;

    let all = orders::make_orders(options.orders, 97);
    let records = all.iter().map(|o| Ok(Input::json(o)?.key(o.customer.as_str()))).collect::<anyhow::Result<_>>()?;
    let feed = Feed::start(&environment.brokers, orders::TOPIC, records, options.crashes)?;

    let log = std::env::temp_dir().join("exactly-demo-worker.log");
    std::fs::File::create(&log)?;
    println!("worker output goes to {}", log.display());
    let failure_log = failures.path().display().to_string();
    let spawn = || Worker::spawn(&["worker", &environment.brokers, &environment.database_url, &failure_log], &[], &log);

    let started = Instant::now();
    let recorded = || orders::recorded(&pool);
    kill_while_working(options.crashes, options.orders, "orders recorded", &spawn, recorded, &feed).await?;
    feed.finish().await?;

    println!("last run: the worker finishes the remaining orders ...");
    let mut worker = spawn()?;
    let group = RecordOrders::default().subscription().group().to_owned();
    let ends = high_watermarks(&environment.brokers, orders::TOPIC, orders::PARTITIONS).await?;
    wait_for_positions(&pool, &group, &ends).await?;
    worker.stop()?;

    let verdict = orders::verify(&pool, options.orders, &group, &failures).await?;
    println!("\n{verdict}\ntook {:.0} s", started.elapsed().as_secs_f64());
    if verdict.exact() {
        println!("EXACTLY ONCE: every order recorded once, in order, despite {} SIGKILLs", options.crashes);
    } else {
        println!("NOT EXACT: see the worker output in {}", log.display());
        print_failures(failures.path());
    }
    Ok(verdict.exact())
}

/// Waits (at most 180 s) until `group`'s stored position is at `ends` on every partition:
/// every order handled, so none is left to apply again.
async fn wait_for_positions(pool: &PgPool, group: &str, ends: &[i64]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let mut at_end = true;
        for (partition, end) in (0..).zip(ends) {
            let position = exactly::offsets::position(pool, group, orders::TOPIC, partition).await?;
            at_end &= position >= Some(*end);
        }
        if at_end {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("the last worker did not reach the end of every partition within 180 s");
    Ok(())
}

/// Prints the first handler failures recorded, so a failed run says why.
fn print_failures(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines().take(5) {
            println!("handler failure: {line}");
        }
    }
}
