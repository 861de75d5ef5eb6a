//! exactly in Database mode: one insert per message through `cx.db()`, committed with the
//! stored position.

use std::time::Duration;

use exactly::codec::Bytes;
use exactly::mode::Database;
use exactly::{Batch, Consumes, Context, Delivery, Handler, HandlerError, Message, Runtime, Subscription};

use super::{WorkerSpec, insert_sql};

/// Inserts every message into the bench table.
#[derive(Debug)]
struct InsertEach {
    input: String,
    group: String,
    delay: Duration,
    insert: String,
}

impl Consumes for InsertEach {
    type Key = Vec<u8>;
    type Payload = Vec<u8>;
    type Codec = Bytes;
    type Mode = Database;

    fn subscription(&self) -> Subscription {
        Subscription::new([self.input.clone()], self.group.clone(), Delivery::PointToPoint)
    }
}

#[exactly::async_trait]
impl Handler for InsertEach {
    async fn handle(&self, message: &Message<Vec<u8>, Vec<u8>>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        sqlx::query(sqlx::AssertSqlSafe(self.insert.as_str()))
            .bind(message.partition)
            .bind(message.offset)
            .bind(message.payload.as_slice())
            .execute(cx.db())
            .await?;
        Ok(())
    }
}

pub(super) async fn run(spec: &WorkerSpec) -> anyhow::Result<()> {
    let handler = InsertEach {
        input: spec.input.clone(),
        group: spec.group.clone(),
        delay: Duration::from_micros(spec.handler_delay_us),
        insert: insert_sql(&spec.table)?,
    };
    let batch = Batch::default().max_records(spec.batch).max_wait(Duration::from_millis(spec.batch_wait_ms));
    let batch = if spec.batch == 1 { Batch::single() } else { batch };
    let mut builder = Runtime::builder()
        .brokers(&spec.brokers)
        .database_url(&spec.database_url)
        .batch(batch)
        .max_concurrent_batches(spec.concurrency)
        .kafka_setting("session.timeout.ms", spec.session_timeout_ms.to_string())
        .on_error(|e| eprintln!("exactly-bench worker: {e}"))
        .handler(handler);
    if let Some(instance) = &spec.instance {
        builder = builder.kafka_setting("group.instance.id", instance);
    }
    builder.build().await?.run().await?;
    Ok(())
}
