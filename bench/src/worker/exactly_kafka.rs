//! exactly in Kafka mode: copies every record (key and payload) to the output topic in the
//! Kafka transaction that commits the input offsets. Key and payload are decoded as
//! `bytes::Bytes`, so the emitted record shares their buffers instead of copying them. Like
//! the baseline, it does not read the records' headers, and says so
//! (`Subscription::without_headers`), which saves librdkafka's parse of them.

use std::time::Duration;

use exactly::bytes::Bytes;
use exactly::codec;
use exactly::mode::Kafka;
use exactly::{Consumes, Context, Delivery, Handler, HandlerError, Message, Output, Runtime, Subscription};

use super::WorkerSpec;

/// Copies every record of `input` to `output`.
#[derive(Debug)]
struct Copy {
    input: String,
    output: String,
    group: String,
    delay: Duration,
}

impl Consumes for Copy {
    type Key = Bytes;
    type Payload = Bytes;
    type Codec = codec::Bytes;
    type Mode = Kafka;

    fn subscription(&self) -> Subscription {
        Subscription::new([self.input.clone()], self.group.clone(), Delivery::PointToPoint)
            .with_outputs([self.output.clone()])
            .without_headers()
    }
}

#[exactly::async_trait]
impl Handler for Copy {
    async fn handle(&self, message: &Message<Bytes, Bytes>, cx: &mut Context<'_, Kafka>) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut record = Output::to(&self.output).payload(&message.payload);
        if let Some(key) = &message.key {
            record = record.key(key);
        }
        cx.emit(record);
        Ok(())
    }
}

pub(super) async fn run(spec: &WorkerSpec) -> anyhow::Result<()> {
    let handler = Copy {
        input: spec.input.clone(),
        output: spec.output.clone(),
        group: spec.group.clone(),
        delay: Duration::from_micros(spec.handler_delay_us),
    };
    let mut builder = Runtime::builder()
        .brokers(&spec.brokers)
        .transactional_id(format!("{}-tx", spec.group))
        .commit_interval(Duration::from_millis(spec.commit_interval_ms))
        .group_protocol(spec.group_protocol.into())
        .on_error(|e| eprintln!("exactly-bench worker: {e}"))
        .handler(handler);
    for (key, value) in spec.membership_settings() {
        builder = builder.kafka_setting(key, value);
    }
    builder.build().await?.run().await?;
    Ok(())
}
