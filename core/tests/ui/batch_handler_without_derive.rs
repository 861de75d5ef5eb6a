use exactly::{BatchError, BatchHandler, Context, Message};

struct RecordOrders;

#[exactly::async_trait]
impl BatchHandler for RecordOrders {
    async fn handle_batch(&self, _: &[&Message<Vec<u8>, String>], _: &mut Context<'_>) -> Result<(), BatchError> {
        Ok(())
    }
}

fn main() {}
