//! Database mode with Kafka output: the transactional outbox.
//!
//! **Guarantee shown:** each order read from `orders-placed` is recorded in PostgreSQL
//! exactly once *and* announced on `orders-recorded` exactly once. The row, the consumer
//! position and the outgoing event (an outbox row) commit in one PostgreSQL transaction; the
//! relay then publishes the outbox in Kafka transactions that carry its own position, so
//! neither a crash of the handler nor one of the relay can lose or double an event.
//!
//! Runs against containers, or against `EXACTLY_BROKERS` and `DATABASE_URL`:
//!
//! ```text
//! cargo run -p exactly-examples --bin outbox
//! ```

use std::time::Duration;

use exactly::{Context, Handler, HandlerError, Message, Output, Runtime};
use exactly_examples::environment::{Environment, read_committed_ids};
use exactly_examples::orders::{self, Order};
use rdkafka::producer::{FutureProducer, FutureRecord};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let environment = Environment::start().await?;
    environment.create_topic("orders-placed", 3).await?;
    environment.create_topic("orders-recorded", 3).await?;
    let pool = sqlx::PgPool::connect(&environment.database_url).await?;
    orders::create_schema(&pool).await?;

    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &environment.brokers).create()?;
    for order in orders::make_orders(ORDERS, 20) {
        let payload = serde_json::to_vec(&order)?;
        producer
            .send(FutureRecord::to("orders-placed").key(&order.customer).payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }

    let runtime = Runtime::builder()
        .brokers(environment.brokers.clone())
        .database_url(environment.database_url.clone())
        .outbox_relay("order-book-outbox") // the same name on every instance
        .handler(OrderBook)
        .build()
        .await?;
    let stop = runtime.shutdown_handle();
    let running = tokio::spawn(runtime.run_until(std::future::pending()));

    let (events, announced) = read_committed_ids(&environment.brokers, "orders-recorded", "order", ORDERS).await?;
    stop.shutdown();
    running.await??;

    let verdict = orders::verify(&pool, ORDERS).await?;
    println!(
        "orders: {ORDERS}, rows: {}, events read (read_committed): {events}, distinct: {}",
        verdict.rows,
        announced.len()
    );
    anyhow::ensure!(verdict.exact(), "rows lost or doubled: {verdict:?}");
    anyhow::ensure!(events == ORDERS && announced.len() as i64 == ORDERS, "an event was lost or published twice");
    println!("OUTBOX: each order recorded once and announced once");
    Ok(())
}
