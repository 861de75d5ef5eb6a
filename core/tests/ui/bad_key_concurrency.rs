#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "g", payload = String, codec = utf8, key_concurrency = 0)]
struct NoLanes;

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "g", payload = String, codec = utf8, key_concurrency = 5000)]
struct TooManyLanes;

fn main() {}
