//! What users implement and see: the [`Handler`](handler::Handler) and
//! [`BatchHandler`](batch::BatchHandler) traits and what they are given (the message, its codecs, the context its effects go through), the records it
//! emits, its subscription, the modes, and the settings of batches and retries.
//!
//! Nothing here knows how messages are consumed or committed; the modes' loops
//! (`database_mode`, `kafka_mode`) are reached through [`mode::Mode::visit`].

pub(crate) mod batch;
pub mod bulk;
pub mod codec;
pub(crate) mod context;
pub(crate) mod handler;
pub(crate) mod message;
pub mod mode;
pub(crate) mod output;
pub(crate) mod settings;
pub(crate) mod subscription;
