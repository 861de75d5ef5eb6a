//! Which messages must keep their order when a partition's messages are handled at once:
//! those of one key, told apart by a hash of the key.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// A hash of a message's key, to track which key is being handled without keeping its
/// bytes (two keys with the same hash are kept in order as one, which costs concurrency,
/// never order): `None` for a message without a key, which has no order to keep, unless
/// `parking` is on (its messages without a key are then kept in order as one key, since
/// they are parked and retried as one).
pub(crate) fn key_hash(key: Option<&[u8]>, parking: bool) -> Option<u64> {
    if key.is_none() && !parking {
        return None;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    Some(hasher.finish())
}
