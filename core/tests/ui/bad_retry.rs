#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "g", payload = String, codec = utf8, retry(attempts = 0))]
struct ZeroAttempts;

#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "g", payload = String, codec = utf8, retry(tries = 3))]
struct UnknownPart;

fn main() {}
