//! # exactly
//!
//! Process Kafka messages exactly once: each consumer position is stored in PostgreSQL in
//! the same transaction as the handler's writes.
//!
//! ```no_run
//! use exactly::{Context, Handler, HandlerError, Message, Runtime};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: i64, amount_cents: i64 }
//!
//! /// Records every order once, whatever crashes or rebalances happen.
//! #[derive(exactly::Handler)]
//! #[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
//! struct RecordOrders;
//!
//! #[exactly::async_trait]
//! impl Handler for RecordOrders {
//!     async fn handle(&self, message: &Message<String, Order>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
//!         sqlx::query("INSERT INTO orders (id, amount_cents) VALUES ($1, $2)")
//!             .bind(message.payload.id)
//!             .bind(message.payload.amount_cents)
//!             .execute(cx.db())
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn main_() -> exactly::Result<()> {
//! Runtime::builder()
//!     .brokers("localhost:9092")
//!     .database_url("postgres://app@localhost/app")
//!     .handler(RecordOrders)
//!     .build()
//!     .await?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! ## What is guaranteed, and where it stops
//!
//! Everything a handler writes through [`Context::db`] commits in one PostgreSQL transaction
//! with the new position of its partition, or not at all; each partition is claimed with an
//! epoch on assignment, and a commit from an instance that lost it fails. So after any crash,
//! rebalance or retry, each message's database effects are there exactly once, in partition
//! order. What a handler does outside that transaction (an HTTP call, an e-mail, a write to
//! another database) is not covered: it can happen more than once.

mod admin;
mod api;
mod database_mode;
mod engine;
mod error;
mod failpoint;
mod kafka;
mod kafka_mode;
mod ops;
pub mod outbox;
mod pipeline;
pub mod redact;
mod runtime;
mod store;

pub use admin::{dead_letters, offsets};
pub use api::batch::{BatchError, BatchHandler};
pub use api::bulk;
pub use api::codec;
pub use api::context::Context;
pub use api::handler::{Consumes, Handler, HandlerError};
pub use api::message::Message;
pub use api::mode;
pub use api::output::{Output, OutputBytes};
pub use api::settings::{Batch, RetryPolicy, StartFrom};
pub use api::subscription::{Delivery, Subscription};
pub use async_trait::async_trait;
/// The [`bytes`](https://docs.rs/bytes) crate, for payloads and keys shared without a copy.
pub use bytes;
pub use error::{Error, ErrorClass, KafkaResource, Location, Result};
#[doc(hidden)]
pub use kafka::check::check_kafka;
pub use kafka::environment::{KAFKA_ENV_PREFIX, kafka_settings_from_env};
pub use kafka::group_protocol::GroupProtocol;
pub use offsets::migrate;
pub use ops::health::{Health, HealthStatus};
pub use ops::metrics;
pub use pipeline::dead_letter::DeadLettered;
pub use runtime::{Runtime, RuntimeBuilder, ShutdownHandle};

#[cfg(feature = "derive")]
pub use exactly_macros::Handler;

#[doc(hidden)]
pub mod __private {
    pub use crate::api::codec::{Bytes, Codec, Json, Key, Utf8};

    /// Stands in for the codec of a handler whose `#[exactly(...)]` has errors, so the
    /// compiler reports those errors alone. Never decodes anything.
    #[derive(Debug)]
    pub enum Fallback {}

    impl<T> Codec<T> for Fallback {
        fn decode(_: Option<&[u8]>) -> Result<T, crate::api::codec::DecodeError> {
            Err("unreachable: a handler whose attributes failed to compile".into())
        }
    }
}

/// The book's chapters with Rust code, compiled as doctests so the guide never rots.
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../../docs/src/getting-started.md")]
    struct GettingStarted;
    #[doc = include_str!("../../docs/src/delivery-modes.md")]
    struct DeliveryModes;
    #[doc = include_str!("../../docs/src/which-mode.md")]
    struct WhichMode;
    #[doc = include_str!("../../docs/src/errors-and-retries.md")]
    struct ErrorsAndRetries;
    #[doc = include_str!("../../docs/src/batch-handlers.md")]
    struct BatchHandlers;
    #[doc = include_str!("../../docs/src/key-concurrency.md")]
    struct KeyConcurrency;
}
