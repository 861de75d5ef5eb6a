use exactly::{Consumes, Context, Delivery, Handler, HandlerError, Message};

#[derive(serde::Deserialize)]
struct Order {
    id: i64,
}

/// Every attribute, spelled out.
#[derive(exactly::Handler)]
#[exactly(
    topics = ["orders", "order-corrections"],
    group = "order-recorder",
    delivery = publish_subscribe,
    payload = Order,
    codec = json,
    key = String,
    retry(attempts = 3, backoff_ms = 250, max_backoff_ms = 10_000),
    key_parking,
    dead_letter_topic = "orders.dead-letters",
    without_headers,
)]
struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        sqlx::query("SELECT $1").bind(message.payload.id).execute(cx.db()).await?;
        Ok(())
    }
}

/// Defaults: point-to-point, JSON, raw key; generics work.
#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "audit", payload = serde_json::Value)]
struct Audit<T: Send + Sync + 'static> {
    _marker: std::marker::PhantomData<T>,
}

/// A codec of your own.
struct Decimal;
impl exactly::codec::Codec<u64> for Decimal {
    fn decode(payload: Option<&[u8]>) -> Result<u64, exactly::codec::DecodeError> {
        Ok(std::str::from_utf8(payload.unwrap_or_default())?.parse()?)
    }
}

#[derive(exactly::Handler)]
#[exactly(topic = "counts", group = "summer", payload = u64, codec = Decimal, key = ())]
struct Sum;

/// Kafka mode: emits records in the transaction that commits the input offsets.
#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "invoicer", payload = Order, mode = kafka, outputs = ["invoices"])]
struct Invoicer;

#[exactly::async_trait]
impl Handler for Invoicer {
    async fn handle(&self, message: &Message<Vec<u8>, Order>, cx: &mut Context<'_, exactly::mode::Kafka>) -> Result<(), HandlerError> {
        cx.emit(exactly::Output::to("invoices").payload(message.payload.id.to_string()));
        Ok(())
    }
}

fn main() {
    assert_eq!(Invoicer.subscription().outputs(), ["invoices"]);
    let subscription = RecordOrders.subscription();
    assert_eq!(subscription.topics(), ["orders", "order-corrections"]);
    assert_eq!(subscription.group(), "order-recorder");
    assert_eq!(subscription.delivery(), Delivery::PublishSubscribe);
    let policy = exactly::RetryPolicy::default()
        .max_attempts(3)
        .initial_backoff(std::time::Duration::from_millis(250))
        .max_backoff(std::time::Duration::from_secs(10));
    assert_eq!(subscription.retry(), Some(policy));
    assert!(subscription.key_parking());
    assert_eq!(subscription.dead_letter_topic(), Some("orders.dead-letters"));
    assert!(!subscription.reads_headers());
    assert!(Sum.subscription().reads_headers());
    assert_eq!(Sum.subscription().retry(), None);
    assert!(!Sum.subscription().key_parking());
    let audit = Audit::<u8> { _marker: std::marker::PhantomData }.subscription();
    assert_eq!(audit.delivery(), Delivery::PointToPoint);
    assert_eq!(Sum.subscription().topics(), ["counts"]);
    let _: fn() -> Option<Vec<u8>> = || None::<<Audit<u8> as Consumes>::Key>;
}
