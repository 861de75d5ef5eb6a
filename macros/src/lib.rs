//! Derive macros for [exactly](https://docs.rs/exactly). Depend on `exactly` (feature
//! `derive`, on by default) rather than on this crate: it re-exports what is here.
//!
//! The macros only read attributes, check them and delegate to traits of `exactly`; all
//! logic lives there.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Declares what a handler consumes, implementing `exactly::Consumes`.
///
/// ```text
/// #[derive(exactly::Handler)]
/// #[exactly(
///     topics = ["orders", "order-corrections"], // or: topic = "orders"
///     group = "order-recorder",                 // the consumer group (required)
///     delivery = point_to_point,                // or publish_subscribe (default: point_to_point)
///     payload = Order,                          // the decoded payload type (required)
///     codec = json,                             // json (default), bytes, utf8, or a type implementing Codec
///     key = String,                             // String, Vec<u8> or () (default: Vec<u8>)
///     mode = database,                          // or kafka (default: database)
///     outputs = ["invoices"],                   // topics it emits to (checked when emitting)
///     retry(attempts = 5, backoff_ms = 100, max_backoff_ms = 30_000), // its own retry policy
///     key_parking,                              // park a failing key, go on with the others (Database mode)
///     key_concurrency = 32,                     // up to 32 messages of a partition at once, never two of a key
///     dead_letter_topic = "orders.dead",        // dead letters to this topic, not the table
///     without_headers,                          // the handler is given no headers (saves their parse)
/// )]
/// struct RecordOrders;
/// ```
///
/// Then implement `exactly::Handler` for the type. A mistake in the attribute is a compile
/// error pointing at it.
#[proc_macro_derive(Handler, attributes(exactly))]
pub fn derive_handler(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive_handler(&input).into()
}
