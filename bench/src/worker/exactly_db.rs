//! exactly in Database mode, writing the bench table through `cx.db()` in the transaction
//! that stores the position: as a per-message [`Handler`] (one `INSERT` per message, S1),
//! or as a [`BatchHandler`] that writes each batch with one statement (S7): `INSERT …
//! UNNEST` through the baselines' own [`RowWriter`], or binary `COPY` built with exactly's
//! [`BinaryCopy`], as a user of exactly would write it. S8's handler is the per-message one
//! waiting 1 ms before its `INSERT` (as I/O would), sequential or with key concurrency.

use std::time::Duration;

use exactly::bulk::BinaryCopy;
use exactly::codec::Bytes;
use exactly::mode::Database;
use exactly::{
    Batch, BatchError, BatchHandler, Consumes, Context, Delivery, Handler, HandlerError, Message, Runtime, Subscription,
};

use super::WorkerSpec;
use super::rows::{RowWriter, Statement, copy_bytes};

/// A message of the bench's input, as exactly gives it to a handler (a row to write, see
/// [`super::rows::RowFields`]).
type InputMessage = Message<Vec<u8>, bytes::Bytes>;

/// Writes the messages into the bench table: one at a time as a [`Handler`], a batch at a
/// time as a [`BatchHandler`] (registered as one or the other, never both).
#[derive(Debug)]
struct TableWriter {
    input: String,
    group: String,
    /// How long the per-message handler waits per message (S6's smoke runs, S8's I/O).
    delay: Duration,
    /// Messages of a partition in flight at once, never two of one key (1: sequential).
    key_concurrency: usize,
    /// The table's statement: per-row `INSERT` for the per-message handler, the batch
    /// handler's statement otherwise.
    rows: RowWriter,
}

impl Consumes for TableWriter {
    type Key = Vec<u8>;
    type Payload = bytes::Bytes;
    type Codec = Bytes;
    type Mode = Database;

    fn subscription(&self) -> Subscription {
        let subscription = Subscription::new([self.input.clone()], self.group.clone(), Delivery::PointToPoint);
        // Sequential runs leave the setting alone, so that S1–S7 measure the path they always did.
        if self.key_concurrency > 1 { subscription.with_key_concurrency(self.key_concurrency) } else { subscription }
    }
}

#[exactly::async_trait]
impl Handler for TableWriter {
    async fn handle(&self, message: &InputMessage, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.rows.write(cx.db(), std::slice::from_ref(&message)).await?;
        Ok(())
    }
}

#[exactly::async_trait]
impl BatchHandler for TableWriter {
    async fn handle_batch(&self, messages: &[&InputMessage], cx: &mut Context<'_>) -> Result<(), BatchError> {
        if self.rows.statement() == Statement::Copy {
            let mut copy = BinaryCopy::with_capacity(copy_bytes(messages));
            for message in messages {
                copy.row().int4(message.partition).int8(message.offset).bytea(&message.payload);
            }
            copy.send(cx.db(), self.rows.sql()).await?;
        } else {
            self.rows.write(cx.db(), messages).await?;
        }
        Ok(())
    }
}

/// Runs exactly until stopped: with a per-message handler when `batch_statement` is
/// `None`, otherwise with a batch handler writing each batch with that statement. Either
/// way up to `spec.batch` messages per transaction and `spec.concurrency` transactions at
/// once (`max_concurrent_batches`, as many as the baselines' connections), and
/// `spec.key_concurrency` messages of a partition in flight; in `spec.group_protocol`'s
/// consumer group.
pub(super) async fn run(spec: &WorkerSpec, batch_statement: Option<Statement>) -> anyhow::Result<()> {
    let writer = TableWriter {
        input: spec.input.clone(),
        group: spec.group.clone(),
        delay: Duration::from_micros(spec.handler_delay_us),
        key_concurrency: spec.key_concurrency,
        rows: RowWriter::new(&spec.table, batch_statement.unwrap_or(Statement::PerRow))?,
    };
    let batch = Batch::default().max_records(spec.batch).max_wait(Duration::from_millis(spec.batch_wait_ms));
    let batch = if spec.batch == 1 { Batch::single() } else { batch };
    let builder = Runtime::builder()
        .brokers(&spec.brokers)
        .database_url(&spec.database_url)
        .batch(batch)
        .max_concurrent_batches(spec.concurrency)
        .group_protocol(spec.group_protocol.into())
        .on_error(|e| eprintln!("exactly-bench worker: {e}"));
    let mut builder = match batch_statement {
        Some(_) => builder.batch_handler(writer),
        None => builder.handler(writer),
    };
    for (key, value) in spec.membership_settings() {
        builder = builder.kafka_setting(key, value);
    }
    builder.build().await?.run().await?;
    Ok(())
}
