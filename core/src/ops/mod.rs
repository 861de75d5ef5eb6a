//! What operators watch while a runtime runs: its metrics (with the lag of every owned
//! partition), its health, and the HTTP server that serves both.

pub(crate) mod health;
pub(crate) mod http;
pub mod metrics;
