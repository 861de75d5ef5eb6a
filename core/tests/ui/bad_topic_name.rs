#[derive(exactly::Handler)]
#[exactly(topics = ["orders", "new orders"], group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
