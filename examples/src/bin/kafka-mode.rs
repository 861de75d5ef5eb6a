//! Kafka mode: consume, transform, produce.
//!
//! **Guarantee shown:** each order read from `orders-in` produces exactly one invoice on
//! `invoices`, as seen by `read_committed` readers: the invoice and the order's offset
//! commit in one Kafka transaction (KIP-447), so a crash or a rebalance can neither lose
//! an invoice nor write it twice. No database is involved.
//!
//! Orders are published at a steady pace while the worker process is killed with SIGKILL,
//! five times, each time while orders wait (as the main demo does); a last worker
//! finishes. Then it checks invoices per order as a `read_committed` reader sees them, and
//! that no handler failure was reported (with no dead-letter topic, a failing message is
//! retried, never dead-lettered, so a failure shows only there). It exits 0 only when both
//! hold.
//!
//! Runs against a container, or against `EXACTLY_BROKERS`:
//!
//! ```text
//! cargo run -p exactly-examples --bin kafka-mode
//! ```

use std::time::{Duration, Instant};

use exactly::mode::Kafka;
use exactly::{Consumes as _, Context, Handler, HandlerError, Message, Output, Runtime};
use exactly_examples::environment::{CommittedOffsets, Environment, read_committed_ids};
use exactly_examples::failures::FailureLog;
use exactly_examples::orders::{Order, make_orders};
use exactly_testkit::Input;
use exactly_testkit::kill_loop::{Feed, Worker, kill_while_working};

/// Turns each order into an invoice, written to Kafka in the transaction that consumes it.
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "orders-in", group = "invoicer", payload = Order, key = String, mode = kafka, outputs = ["invoices"])]
struct Invoicer;

#[exactly::async_trait]
impl Handler for Invoicer {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_, Kafka>) -> Result<(), HandlerError> {
        let order = &message.payload;
        let invoice = serde_json::json!({ "order": order.id, "customer": order.customer, "total_cents": order.amount_cents * 120 / 100 });
        cx.emit(Output::to("invoices").key(order.customer.as_str()).json(&invoice)?);
        Ok(())
    }
}

const ORDERS: i64 = 2_000;
const CRASHES: usize = 5;
const PARTITIONS: i32 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        return worker(arg(2), FailureLog::at(arg(3))).await;
    }
    let environment = Environment::start_kafka_only().await?;
    environment.create_topic("orders-in", PARTITIONS).await?;
    environment.create_topic("invoices", PARTITIONS).await?;
    let failures = FailureLog::fresh(std::env::temp_dir().join("exactly-kafka-mode-handler-failures.log"))?;

    let orders = make_orders(ORDERS, 25);
    let records = orders.iter().map(|o| Ok(Input::json(o)?.key(o.customer.as_str()))).collect::<anyhow::Result<_>>()?;
    let feed = Feed::start(&environment.brokers, "orders-in", records, CRASHES)?;
    let log = std::env::temp_dir().join("exactly-kafka-mode-worker.log");
    std::fs::File::create(&log)?;
    let failure_log = failures.path().display().to_string();
    let spawn = || Worker::spawn(&["worker", &environment.brokers, &failure_log], &[], &log);
    // The offsets commit in the transaction of the invoices: they count orders invoiced.
    let offsets =
        CommittedOffsets::new(&environment.brokers, Invoicer.subscription().group(), "orders-in", PARTITIONS)?;
    let invoiced = || offsets.total();
    kill_while_working(CRASHES, ORDERS, "orders invoiced", &spawn, invoiced, &feed).await?;
    feed.finish().await?;

    let mut last = spawn()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while offsets.total().await? < ORDERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last.stop()?;

    // Read the invoices as a downstream service would: read_committed only.
    let (invoices, orders_invoiced) = read_committed_ids(&environment.brokers, "invoices", "order", ORDERS).await?;
    let handler_failures = failures.count()?;
    println!(
        "orders: {ORDERS}\ninvoices read (read_committed): {invoices}\norders invoiced: {}\nhandler failures: {handler_failures}",
        orders_invoiced.len()
    );
    anyhow::ensure!(handler_failures == 0, "the handler failed {handler_failures} time(s): see {}", log.display());
    anyhow::ensure!(
        invoices == ORDERS && orders_invoiced.len() as i64 == ORDERS,
        "an invoice was lost or written twice"
    );
    println!("KAFKA MODE: one invoice per order, exactly once, despite {CRASHES} SIGKILLs");
    Ok(())
}

/// The worker process: invoices orders until SIGTERM (or SIGKILL), writing every handler
/// failure it reports to `failures`.
async fn worker(brokers: String, failures: FailureLog) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").init();
    failures
        .watch(Runtime::builder())
        .brokers(brokers)
        .transactional_id("invoicer-1") // stable per instance: a restart fences the killed one
        // Static membership: a restarted worker takes over at once (see the main demo).
        .kafka_setting("group.instance.id", "invoicer-worker")
        .kafka_setting("session.timeout.ms", "10000")
        .handler(Invoicer)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
