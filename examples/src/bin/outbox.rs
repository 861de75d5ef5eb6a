//! Database mode with Kafka output: the transactional outbox.
//!
//! **Guarantee shown:** each order read from `orders-placed` is recorded in PostgreSQL
//! exactly once *and* announced on `orders-recorded` exactly once. The row, the consumer
//! position and the outgoing event (an outbox row) commit in one PostgreSQL transaction; the
//! relay then publishes the outbox in Kafka transactions that carry its own position, so
//! neither a crash of the handler nor one of the relay can lose or double an event.
//!
//! Orders are published at a steady pace while the worker process that runs the handler
//! and the relay is killed with SIGKILL, five times, each time while orders wait (as the
//! main demo does); a last worker finishes. Then it checks rows per order id (no
//! constraint would turn a second copy into an error), events per order as a
//! `read_committed` reader sees them, and that no message was dead-lettered and no handler
//! failure reported. It exits 0 only when all hold.
//!
//! Runs against containers, or against `EXACTLY_BROKERS` and `DATABASE_URL`:
//!
//! ```text
//! cargo run -p exactly-examples --bin outbox
//! ```

use exactly::{Consumes as _, Context, Handler, HandlerError, Message, Output, Runtime};
use exactly_examples::environment::{Environment, read_committed_ids};
use exactly_examples::failures::FailureLog;
use exactly_examples::orders::{self, Order};
use exactly_testkit::Input;
use exactly_testkit::kill_loop::{Feed, Worker, kill_while_working};

/// Records the order, and announces it through the outbox in the same transaction.
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "orders-placed", group = "order-book", payload = Order, key = String, outputs = ["orders-recorded"])]
struct OrderBook;

#[exactly::async_trait]
impl Handler for OrderBook {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let order = &message.payload;
        orders::insert(cx.db(), order).await?;
        let event = serde_json::json!({ "order": order.id, "recorded": true });
        cx.emit(Output::to("orders-recorded").key(order.customer.as_str()).json(&event)?).await?;
        Ok(())
    }
}

const ORDERS: i64 = 1_000;
const CRASHES: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        return worker(arg(2), arg(3), FailureLog::at(arg(4))).await;
    }
    let environment = Environment::start().await?;
    environment.create_topic("orders-placed", 3).await?;
    environment.create_topic("orders-recorded", 3).await?;
    let pool = sqlx::PgPool::connect(&environment.database_url).await?;
    orders::create_schema(&pool).await?;
    let failures = FailureLog::fresh(std::env::temp_dir().join("exactly-outbox-handler-failures.log"))?;

    let placed = orders::make_orders(ORDERS, 20);
    let records = placed.iter().map(|o| Ok(Input::json(o)?.key(o.customer.as_str()))).collect::<anyhow::Result<_>>()?;
    let feed = Feed::start(&environment.brokers, "orders-placed", records, CRASHES)?;
    let log = std::env::temp_dir().join("exactly-outbox-worker.log");
    std::fs::File::create(&log)?;
    let failure_log = failures.path().display().to_string();
    let spawn = || Worker::spawn(&["worker", &environment.brokers, &environment.database_url, &failure_log], &[], &log);
    let recorded = || orders::recorded(&pool);
    kill_while_working(CRASHES, ORDERS, "orders recorded", &spawn, recorded, &feed).await?;
    feed.finish().await?;

    let mut last = spawn()?;
    let (events, announced) = read_committed_ids(&environment.brokers, "orders-recorded", "order", ORDERS).await?;
    last.stop()?;

    let verdict = orders::verify(&pool, ORDERS, OrderBook.subscription().group(), &failures).await?;
    println!("{verdict}\nevents read (read_committed): {events}\norders announced: {}", announced.len());
    anyhow::ensure!(verdict.exact(), "rows lost or doubled, or a message failed (see {}): {verdict:?}", log.display());
    anyhow::ensure!(events == ORDERS && announced.len() as i64 == ORDERS, "an event was lost or published twice");
    println!("OUTBOX: each order recorded once and announced once, despite {CRASHES} SIGKILLs");
    Ok(())
}

/// The worker process: the handler and the relay, until SIGTERM (or SIGKILL), writing
/// every handler failure it reports to `failures`.
async fn worker(brokers: String, database_url: String, failures: FailureLog) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").init();
    failures
        .watch(Runtime::builder())
        .brokers(brokers)
        .database_url(database_url)
        .outbox_relay("order-book-outbox") // the same name on every instance
        // Static membership: a restarted worker takes over at once (see the main demo).
        .kafka_setting("group.instance.id", "order-book-worker")
        .kafka_setting("session.timeout.ms", "10000")
        .handler(OrderBook)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
