//! The kit's crash check, used as a user would use it: a handler that writes its effect in
//! the transaction that stores its position passes under ten kills, and one that writes it
//! outside fails the check.

use std::time::Duration;

use exactly::{Context, Handler, HandlerError, Message, Runtime};
use exactly_testkit::{CrashTest, Error, Input, Sent};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// An order, keyed by customer.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
}

// ANCHOR: handler
/// Records each order in `orders`, through the context's transaction: the row commits with
/// the consumer position, or not at all.
#[derive(Debug, exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let order = &message.payload;
        // Stands for the I/O a real handler does, so kills land while work is in flight.
        tokio::time::sleep(Duration::from_millis(1)).await;
        sqlx::query("INSERT INTO orders (id, customer) VALUES ($1, $2)")
            .bind(order.id)
            .bind(&order.customer)
            .execute(cx.db())
            .await?;
        Ok(())
    }
}
// ANCHOR_END: handler

/// Records each order through a pool of its own: the row commits at once, before the
/// position, so a kill in between makes the order's redelivery record it again.
#[derive(Debug, exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
struct RecordOrdersOutside {
    pool: PgPool,
}

#[exactly::async_trait]
impl Handler for RecordOrdersOutside {
    async fn handle(&self, message: &Message<String, Order>, _cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let order = &message.payload;
        tokio::time::sleep(Duration::from_millis(1)).await;
        sqlx::query("INSERT INTO orders (id, customer) VALUES ($1, $2)")
            .bind(order.id)
            .bind(&order.customer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

// ANCHOR: schema
/// No unique constraint on `id`: an order recorded twice must be two rows the check
/// counts, not an error that hides it. `applied` numbers the rows in the order written.
async fn create_orders(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE orders (id BIGINT NOT NULL, customer TEXT NOT NULL, applied BIGSERIAL)")
        .execute(pool)
        .await?;
    Ok(())
}

/// 3 000 orders of 40 customers.
fn orders() -> anyhow::Result<Vec<Input>> {
    (0..3_000)
        .map(|id| {
            let customer = format!("customer-{}", id % 40);
            Ok(Input::json(&Order { id, customer: customer.clone() })?.key(customer))
        })
        .collect()
}

/// The order an input carries: the effect it should leave.
fn order_id(sent: &Sent) -> i64 {
    sent.json::<Order>().map_or(-1, |order| order.id)
}
// ANCHOR_END: schema

// ANCHOR: crash_test
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_recorded_once_in_customer_order_under_ten_kills() -> anyhow::Result<()> {
    // First: in the worker processes the test starts, this runs the handler instead.
    let test = CrashTest::start(|_| Runtime::builder().handler(RecordOrders))
        .await?
        .topic("orders", 4)
        .group("order-recorder")
        .kills(10);
    create_orders(test.pool()).await?;

    let report = test.run(orders()?).await?;

    let applied: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders ORDER BY applied").fetch_all(test.pool()).await?;
    assert_eq!(report.kills(), 10);
    report.each_once(order_id, applied.iter().copied())?;
    report.in_key_order(order_id, applied)?;
    Ok(())
}
// ANCHOR_END: crash_test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_writes_outside_the_position_transaction_fails_the_check() -> anyhow::Result<()> {
    let test = CrashTest::start(|worker| {
        let pool = PgPoolOptions::new().max_connections(4).connect_lazy(worker.database_url());
        Runtime::builder().handler(RecordOrdersOutside { pool: pool.expect("a valid database URL") })
    })
    .await?
    .topic("orders", 4)
    .group("order-recorder")
    .kills(10);
    create_orders(test.pool()).await?;

    let report = test.run(orders()?).await?;

    let applied: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders").fetch_all(test.pool()).await?;
    match report.each_once(order_id, applied) {
        Err(error @ Error::NotExactlyOnce { duplicated, missing: 0, unexpected: 0, .. }) if duplicated > 0 => {
            println!("the check found what it should: {error}");
            Ok(())
        }
        other => panic!("the check should find orders recorded twice, and nothing else: {other:?}"),
    }
}
