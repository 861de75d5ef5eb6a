//! The kit's in-process helpers, used as a user would use them: a handler runs in the test,
//! input goes in with keys and headers, the test waits on stored positions, and reads a
//! Kafka-mode handler's output as a read_committed reader.

use std::time::Duration;

use exactly::mode::Kafka as KafkaMode;
use exactly::{Context, Handler, HandlerError, Message, Output, Runtime};
use exactly_testkit::{Input, Isolation, Kafka, Postgres, Running, Store, caught_up, produce, read_to_end};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// How long a test waits for work to be done.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: i64,
    amount_cents: i64,
}

// ANCHOR: handler
/// Records each order with the header `source` it came with.
#[derive(Debug, exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let source = message.header("source").map(|v| String::from_utf8_lossy(v).into_owned());
        sqlx::query("INSERT INTO orders (id, customer, source) VALUES ($1, $2, $3)")
            .bind(message.payload.id)
            .bind(&message.key)
            .bind(source)
            .execute(cx.db())
            .await?;
        Ok(())
    }
}
// ANCHOR_END: handler

// ANCHOR: in_process
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_recorded_with_their_customer_and_source() -> anyhow::Result<()> {
    // One broker and one PostgreSQL for the whole test binary; a fresh database per test.
    let kafka = Kafka::shared().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    sqlx::query("CREATE TABLE orders (id BIGINT NOT NULL, customer TEXT NOT NULL, source TEXT)").execute(&pool).await?;
    kafka.create_topic("orders", 2).await?;

    let orders = (0..100).map(|id| {
        let order = Order { id, amount_cents: 100 * id };
        Input::json(&order).map(|input| input.key(format!("customer-{}", id % 7)).header("source", "web"))
    });
    produce(&kafka.client_config(), "orders", orders.collect::<Result<Vec<_>, _>>()?).await?;

    let runtime = Runtime::builder().database_url(&database.url).handler(RecordOrders);
    let running = Running::start(kafka, runtime).await?;
    // Every partition's stored position at its end: every order recorded, none to come.
    caught_up(kafka, Store::Database(&pool), "order-recorder", "orders", WAIT).await?;
    let reported = running.reported.clone();
    running.stop().await?;

    assert_eq!(recorded(&pool, "SELECT count(*) FROM orders").await?, 100);
    assert_eq!(recorded(&pool, "SELECT count(DISTINCT id) FROM orders").await?, 100);
    assert_eq!(recorded(&pool, "SELECT count(*) FROM orders WHERE source = 'web'").await?, 100);
    assert_eq!(recorded(&pool, "SELECT count(*) FROM orders WHERE customer = 'customer-' || id % 7").await?, 100);
    assert!(reported.all().is_empty(), "errors or dead letters: {:?}", reported.all());
    Ok(())
}
// ANCHOR_END: in_process

/// The count `query` returns.
async fn recorded(pool: &PgPool, query: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(query).fetch_one(pool).await?)
}

/// Turns each order into an invoice on `invoices`, in the transaction that consumes it.
#[derive(Debug, exactly::Handler)]
#[exactly(topic = "invoice-orders", group = "invoicer", payload = Order, key = String, mode = kafka, outputs = ["invoices"])]
struct Invoicer;

#[exactly::async_trait]
impl Handler for Invoicer {
    async fn handle(
        &self,
        message: &Message<String, Order>,
        cx: &mut Context<'_, KafkaMode>,
    ) -> Result<(), HandlerError> {
        let invoice = serde_json::json!({ "order": message.payload.id, "total": message.payload.amount_cents * 2 });
        cx.emit(Output::to("invoices").key(message.key.as_deref().unwrap_or_default()).json(&invoice)?);
        Ok(())
    }
}

// ANCHOR: kafka_mode
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_has_one_committed_invoice() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    kafka.create_topic("invoice-orders", 2).await?;
    kafka.create_topic("invoices", 2).await?;
    let orders = (0..50).map(|id| Input::json(&Order { id, amount_cents: id }).map(|input| input.key("c")));
    produce(&kafka.client_config(), "invoice-orders", orders.collect::<Result<Vec<_>, _>>()?).await?;

    let runtime = Runtime::builder().transactional_id("invoicer-test").handler(Invoicer);
    let running = Running::start(kafka, runtime).await?;
    caught_up(kafka, Store::Kafka, "invoicer", "invoice-orders", WAIT).await?;
    running.stop().await?;

    // What a read_committed consumer downstream sees: aborted transactions are not there.
    let invoices = read_to_end(kafka.client_config(), "invoices", Isolation::ReadCommitted, WAIT).await?;
    let mut orders: Vec<i64> = invoices
        .iter()
        .filter_map(|record| serde_json::from_slice::<serde_json::Value>(record.payload.as_deref()?).ok())
        .filter_map(|invoice| invoice["order"].as_i64())
        .collect();
    orders.sort_unstable();
    assert_eq!(orders, (0..50).collect::<Vec<_>>(), "each order has one invoice");
    Ok(())
}
// ANCHOR_END: kafka_mode
