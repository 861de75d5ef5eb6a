#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = utf8, key = u64)]
struct RecordOrders;

fn main() {}
