struct Order {
    id: u64,
}

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "recorder", payload = Order)]
struct RecordOrders;

fn main() {
    let _ = Order { id: 1 }.id;
}
