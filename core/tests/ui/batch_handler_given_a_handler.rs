use exactly::{Context, Handler, HandlerError, Message, Runtime};

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

#[exactly::async_trait]
impl Handler for RecordOrders {
    async fn handle(&self, _: &Message<Vec<u8>, String>, _: &mut Context<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {
    let _ = Runtime::builder().batch_handler(RecordOrders);
}
