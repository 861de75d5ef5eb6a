#[derive(exactly::Handler)]
struct RecordOrders;

fn main() {}
