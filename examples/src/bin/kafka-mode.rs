//! Kafka mode: consume, transform, produce.
//!
//! **Guarantee shown:** each order read from `orders-in` produces exactly one invoice on
//! `invoices`, as seen by `read_committed` readers: the invoice and the order's offset
//! commit in one Kafka transaction (KIP-447), so a crash or a rebalance can neither lose
//! an invoice nor write it twice. No database is involved.
//!
//! Runs against a container, or against `EXACTLY_BROKERS`:
//!
//! ```text
//! cargo run -p exactly-examples --bin kafka-mode
//! ```

use std::time::Duration;

use exactly::mode::Kafka;
use exactly::{Context, Handler, HandlerError, Message, Output, Runtime};
use exactly_examples::environment::{Environment, read_committed_ids};
use exactly_examples::orders::{Order, make_orders};
use rdkafka::producer::{FutureProducer, FutureRecord};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let environment = Environment::start_kafka_only().await?;
    environment.create_topic("orders-in", 3).await?;
    environment.create_topic("invoices", 3).await?;

    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &environment.brokers).create()?;
    for order in make_orders(ORDERS, 25) {
        let payload = serde_json::to_vec(&order)?;
        producer
            .send(FutureRecord::to("orders-in").key(&order.customer).payload(&payload), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }

    let runtime = Runtime::builder()
        .brokers(environment.brokers.clone())
        .transactional_id("invoicer-1") // stable per instance
        .handler(Invoicer)
        .build()
        .await?;
    let stop = runtime.shutdown_handle();
    let running = tokio::spawn(runtime.run_until(std::future::pending()));

    // Read the invoices as a downstream service would: read_committed only.
    let (invoices, orders_invoiced) = read_committed_ids(&environment.brokers, "invoices", "order", ORDERS).await?;
    stop.shutdown();
    running.await??;

    println!(
        "orders: {ORDERS}, invoices read (read_committed): {invoices}, distinct orders invoiced: {}",
        orders_invoiced.len()
    );
    anyhow::ensure!(
        invoices == ORDERS && orders_invoiced.len() as i64 == ORDERS,
        "an invoice was lost or written twice"
    );
    println!("KAFKA MODE: one invoice per order, exactly once");
    Ok(())
}
