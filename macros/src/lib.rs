//! Derive macros for [exactly](https://docs.rs/exactly). Depend on `exactly` (feature
//! `derive`, on by default) rather than on this crate: it re-exports what is here.
