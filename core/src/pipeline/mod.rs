//! One message's path through a handler, the same in every mode and for every caller:
//! decoding with the handler's codecs ([`decode`]), the call itself with its span, trace
//! context and panic catching, and the classification of how it ended ([`invoke`]), the
//! two kinds of handler (per message, per batch) behind one interface ([`work`]), the
//! count of tries per message ([`attempts`]), which messages keep their order when a
//! partition's are handled at once ([`keys`]), and where a message goes when it cannot be
//! handled ([`dead_letter`]).
//!
//! Its callers are Database mode's batches and parked-key retries, Kafka mode's loop, and
//! the re-drive of dead letters; each decides what a failure means for its own
//! transaction, but none calls a handler any other way.

pub(crate) mod attempts;
pub(crate) mod dead_letter;
pub(crate) mod decode;
pub(crate) mod invoke;
pub(crate) mod keys;
pub(crate) mod panics;
pub(crate) mod work;
