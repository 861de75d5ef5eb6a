//! Parsing and checking `#[exactly(...)]`.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, Lit, LitInt, LitStr, Path, Type};

/// A payload codec: one of the built-in names, or a type implementing `Codec`.
pub(crate) enum CodecChoice {
    Builtin(&'static str, Span),
    Custom(Path),
}

/// How messages are shared among instances.
pub(crate) enum DeliveryChoice {
    PointToPoint,
    PublishSubscribe,
}

/// Where effects commit.
pub(crate) enum ModeChoice {
    Database,
    Kafka,
}

/// Everything `#[exactly(...)]` can say; `None` where it said nothing.
#[derive(Default)]
pub(crate) struct HandlerAttrs {
    pub(crate) topics: Option<Vec<LitStr>>,
    pub(crate) group: Option<LitStr>,
    pub(crate) delivery: Option<DeliveryChoice>,
    pub(crate) payload: Option<Type>,
    pub(crate) codec: Option<CodecChoice>,
    pub(crate) key: Option<Type>,
    pub(crate) mode: Option<ModeChoice>,
    pub(crate) outputs: Option<Vec<LitStr>>,
    pub(crate) retry: Option<RetryAttrs>,
    pub(crate) key_parking: bool,
    pub(crate) key_concurrency: Option<LitInt>,
    pub(crate) dead_letter_topic: Option<LitStr>,
    pub(crate) without_headers: bool,
    /// An attribute could not be read to its end: what is missing may be behind the error.
    pub(crate) incomplete: bool,
}

/// `retry(attempts = 3, backoff_ms = 100, max_backoff_ms = 30_000)`: each part optional.
#[derive(Default)]
pub(crate) struct RetryAttrs {
    pub(crate) attempts: Option<LitInt>,
    pub(crate) backoff_ms: Option<LitInt>,
    pub(crate) max_backoff_ms: Option<LitInt>,
}

const KEYS: &str = "`topic`, `topics`, `group`, `delivery`, `payload`, `codec`, `key`, `mode`, `outputs`, `retry`, \
                    `key_parking`, `key_concurrency`, `dead_letter_topic`, `without_headers`";

impl HandlerAttrs {
    /// Reads every `#[exactly(...)]` of the item; every mistake becomes one spanned error.
    pub(crate) fn parse(attrs: &[syn::Attribute], errors: &mut Vec<syn::Error>) -> Self {
        let mut parsed = HandlerAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("exactly")) {
            let result = attr.parse_nested_meta(|meta| {
                let path = &meta.path;
                let name = path.get_ident().map(ToString::to_string).unwrap_or_default();
                let duplicate = || syn::Error::new(path.span(), format!("duplicate `{name}`"));
                match name.as_str() {
                    "topic" | "topics" => {
                        if parsed.topics.is_some() {
                            return Err(syn::Error::new(path.span(), "topics given twice: use one `topics = [...]`"));
                        }
                        let topics = if name == "topic" {
                            vec![meta.value()?.parse::<LitStr>()?]
                        } else {
                            parse_topic_list(&meta.value()?.parse::<ExprArray>()?)?
                        };
                        for topic in &topics {
                            if let Err(message) = check_topic(&topic.value()) {
                                errors.push(syn::Error::new(topic.span(), message));
                            }
                        }
                        parsed.topics = Some(topics);
                    }
                    "group" => {
                        if parsed.group.is_some() {
                            return Err(duplicate());
                        }
                        let group: LitStr = meta.value()?.parse()?;
                        if group.value().is_empty() || group.value().len() > 255 {
                            errors.push(syn::Error::new(group.span(), "a group id has 1 to 255 characters"));
                        }
                        parsed.group = Some(group);
                    }
                    "delivery" => {
                        if parsed.delivery.is_some() {
                            return Err(duplicate());
                        }
                        let mode: syn::Ident = meta.value()?.parse()?;
                        parsed.delivery = Some(match mode.to_string().as_str() {
                            "point_to_point" => DeliveryChoice::PointToPoint,
                            "publish_subscribe" => DeliveryChoice::PublishSubscribe,
                            _ => {
                                return Err(syn::Error::new(
                                    mode.span(),
                                    "unknown delivery mode: expected `point_to_point` (one group, each message \
                                     to one instance) or `publish_subscribe` (each group sees every message)",
                                ));
                            }
                        });
                    }
                    "mode" => {
                        if parsed.mode.is_some() {
                            return Err(duplicate());
                        }
                        let mode: syn::Ident = meta.value()?.parse()?;
                        parsed.mode = Some(match mode.to_string().as_str() {
                            "database" => ModeChoice::Database,
                            "kafka" => ModeChoice::Kafka,
                            _ => {
                                return Err(syn::Error::new(
                                    mode.span(),
                                    "unknown mode: expected `database` (effects and positions in PostgreSQL) or \
                                     `kafka` (output records and offsets in one Kafka transaction)",
                                ));
                            }
                        });
                    }
                    "outputs" => {
                        if parsed.outputs.is_some() {
                            return Err(duplicate());
                        }
                        let outputs = parse_topic_list(&meta.value()?.parse::<ExprArray>()?)?;
                        for topic in &outputs {
                            if let Err(message) = check_topic(&topic.value()) {
                                errors.push(syn::Error::new(topic.span(), message));
                            }
                        }
                        parsed.outputs = Some(outputs);
                    }
                    "retry" => {
                        if parsed.retry.is_some() {
                            return Err(duplicate());
                        }
                        parsed.retry = Some(parse_retry(&meta)?);
                    }
                    "key_parking" => {
                        if parsed.key_parking {
                            return Err(duplicate());
                        }
                        parsed.key_parking = true;
                    }
                    "key_concurrency" => {
                        if parsed.key_concurrency.is_some() {
                            return Err(duplicate());
                        }
                        parsed.key_concurrency = Some(parse_key_concurrency(&meta)?);
                    }
                    "without_headers" => {
                        if parsed.without_headers {
                            return Err(duplicate());
                        }
                        parsed.without_headers = true;
                    }
                    "dead_letter_topic" => {
                        if parsed.dead_letter_topic.is_some() {
                            return Err(duplicate());
                        }
                        let topic: LitStr = meta.value()?.parse()?;
                        if let Err(message) = check_topic(&topic.value()) {
                            errors.push(syn::Error::new(topic.span(), message));
                        }
                        parsed.dead_letter_topic = Some(topic);
                    }
                    "payload" => {
                        if parsed.payload.is_some() {
                            return Err(duplicate());
                        }
                        parsed.payload = Some(meta.value()?.parse()?);
                    }
                    "key" => {
                        if parsed.key.is_some() {
                            return Err(duplicate());
                        }
                        parsed.key = Some(meta.value()?.parse()?);
                    }
                    "codec" => {
                        if parsed.codec.is_some() {
                            return Err(duplicate());
                        }
                        let codec: Path = meta.value()?.parse()?;
                        parsed.codec = Some(match codec.get_ident().map(ToString::to_string).as_deref() {
                            Some("json") => CodecChoice::Builtin("Json", codec.span()),
                            Some("bytes") => CodecChoice::Builtin("Bytes", codec.span()),
                            Some("utf8") => CodecChoice::Builtin("Utf8", codec.span()),
                            _ => CodecChoice::Custom(codec),
                        });
                    }
                    _ => {
                        return Err(syn::Error::new(
                            path.span(),
                            format!(
                                "unknown key `{}` in #[exactly(...)]: expected one of {KEYS}",
                                quote::quote!(#path)
                            ),
                        ));
                    }
                }
                Ok(())
            });
            if let Err(error) = result {
                parsed.incomplete = true;
                errors.push(error);
            }
        }
        parsed
    }
}

fn parse_retry(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<RetryAttrs> {
    let mut retry = RetryAttrs::default();
    meta.parse_nested_meta(|part| {
        let name = part.path.get_ident().map(ToString::to_string).unwrap_or_default();
        let slot = match name.as_str() {
            "attempts" => &mut retry.attempts,
            "backoff_ms" => &mut retry.backoff_ms,
            "max_backoff_ms" => &mut retry.max_backoff_ms,
            _ => {
                return Err(syn::Error::new(
                    part.path.span(),
                    "unknown key in `retry(...)`: expected `attempts`, `backoff_ms` or `max_backoff_ms`",
                ));
            }
        };
        if slot.is_some() {
            return Err(syn::Error::new(part.path.span(), format!("duplicate `{name}`")));
        }
        let value: LitInt = part.value()?.parse()?;
        let parsed: u64 = value.base10_parse()?;
        if name == "attempts" && (parsed == 0 || parsed > u64::from(u32::MAX)) {
            return Err(syn::Error::new(value.span(), "`attempts` is at least 1 (the first try counts)"));
        }
        *slot = Some(value);
        Ok(())
    })?;
    Ok(retry)
}

/// The most lanes `key_concurrency` allows (the runtime's own limit).
const MAX_KEY_CONCURRENCY: u64 = 1024;

/// `key_concurrency = N`: 1 to [`MAX_KEY_CONCURRENCY`].
fn parse_key_concurrency(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitInt> {
    let value: LitInt = meta.value()?.parse()?;
    let lanes: u64 = value.base10_parse()?;
    if !(1..=MAX_KEY_CONCURRENCY).contains(&lanes) {
        return Err(syn::Error::new(
            value.span(),
            format!(
                "`key_concurrency` is 1 to {MAX_KEY_CONCURRENCY}: how many messages of a partition are handled at \
                 once (1: one after another)"
            ),
        ));
    }
    Ok(value)
}

fn parse_topic_list(array: &ExprArray) -> syn::Result<Vec<LitStr>> {
    if array.elems.is_empty() {
        return Err(syn::Error::new(array.span(), "`topics` is empty: a handler consumes at least one topic"));
    }
    array
        .elems
        .iter()
        .map(|elem| match elem {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(topic), .. }) => Ok(topic.clone()),
            other => Err(syn::Error::new(other.span(), "a topic is a string literal, e.g. \"orders\"")),
        })
        .collect()
}

/// Kafka's rule for topic names, checked at compile time: 1 to 249 of `[a-zA-Z0-9._-]`.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!("topic `{topic}` must have 1 to 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic `{topic}` is not allowed by Kafka"));
    }
    match topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(bad) => {
            Err(format!("topic `{topic}` contains `{bad}`: Kafka allows only ASCII letters, digits, `.`, `_` and `-`"))
        }
        None => Ok(()),
    }
}
