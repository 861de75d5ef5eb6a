use exactly::{BatchError, BatchHandler, Context, Message};

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

#[exactly::async_trait]
impl BatchHandler for RecordOrders {
    async fn handle_batch(&self, _: Vec<Message<Vec<u8>, String>>, _: &mut Context<'_>) -> Result<(), BatchError> {
        Ok(())
    }
}

fn main() {}
