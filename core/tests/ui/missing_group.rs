#[derive(exactly::Handler)]
#[exactly(topic = "orders", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
