use exactly::{BatchError, BatchHandler, Context, Message, Runtime};

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

#[exactly::async_trait]
impl BatchHandler for RecordOrders {
    async fn handle_batch(&self, _: &[&Message<Vec<u8>, String>], _: &mut Context<'_>) -> Result<(), BatchError> {
        Ok(())
    }
}

fn main() {
    let _ = Runtime::builder().handler(RecordOrders);
}
