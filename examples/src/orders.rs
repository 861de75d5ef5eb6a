//! The orders domain of the demo: orders arrive on Kafka keyed by customer, and each is
//! recorded once in PostgreSQL.

use exactly::{Context, Handler, HandlerError, Message};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The topic orders arrive on.
pub const TOPIC: &str = "orders";
/// How many partitions it has.
pub const PARTITIONS: i32 = 4;

/// An order as published on Kafka (JSON), keyed by `customer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Unique order number.
    pub id: i64,
    /// The customer: the Kafka key, so a customer's orders stay in order.
    pub customer: String,
    /// The order's number within its customer's orders, from 0.
    pub seq: i32,
    /// Amount in cents.
    pub amount_cents: i64,
}

/// Records each order in `orders`, in the transaction that stores the consumer position:
/// after any crash, each order is in the table exactly once.
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
pub struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        insert(cx.db(), &message.payload).await?;
        Ok(())
    }
}

/// Inserts `order` into `orders` through `db` (the primary key refuses a second copy).
pub async fn insert(db: &mut sqlx::PgConnection, order: &Order) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO orders (id, customer, seq, amount_cents) VALUES ($1, $2, $3, $4)")
        .bind(order.id)
        .bind(&order.customer)
        .bind(order.seq)
        .bind(order.amount_cents)
        .execute(db)
        .await?;
    Ok(())
}

/// Creates the `orders` table: the primary key refuses a second copy of an order, and
/// `applied` records the order in which rows were written.
pub async fn create_schema(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders (
            id BIGINT PRIMARY KEY,
            customer TEXT NOT NULL,
            seq INTEGER NOT NULL,
            amount_cents BIGINT NOT NULL,
            applied BIGSERIAL NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The `n` orders the demo publishes: `customers` customers, round robin.
pub fn make_orders(n: i64, customers: i64) -> Vec<Order> {
    (0..n)
        .map(|id| Order {
            id,
            customer: format!("customer-{}", id % customers),
            seq: i32::try_from(id / customers).unwrap_or(i32::MAX),
            amount_cents: 100 + (id * 37) % 10_000,
        })
        .collect()
}

/// What the database holds, checked against what was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Orders published.
    pub published: i64,
    /// Rows in `orders`.
    pub rows: i64,
    /// Orders with more than one row (the primary key makes this 0 unless it was dropped).
    pub duplicates: i64,
    /// Published orders with no row.
    pub missing: i64,
    /// Rows applied before an earlier order of the same customer.
    pub out_of_order: i64,
}

impl Verdict {
    /// Nothing lost, nothing doubled, every customer's orders in order.
    pub fn exact(&self) -> bool {
        self.rows == self.published && self.duplicates == 0 && self.missing == 0 && self.out_of_order == 0
    }
}

/// Checks the database on its own against the `published` orders `0..published`.
pub async fn verify(pool: &PgPool, published: i64) -> anyhow::Result<Verdict> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(pool).await?;
    let duplicates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT id FROM orders GROUP BY id HAVING count(*) > 1) d")
            .fetch_one(pool)
            .await?;
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generate_series(0, $1 - 1) AS s(id) WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = s.id)",
    )
    .bind(published)
    .fetch_one(pool)
    .await?;
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY customer ORDER BY applied) AS prev FROM orders) t
         WHERE prev IS NOT NULL AND seq <= prev",
    )
    .fetch_one(pool)
    .await?;
    Ok(Verdict { published, rows, duplicates, missing, out_of_order })
}
