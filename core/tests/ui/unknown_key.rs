#[derive(exactly::Handler)]
#[exactly(topik = "orders", group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
