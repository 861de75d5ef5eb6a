#[derive(exactly::Handler)]
#[exactly(topic = "orders", group = "invoicer", payload = String, codec = utf8, mode = kafka, outputs = ["in voices"])]
struct Invoicer;

fn main() {}
