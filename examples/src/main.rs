//! The main demo of exactly: orders flow from Kafka into PostgreSQL while the processing
//! process is killed with SIGKILL again and again; afterwards every order is there once.

fn main() {
    println!(
        "exactly demo: not there yet. The crash-and-recover demo arrives with the core runtime \
         (the Handler trait and the PostgreSQL offset store). Run `scripts/test` to see the test \
         bed work against real Kafka and PostgreSQL."
    );
}
