#[derive(exactly::Handler)]
#[exactly(topics = [], group = "recorder", payload = String, codec = utf8)]
struct RecordOrders;

fn main() {}
