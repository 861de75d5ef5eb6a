//! Records a handler emits to Kafka.

use bytes::Bytes;

/// One record to write to Kafka, built with [`Output::to`].
///
/// ```
/// let record = exactly::Output::to("invoices").key("customer-7").payload(r#"{"total":42}"#);
/// assert_eq!(record.topic(), "invoices");
/// ```
///
/// A key or payload given as an owned buffer (`Vec<u8>`, `String`, [`bytes::Bytes`]) is
/// taken over without a copy; a borrowed one (`&[u8]`, `&str`) is copied. A handler that
/// forwards what it consumed without a copy declares its payload (or key) as
/// [`bytes::Bytes`] and emits a clone of it, which shares the buffer:
///
/// ```
/// use exactly::bytes::Bytes;
///
/// let consumed = Bytes::from(vec![7_u8; 1024]);
/// let record = exactly::Output::to("copies").payload(consumed.clone());
/// assert_eq!(record.payload_bytes(), Some(&consumed[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub(crate) topic: String,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: Option<Bytes>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    /// A record for `topic`, without key or payload yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Self { topic: topic.into(), key: None, payload: None, headers: Vec::new() }
    }

    /// The record as an outbox row.
    pub(crate) fn row(&self) -> crate::store::outbox::Row<'_> {
        crate::store::outbox::Row {
            topic: &self.topic,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            headers: &self.headers,
        }
    }

    /// Sets the key (records with one key keep their order).
    #[must_use]
    pub fn key(mut self, key: impl OutputBytes) -> Self {
        self.key = Some(key.into_bytes());
        self
    }

    /// Sets the payload.
    #[must_use]
    pub fn payload(mut self, payload: impl OutputBytes) -> Self {
        self.payload = Some(payload.into_bytes());
        self
    }

    /// Sets the payload to `value` as JSON.
    ///
    /// # Errors
    /// When `value` cannot be serialized.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, serde_json::Error> {
        self.payload = Some(serde_json::to_vec(value)?.into());
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

    /// The key's bytes, once set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The payload's bytes, once set.
    pub fn payload_bytes(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
}

/// Bytes an [`Output`] can carry as its key or payload.
///
/// Owned buffers are taken over without a copy: [`bytes::Bytes`] (a clone of one shares
/// its buffer), `Vec<u8>`, `String`, `Box<[u8]>`. Borrowed ones (`&[u8]`, `&str`, `&Vec<u8>`,
/// `&String`, byte arrays) are copied, as are `'static` ones.
pub trait OutputBytes {
    /// The bytes, as a shared buffer.
    fn into_bytes(self) -> Bytes;
}

impl OutputBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl OutputBytes for &Bytes {
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl OutputBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl OutputBytes for Box<[u8]> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl OutputBytes for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl OutputBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> OutputBytes for &[u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> OutputBytes for [u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

impl OutputBytes for &Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl OutputBytes for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl OutputBytes for &String {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl OutputBytes for std::borrow::Cow<'_, [u8]> {
    fn into_bytes(self) -> Bytes {
        match self {
            std::borrow::Cow::Borrowed(bytes) => Bytes::copy_from_slice(bytes),
            std::borrow::Cow::Owned(bytes) => Bytes::from(bytes),
        }
    }
}

impl OutputBytes for std::borrow::Cow<'_, str> {
    fn into_bytes(self) -> Bytes {
        match self {
            std::borrow::Cow::Borrowed(text) => Bytes::copy_from_slice(text.as_bytes()),
            std::borrow::Cow::Owned(text) => Bytes::from(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_is_emitted_without_a_copy() {
        let consumed = Bytes::from(vec![1_u8; 1024]);
        let record = Output::to("t").payload(consumed.clone()).key(&consumed);
        assert_eq!(record.payload.as_ref().map(|p| p.as_ptr()), Some(consumed.as_ptr()));
        assert_eq!(record.key.as_ref().map(|k| k.as_ptr()), Some(consumed.as_ptr()));
    }

    #[test]
    fn owned_buffers_are_taken_over_and_borrowed_ones_copied() {
        let owned = vec![2_u8; 64];
        let at = owned.as_ptr();
        let record = Output::to("t").payload(owned);
        assert_eq!(record.payload.as_ref().map(|p| p.as_ptr()), Some(at));
        let borrowed = [3_u8; 8];
        let record = Output::to("t").payload(&borrowed[..]).key("k");
        assert_ne!(record.payload.as_ref().map(|p| p.as_ptr()), Some(borrowed.as_ptr()));
        assert_eq!(record.payload_bytes(), Some(&borrowed[..]));
        assert_eq!(record.key_bytes(), Some(&b"k"[..]));
    }
}
