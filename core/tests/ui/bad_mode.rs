#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = String, codec = utf8, mode = both)]
struct RecordOrders;

fn main() {}
