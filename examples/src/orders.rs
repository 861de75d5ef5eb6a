//! The orders domain of the demo: orders arrive on Kafka keyed by customer, and each is
//! recorded once in PostgreSQL.

use exactly::{Context, Handler, HandlerError, Message};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::failures::FailureLog;
use crate::fault::Fault;

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
#[derive(Debug, Clone, Copy, Default, exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
pub struct RecordOrders {
    /// **Tests only**: a fault put in on purpose, to show that the demo's check fails then
    /// ([`Fault`]). `None` everywhere else.
    pub fault: Option<Fault>,
}

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let order = &message.payload;
        match self.fault {
            Some(Fault::Reject(id)) if id == order.id => {
                return Err(HandlerError::permanent(format!("order {id} rejected on purpose (test fault)")));
            }
            Some(Fault::ApplyTwice) => insert(cx.db(), order).await?,
            _ => {}
        }
        insert(cx.db(), order).await?;
        Ok(())
    }
}

/// Inserts `order` into `orders` through `db`. Nothing refuses a second copy: the demo
/// counts copies instead, so a duplicate shows rather than turning into an error.
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

/// Creates the `orders` table afresh (an older one is dropped: it may have had a key that
/// would refuse a duplicate). No constraint on `id`, so a duplicate is a second row the
/// check counts; `applied` records the order in which rows were written.
pub async fn create_schema(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS orders").execute(pool).await?;
    sqlx::query(
        "CREATE TABLE orders (
            id BIGINT NOT NULL,
            customer TEXT NOT NULL,
            seq INTEGER NOT NULL,
            amount_cents BIGINT NOT NULL,
            applied BIGSERIAL NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    // Not unique: it speeds up the check's lookups without absorbing a duplicate.
    sqlx::query("CREATE INDEX orders_by_id ON orders (id)").execute(pool).await?;
    Ok(())
}

/// How many distinct orders `orders` holds (a duplicate counted once).
pub async fn recorded(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(DISTINCT id) FROM orders").fetch_one(pool).await?)
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

/// What the database holds, checked against what was published, and what went wrong on
/// the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Orders published.
    pub published: i64,
    /// Rows in `orders`.
    pub rows: i64,
    /// Rows beyond one per order id: copies of an order applied more than once.
    pub duplicates: i64,
    /// Published orders with no row.
    pub missing: i64,
    /// Rows applied before an earlier order of the same customer.
    pub out_of_order: i64,
    /// Messages of the handler's group in `exactly.dead_letters`.
    pub dead_letters: i64,
    /// Handler failures the runtime reported (see [`FailureLog`]).
    pub handler_failures: i64,
}

impl Verdict {
    /// Nothing lost, nothing doubled, every customer's orders in order, and nothing failed
    /// on the way.
    pub fn exact(&self) -> bool {
        self.rows == self.published
            && self.duplicates == 0
            && self.missing == 0
            && self.out_of_order == 0
            && self.dead_letters == 0
            && self.handler_failures == 0
    }
}

/// Checks the database on its own against the `published` orders `0..published`, with
/// the dead letters of `group` and the handler failures in `failures`.
pub async fn verify(pool: &PgPool, published: i64, group: &str, failures: &FailureLog) -> anyhow::Result<Verdict> {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM orders").fetch_one(pool).await?;
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
    Ok(Verdict {
        published,
        rows,
        duplicates: rows - distinct,
        missing,
        out_of_order,
        dead_letters: i64::try_from(exactly::dead_letters::list(pool, group).await?.len())?,
        handler_failures: i64::try_from(failures.count()?)?,
    })
}

impl std::fmt::Display for Verdict {
    /// One line per figure, as the examples print it and their test reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "messages in: {}", self.published)?;
        writeln!(f, "rows written: {}", self.rows)?;
        writeln!(f, "duplicates: {}", self.duplicates)?;
        writeln!(f, "missing: {}", self.missing)?;
        writeln!(f, "out of order: {}", self.out_of_order)?;
        writeln!(f, "dead letters: {}", self.dead_letters)?;
        write!(f, "handler failures: {}", self.handler_failures)
    }
}
