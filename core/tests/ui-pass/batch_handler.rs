//! A batch handler writing with `UNNEST` and with binary `COPY` (its batches from up to 16
//! lanes per partition), registered beside a per-message handler in one runtime.
use exactly::bulk::BinaryCopy;
use exactly::{BatchError, BatchHandler, Context, Handler, HandlerError, Message, Runtime};

#[derive(serde::Deserialize)]
struct Reading {
    sensor: i64,
    value: f64,
}

#[derive(exactly::Handler)]
#[exactly(topic = "readings", group = "reading-recorder", payload = Reading, key_concurrency = 16)]
struct RecordReadings;

#[exactly::async_trait]
impl BatchHandler for RecordReadings {
    async fn handle_batch(&self, messages: &[&Message<Vec<u8>, Reading>], cx: &mut Context<'_>) -> Result<(), BatchError> {
        let sensors: Vec<i64> = messages.iter().map(|m| m.payload.sensor).collect();
        let values: Vec<f64> = messages.iter().map(|m| m.payload.value).collect();
        if values.iter().any(|v| v.is_nan()) {
            let at = values.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(BatchError::at(at, HandlerError::permanent("not a number")));
        }
        sqlx::query("INSERT INTO readings (sensor, value) SELECT * FROM UNNEST($1::int8[], $2::float8[])")
            .bind(&sensors)
            .bind(&values)
            .execute(cx.db())
            .await?;
        let mut copy = BinaryCopy::new();
        for message in messages {
            copy.row().int8(message.payload.sensor).float8(message.payload.value).null();
        }
        copy.send(cx.db(), "COPY readings_log (sensor, value, note) FROM STDIN (FORMAT binary)").await?;
        Ok(())
    }
}

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "order-recorder", payload = String, codec = utf8)]
struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, _: &Message<Vec<u8>, String>, _: &mut Context<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {
    let _ = Runtime::builder().handler(RecordOrders).batch_handler(RecordReadings);
}
