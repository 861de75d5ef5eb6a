//! A Kafka record as it came, kept to park it or dead-letter it byte for byte.

/// A record's raw key, payload and headers (a header without a value has `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub(crate) key: Option<Vec<u8>>,
    /// Shared with the decoded payload when the handler's codec can share it
    /// ([`Codec::decode_kept`](crate::codec::Codec::decode_kept)).
    pub(crate) payload: Option<bytes::Bytes>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// The headers as two arrays (names, values), as the tables store them.
    pub(crate) fn header_columns(&self) -> (Vec<&str>, Vec<Option<&[u8]>>) {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())).unzip()
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The tables keep headers as two arrays; read back, they are the headers again, in
        /// order, a header without a value still without one.
        #[test]
        fn header_columns_zip_back_to_the_headers(
            headers in prop::collection::vec((any::<String>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..6),
        ) {
            let raw = RawRecord { key: None, payload: None, headers };
            let (names, values) = raw.header_columns();
            prop_assert_eq!(names.len(), values.len());
            let back: Vec<(String, Option<Vec<u8>>)> =
                names.into_iter().map(str::to_owned).zip(values.into_iter().map(|v| v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(back, raw.headers);
        }
    }
}
