#[derive(exactly::Handler)]
#[exactly(group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
