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

    /// Decodes a payload the runtime keeps anyway (in Database mode it holds each record's
    /// bytes until the record commits, to park it or dead-letter it byte for byte). By
    /// default the same as [`decode`](Self::decode); a codec whose value can share the
    /// kept buffer overrides it to skip a copy, as [`Bytes`] does for [`bytes::Bytes`].
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    fn decode_kept(payload: Option<&bytes::Bytes>) -> Result<T, DecodeError> {
        Self::decode(payload.map(|payload| &payload[..]))
    }
}

/// JSON through serde: any `T: Deserialize`. A missing payload is an error unless `T`
/// accepts JSON `null` (e.g. `Option<_>`). A number is read as the float nearest to its text
/// (serde_json's `float_roundtrip`, which exactly turns on), so a float written by any
/// correct JSON writer reads back as the same `f64`, not one a last digit away.
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
/// buffer) without copying it again, and in Database mode the payload shares the buffer
/// the runtime keeps the record's bytes in: one copy out of librdkafka's buffer, not two.
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

    fn decode_kept(payload: Option<&bytes::Bytes>) -> Result<bytes::Bytes, DecodeError> {
        Ok(payload.cloned().unwrap_or_default())
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
    fn bytes_share_the_kept_buffer_and_other_codecs_copy_it() {
        let kept = bytes::Bytes::from_static(b"payload");
        let shared: bytes::Bytes = Bytes::decode_kept(Some(&kept)).unwrap_or_default();
        assert_eq!(shared.as_ptr(), kept.as_ptr(), "bytes::Bytes shares the kept buffer");
        let copied: Vec<u8> = Bytes::decode_kept(Some(&kept)).unwrap_or_default();
        assert_eq!(copied, b"payload");
        let text: String = Utf8::decode_kept(Some(&kept)).unwrap_or_default();
        assert_eq!(text, "payload");
        let missing: bytes::Bytes = Bytes::decode_kept(None).unwrap_or(kept);
        assert!(missing.is_empty(), "a missing payload is empty, as with decode");
    }

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

/// Properties of the codecs over generated payloads: what was encoded decodes back, and
/// bytes that are not a valid value give the format's own error, never a panic or a value.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Bytes that are often valid UTF-8 (or JSON) and often not: a valid text with a byte
    /// put in somewhere, or bytes at random.
    fn mostly_text() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            (any::<String>(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(text, at, byte)| {
                let mut bytes = text.into_bytes();
                bytes.insert(at.index(bytes.len() + 1), byte);
                bytes
            }),
            prop::collection::vec(any::<u8>(), 0..32),
        ]
    }

    /// A JSON document with one byte changed or put in: mostly not JSON any more.
    fn near_json() -> impl Strategy<Value = Vec<u8>> {
        (order(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(|(order, at, byte, insert)| {
            let mut bytes = serde_json::to_vec(&order).unwrap_or_default();
            let at = at.index(bytes.len());
            if insert {
                bytes.insert(at, byte)
            } else {
                bytes[at] = byte
            }
            bytes
        })
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Kind {
        Created,
        Moved { from: String, to: String },
        Weighed(u32),
    }

    /// A payload type with what JSON has to escape or bound: any text, 64-bit integers,
    /// floats, nesting, maps, absent fields.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
        delta: i64,
        note: String,
        tags: Vec<String>,
        counts: BTreeMap<String, i32>,
        urgent: Option<bool>,
        kind: Kind,
        price: f64,
    }

    fn order() -> impl Strategy<Value = Order> {
        let kind = prop_oneof![
            Just(Kind::Created),
            (any::<String>(), any::<String>()).prop_map(|(from, to)| Kind::Moved { from, to }),
            any::<u32>().prop_map(Kind::Weighed),
        ];
        (
            any::<u64>(),
            any::<i64>(),
            any::<String>(),
            prop::collection::vec(any::<String>(), 0..3),
            prop::collection::btree_map(any::<String>(), any::<i32>(), 0..3),
            any::<Option<bool>>(),
            kind,
            // JSON has no NaN or infinity.
            prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        )
            .prop_map(|(id, delta, note, tags, counts, urgent, kind, price)| Order {
                id,
                delta,
                note,
                tags,
                counts,
                urgent,
                kind,
                price,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn bytes_give_back_the_payload_and_nothing_for_none(payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..64))) {
            let expected = payload.clone().unwrap_or_default();
            let as_vec: Vec<u8> = Bytes::decode(payload.as_deref()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let as_bytes: bytes::Bytes = Bytes::decode(payload.as_deref()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&as_vec, &expected);
            prop_assert_eq!(&as_bytes[..], &expected[..]);
            let key = payload.unwrap_or_default();
            prop_assert_eq!(<Vec<u8> as Key>::decode(&key).ok(), Some(key.clone()));
            prop_assert_eq!(<bytes::Bytes as Key>::decode(&key).ok(), Some(bytes::Bytes::from(key.clone())));
            prop_assert!(<() as Key>::decode(&key).is_ok());
        }

        #[test]
        fn text_round_trips_through_utf8_and_string_keys(text in any::<String>()) {
            prop_assert_eq!(Utf8::decode(Some(text.as_bytes())).ok(), Some(text.clone()));
            prop_assert_eq!(<String as Key>::decode(text.as_bytes()).ok(), Some(text));
        }

        #[test]
        fn utf8_and_string_keys_take_exactly_the_valid_text(bytes in mostly_text()) {
            // Whether lossy decoding had to replace anything says whether the bytes were
            // valid, without asking the decoder under test.
            let valid = matches!(String::from_utf8_lossy(&bytes), std::borrow::Cow::Borrowed(_));
            for decoded in [Utf8::decode(Some(&bytes)), <String as Key>::decode(&bytes)] {
                match decoded {
                    Ok(text) => {
                        prop_assert!(valid, "invalid bytes {:?} decoded", bytes);
                        prop_assert_eq!(text.as_bytes(), &bytes[..]);
                    }
                    Err(error) => {
                        prop_assert!(!valid, "valid text {:?} refused: {}", bytes, error);
                        prop_assert!(error.downcast_ref::<std::str::Utf8Error>().is_some(), "{:?}", error);
                    }
                }
            }
        }

        #[test]
        fn json_gives_back_what_serde_json_wrote(order in order(), pretty in any::<bool>()) {
            let bytes = if pretty { serde_json::to_vec_pretty(&order) } else { serde_json::to_vec(&order) };
            let bytes = bytes.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded: Order = Json::decode(Some(&bytes)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded, order);
        }

        #[test]
        fn json_refuses_a_document_with_anything_after_it(order in order(), after in "[ \t\r\n]{0,2}[^ \t\r\n]") {
            let mut bytes = serde_json::to_vec(&order).map_err(|e| TestCaseError::fail(e.to_string()))?;
            bytes.extend_from_slice(after.as_bytes());
            let decoded: Result<Order, _> = Json::decode(Some(&bytes));
            let error = decoded.err().ok_or_else(|| TestCaseError::fail("trailing text accepted"))?;
            prop_assert!(error.downcast_ref::<serde_json::Error>().is_some_and(serde_json::Error::is_syntax), "{:?}", error);
        }

        #[test]
        fn json_decodes_arbitrary_bytes_to_a_value_or_a_json_error(bytes in prop_oneof![mostly_text(), near_json()]) {
            match <Json as Codec<serde_json::Value>>::decode(Some(&bytes)) {
                // A value decoded is a document: written again, it reads again, the same.
                Ok(value) => {
                    let again = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let read = serde_json::from_slice::<serde_json::Value>(&again).ok();
                    prop_assert_eq!(read, Some(value));
                }
                Err(error) => {
                    let json = error.downcast_ref::<serde_json::Error>();
                    prop_assert!(json.is_some_and(|e| e.is_syntax() || e.is_eof()), "{:?}", error);
                }
            }
        }

        #[test]
        fn json_reads_a_missing_payload_as_null(order in order()) {
            prop_assert_eq!(<Json as Codec<Option<Order>>>::decode(None).ok(), Some(None));
            let error = <Json as Codec<Order>>::decode(None).err();
            prop_assert!(error.is_some_and(|e| e.downcast_ref::<serde_json::Error>().is_some_and(serde_json::Error::is_data)));
            let bytes = serde_json::to_vec(&Some(&order)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(<Json as Codec<Option<Order>>>::decode(Some(&bytes)).ok(), Some(Some(order)));
        }
    }
}
