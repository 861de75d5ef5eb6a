#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", delivery = broadcast, payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
