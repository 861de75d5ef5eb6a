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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn message(headers: Vec<(String, Option<Vec<u8>>)>) -> Message<(), ()> {
        Message { key: None, payload: (), headers, topic: String::new(), partition: 0, offset: 0, timestamp: None }
    }

    fn headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
        let name = prop_oneof!["[aA]{1,2}", any::<String>()];
        prop::collection::vec((name, prop::option::of(prop::collection::vec(any::<u8>(), 0..4))), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `header` answers for the first header of that exact name (names are
        /// case-sensitive in Kafka), whatever follows it.
        #[test]
        fn header_is_the_first_of_its_name(
            before in headers(),
            name in "[aA]{1,2}",
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
            after in headers(),
        ) {
            let before: Vec<_> = before.into_iter().filter(|(n, _)| *n != name).collect();
            let mut headers = before.clone();
            headers.push((name.clone(), value.clone()));
            headers.extend(after);
            let (with, without) = (message(headers), message(before));
            prop_assert_eq!(with.header(&name), value.as_deref());
            prop_assert_eq!(without.header(&name), None);
        }
    }
}
