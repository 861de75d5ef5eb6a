#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = bytes)]
struct RecordOrders;

fn main() {}
