//! Turning a Kafka record into the handler's [`Message`], with the handler's codecs.

use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};

use crate::api::codec::{Codec, DecodeError, Key};
use crate::api::handler::Consumes;
use crate::api::message::Message;
use crate::store::record::RawRecord;

/// A decoded record, or what part of it failed and why.
pub(crate) enum Decoded<K, P> {
    Message(Message<K, P>),
    Failed { part: &'static str, error: DecodeError },
}

/// A record's headers as Kafka gave them (a header without a value has `None`).
pub(crate) type Headers = Vec<(String, Option<Vec<u8>>)>;

/// Copies the raw bytes of `message`.
pub(crate) fn raw(message: &BorrowedMessage<'_>) -> RawRecord {
    RawRecord {
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(bytes::Bytes::copy_from_slice),
        headers: headers(message),
    }
}

/// Copies the headers of `message`. librdkafka parses them on the first call, with an
/// allocation even when the record has none: a caller whose handler reads no headers
/// (see [`Subscription::without_headers`](crate::Subscription::without_headers)) skips it.
pub(crate) fn headers(message: &BorrowedMessage<'_>) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|headers| headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default()
}

/// Decodes key and payload straight from librdkafka's buffer (no copy of the raw bytes).
/// `topic` is the message's, as the caller already has it (reading it from librdkafka
/// again costs a length scan and a UTF-8 check per message); it becomes the message's
/// topic, so a caller that hands out one message at a time can take the `String` back
/// afterwards and reuse it instead of allocating one per message. `headers` are the
/// message's as the handler is to see them (see [`headers`]).
pub(crate) fn decode<H: Consumes>(
    message: &BorrowedMessage<'_>,
    topic: String,
    headers: Vec<(String, Option<Vec<u8>>)>,
) -> Decoded<H::Key, H::Payload> {
    decode_parts::<H>(message.key(), message.payload(), headers, Coordinates::of(message, topic))
}

/// Decodes the record kept in `raw`, its payload shared with `raw` where the codec can
/// share it ([`Codec::decode_kept`]).
pub(crate) fn decode_kept<H: Consumes>(
    raw: &RawRecord,
    headers: Vec<(String, Option<Vec<u8>>)>,
    at: Coordinates,
) -> Decoded<H::Key, H::Payload> {
    message_of::<H>(raw.key.as_deref(), H::Codec::decode_kept(raw.payload.as_ref()), headers, at)
}

/// Where a record was, for [`decode_parts`].
pub(crate) struct Coordinates {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
}

impl Coordinates {
    /// Where `message` was, in `topic` (the caller's copy of its name).
    pub(crate) fn of(message: &BorrowedMessage<'_>, topic: String) -> Self {
        Coordinates {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
        }
    }
}

/// Decodes a record given as its parts (from Kafka, or from the dead letters).
pub(crate) fn decode_parts<H: Consumes>(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    at: Coordinates,
) -> Decoded<H::Key, H::Payload> {
    message_of::<H>(key, H::Codec::decode(payload), headers, at)
}

/// The message of a decoded payload, once its key decodes too (a key that fails is
/// reported before a payload that failed).
fn message_of<H: Consumes>(
    key: Option<&[u8]>,
    payload: Result<H::Payload, DecodeError>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    at: Coordinates,
) -> Decoded<H::Key, H::Payload> {
    let key = match key.map(H::Key::decode).transpose() {
        Ok(key) => key,
        Err(error) => return Decoded::Failed { part: "key", error },
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(error) => return Decoded::Failed { part: "payload", error },
    };
    Decoded::Message(Message {
        key,
        payload,
        headers,
        topic: at.topic,
        partition: at.partition,
        offset: at.offset,
        timestamp: at.timestamp,
    })
}
