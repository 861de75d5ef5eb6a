//! How payloads and keys are turned from bytes into values.
//!
//! A handler declares a payload codec ([`Json`] by default, [`Bytes`], [`Utf8`], or your own
//! [`Codec`]) and a key type implementing [`Key`].

/// Why a key or payload could not be decoded.
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a record's payload into a `T`.
///
/// ```
/// use exactly::codec::{Codec, DecodeError};
///
/// /// Payloads are decimal numbers in ASCII.
/// struct Decimal;
///
/// impl Codec<u64> for Decimal {
///     fn decode(payload: Option<&[u8]>) -> Result<u64, DecodeError> {
///         let text = std::str::from_utf8(payload.ok_or("empty payload")?)?;
///         Ok(text.trim().parse()?)
///     }
/// }
/// assert_eq!(Decimal::decode(Some(b"42")).unwrap(), 42);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot decode payloads into `{T}`",
    label = "this codec does not produce `{T}`",
    note = "`json` decodes any `serde::Deserialize` type, `bytes` gives `Vec<u8>` or `bytes::Bytes`, `utf8` gives `String`; \
            implement `exactly::codec::Codec<{T}>` for a codec of your own"
)]
pub trait Codec<T>: 'static {
    /// Decodes a payload; `None` is a record without payload (a tombstone).
    ///
    /// # Errors
    /// Fails when the bytes are not a valid `T`; the runtime then reports the message's
    /// location and does not advance past it.
    fn decode(payload: Option<&[u8]>) -> Result<T, DecodeError>;
}

/// JSON through serde: any `T: Deserialize`. A missing payload is an error unless `T`
/// accepts JSON `null` (e.g. `Option<_>`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: serde::de::DeserializeOwned> Codec<T> for Json {
    fn decode(payload: Option<&[u8]>) -> Result<T, DecodeError> {
        Ok(serde_json::from_slice(payload.unwrap_or(b"null"))?)
    }
}

/// The raw payload bytes, as a `Vec<u8>` or a [`bytes::Bytes`]; a missing payload is empty.
///
/// With [`bytes::Bytes`], a handler can emit the payload it consumed (a clone shares the
/// buffer) without copying it again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Codec<Vec<u8>> for Bytes {
    fn decode(payload: Option<&[u8]>) -> Result<Vec<u8>, DecodeError> {
        Ok(payload.unwrap_or_default().to_vec())
    }
}

impl Codec<bytes::Bytes> for Bytes {
    fn decode(payload: Option<&[u8]>) -> Result<bytes::Bytes, DecodeError> {
        Ok(bytes::Bytes::copy_from_slice(payload.unwrap_or_default()))
    }
}

/// The payload as UTF-8 text; invalid UTF-8 is an error, a missing payload is empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn decode(payload: Option<&[u8]>) -> Result<String, DecodeError> {
        Ok(std::str::from_utf8(payload.unwrap_or_default())?.to_owned())
    }
}

/// A record key type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a message key",
    note = "keys can be `String` (UTF-8), `Vec<u8>` and `bytes::Bytes` (raw bytes), or `()` (ignored); implement `exactly::codec::Key` for others"
)]
pub trait Key: Sized + Send + Sync + 'static {
    /// Decodes a key from its bytes.
    ///
    /// # Errors
    /// Fails when the bytes are not a valid key.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

impl Key for String {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(std::str::from_utf8(bytes)?.to_owned())
    }
}

impl Key for Vec<u8> {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Key for bytes::Bytes {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes::Bytes::copy_from_slice(bytes))
    }
}

impl Key for () {
    fn decode(_: &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_decodes_and_reports_bad_input() {
        let value: Vec<u32> = Json::decode(Some(b"[1,2]")).unwrap_or_default();
        assert_eq!(value, vec![1, 2]);
        assert!(<Json as Codec<Vec<u32>>>::decode(Some(b"{not json")).is_err());
        assert!(<Json as Codec<u32>>::decode(None).is_err());
        assert_eq!(<Json as Codec<Option<u32>>>::decode(None).ok(), Some(None));
    }

    #[test]
    fn utf8_rejects_invalid_bytes() {
        assert!(Utf8::decode(Some(&[0xff, 0xfe])).is_err());
        assert_eq!(Utf8::decode(Some(b"ok")).ok().as_deref(), Some("ok"));
    }
}
