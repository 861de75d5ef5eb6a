#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder")]
struct RecordOrders;

fn main() {}
