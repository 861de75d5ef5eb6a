//! A Kafka record as it came, kept to park it or dead-letter it byte for byte.

/// A record's raw key, payload and headers (a header without a value has `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// The headers as two arrays (names, values), as the tables store them.
    pub(crate) fn header_columns(&self) -> (Vec<&str>, Vec<Option<&[u8]>>) {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())).unzip()
    }
}
