//! Records a handler emits to Kafka.

/// One record to write to Kafka, built with [`Output::to`].
///
/// ```
/// let record = exactly::Output::to("invoices").key("customer-7").payload(r#"{"total":42}"#);
/// assert_eq!(record.topic(), "invoices");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    /// A record for `topic`, without key or payload yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Self { topic: topic.into(), key: None, payload: None, headers: Vec::new() }
    }

    /// Sets the key (records with one key keep their order).
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    #[must_use]
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the payload to `value` as JSON.
    ///
    /// # Errors
    /// When `value` cannot be serialized.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, serde_json::Error> {
        self.payload = Some(serde_json::to_vec(value)?);
        Ok(self)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The target topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}
