//! A decoded Kafka message, as a handler sees it.

/// One Kafka message: its decoded key and payload, its headers and where it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message<K, P> {
    /// The decoded key; `None` when the record has no key.
    pub key: Option<K>,
    /// The decoded payload.
    pub payload: P,
    /// The record's headers, in order; a header value may be absent. Empty for a handler
    /// whose subscription declines them ([`Subscription::without_headers`]).
    ///
    /// [`Subscription::without_headers`]: crate::Subscription::without_headers
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its timestamp in milliseconds since the Unix epoch, when the record has one.
    pub timestamp: Option<i64>,
}

impl<K, P> Message<K, P> {
    /// The first header named `name`, if present and with a value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }
}
