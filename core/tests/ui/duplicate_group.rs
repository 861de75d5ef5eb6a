#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", group = "other", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
