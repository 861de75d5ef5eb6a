//! W3C trace context: the `traceparent` and `tracestate` headers of a consumed message,
//! carried to the records its handler emits, without any tracing backend.
//!
//! A valid `traceparent` (W3C Trace Context, level 1) gives the message's processing a new
//! span id under the message's trace id; that span id is the parent of every record the
//! handler emits (which gets a `traceparent` header unless the handler set one). A header
//! that is not valid is ignored, as the specification says. The message's `tracestate`
//! (the vendors' own entries) goes along unchanged, as the specification asks of a
//! participant that adds no entry of its own; several `tracestate` headers are joined with
//! commas, as HTTP joins repeated headers. Without a valid `traceparent`, `tracestate` is
//! ignored too.

use std::fmt;

/// The header's name.
pub(crate) const HEADER: &str = "traceparent";

/// The name of the header with the vendors' entries.
pub(crate) const STATE_HEADER: &str = "tracestate";

/// The trace a message belongs to, and the span of its processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    trace_id: [u8; 16],
    /// The span that produced the message (the message's `traceparent` parent id).
    parent_id: [u8; 8],
    /// The span of this message's processing: the parent of the records its handler emits.
    span_id: [u8; 8],
    sampled: bool,
    /// The message's `tracestate`, passed on unchanged; `None` when it had none.
    state: Option<Vec<u8>>,
}

impl TraceContext {
    /// The trace context of a message with these headers: from its first `traceparent`
    /// header, if that is valid, with its `tracestate` headers joined.
    pub(crate) fn from_headers<'h, V: AsRef<[u8]> + 'h>(
        headers: impl IntoIterator<Item = (&'h str, Option<&'h V>)> + Clone,
    ) -> Option<Self> {
        let (_, value) = headers.clone().into_iter().find(|(name, _)| name.eq_ignore_ascii_case(HEADER))?;
        let mut trace = Self::parse(value?.as_ref())?;
        for (name, value) in headers {
            let Some(value) = value.map(AsRef::as_ref).filter(|v| !v.is_empty()) else { continue };
            if name.eq_ignore_ascii_case(STATE_HEADER) {
                let state = trace.state.get_or_insert_with(Vec::new);
                if !state.is_empty() {
                    state.push(b',');
                }
                state.extend_from_slice(value);
            }
        }
        Some(trace)
    }

    /// Parses a `traceparent` value; `None` unless it is valid. The span of the processing
    /// gets a new random id.
    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        // version "-" trace-id "-" parent-id "-" trace-flags, all lowercase hex.
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&value[0..2])?[0];
        match version {
            0xff => return None,
            // Version 00 has exactly these fields; a later version may append more after a "-".
            0x00 if value.len() != 55 => return None,
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let parent_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, span_id: new_span_id(), sampled: flags & 0x01 == 1, state: None })
    }

    /// The trace id, as 32 hex digits.
    pub(crate) fn trace_id(&self) -> impl fmt::Display + '_ {
        Hex(&self.trace_id)
    }

    /// The span id the message carried, as 16 hex digits.
    pub(crate) fn parent_id(&self) -> impl fmt::Display + '_ {
        Hex(&self.parent_id)
    }

    /// The span id of the processing, as 16 hex digits.
    pub(crate) fn span_id(&self) -> impl fmt::Display + '_ {
        Hex(&self.span_id)
    }

    /// Records the ids on `span` (fields `trace_id`, `parent_span_id`, `span_id`).
    pub(crate) fn record(&self, span: &tracing::Span) {
        span.record("trace_id", tracing::field::display(self.trace_id()));
        span.record("parent_span_id", tracing::field::display(self.parent_id()));
        span.record("span_id", tracing::field::display(self.span_id()));
    }

    /// The `traceparent` of a record emitted while processing: same trace, the processing
    /// span as parent, the sampled flag kept (the only flag of version 00).
    pub(crate) fn child_traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id(), self.span_id(), u8::from(self.sampled))
    }

    /// Adds the `traceparent` of a record emitted while processing to the record's
    /// `headers`, and the message's `tracestate`, unless the handler gave the record a
    /// `traceparent` (its own trace, which the message's `tracestate` does not describe) or a
    /// `tracestate`.
    pub(crate) fn stamp(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        let has = |header: &str| headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(header));
        if has(HEADER) {
            return;
        }
        let state = self.state.as_ref().filter(|_| !has(STATE_HEADER));
        let state = state.cloned();
        headers.push((HEADER.to_owned(), self.child_traceparent().into_bytes()));
        if let Some(state) = state {
            headers.push((STATE_HEADER.to_owned(), state));
        }
    }
}

/// `N` bytes from `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// A random span id; never all zeros (which means "none").
fn new_span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// Bytes as lowercase hex digits.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_a_valid_traceparent_and_gives_the_processing_a_new_span() {
        let trace = TraceContext::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(trace.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(trace.parent_id().to_string(), "b7ad6b7169203331");
        assert_ne!(trace.span_id().to_string(), "b7ad6b7169203331");
        let child = trace.child_traceparent();
        assert_eq!(child.len(), 55);
        assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && child.ends_with("-01"));
        assert_eq!(&child[36..52], trace.span_id().to_string());
        let unsampled = TraceContext::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").expect("valid");
        assert!(unsampled.child_traceparent().ends_with("-00"));
        // A later version may carry more fields; the child is written as version 00.
        let future = TraceContext::parse(b"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-next");
        assert!(future.is_some_and(|t| t.child_traceparent().starts_with("00-")));
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for bad in [
            "",
            "00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad:?} was accepted");
        }
    }

    #[test]
    fn finds_the_header_and_stamps_outputs_unless_the_handler_did() {
        let headers: Vec<(String, Option<Vec<u8>>)> =
            vec![("other".into(), None), ("TraceParent".into(), Some(VALID.as_bytes().to_vec()))];
        let trace = TraceContext::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())));
        let trace = trace.expect("found");
        let mut output = Vec::new();
        trace.stamp(&mut output);
        assert_eq!(output, vec![(HEADER.to_owned(), trace.child_traceparent().into_bytes())]);
        let mut own = vec![("traceparent".to_owned(), b"mine".to_vec())];
        trace.stamp(&mut own);
        assert_eq!(own, vec![(HEADER.to_owned(), b"mine".to_vec())]);
        let none: Vec<(String, Option<Vec<u8>>)> = vec![("traceparent".into(), None)];
        assert_eq!(TraceContext::from_headers(none.iter().map(|(n, v)| (n.as_str(), v.as_ref()))), None);
    }

    fn trace_of(headers: &[(&str, &str)]) -> Option<TraceContext> {
        let headers: Vec<(String, Option<Vec<u8>>)> =
            headers.iter().map(|(n, v)| ((*n).to_owned(), Some(v.as_bytes().to_vec()))).collect();
        TraceContext::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())))
    }

    #[test]
    fn carries_tracestate_unchanged_and_joins_repeated_headers() {
        let trace = trace_of(&[("tracestate", "congo=t61rcWkgMzE"), ("traceparent", VALID), ("TraceState", "rojo=1")]);
        let trace = trace.expect("valid");
        let mut output = Vec::new();
        trace.stamp(&mut output);
        assert_eq!(
            output,
            vec![
                (HEADER.to_owned(), trace.child_traceparent().into_bytes()),
                (STATE_HEADER.to_owned(), b"congo=t61rcWkgMzE,rojo=1".to_vec())
            ]
        );
        // The handler's own tracestate wins; its own traceparent starts a trace of its own.
        let mut own_state = vec![("tracestate".to_owned(), b"mine=1".to_vec())];
        trace.stamp(&mut own_state);
        assert_eq!(own_state.iter().filter(|(n, _)| n == STATE_HEADER).count(), 1);
        assert_eq!(own_state[0], (STATE_HEADER.to_owned(), b"mine=1".to_vec()));
        let mut own_parent = vec![("traceparent".to_owned(), b"mine".to_vec())];
        trace.stamp(&mut own_parent);
        assert_eq!(own_parent, vec![(HEADER.to_owned(), b"mine".to_vec())]);
        // No tracestate, no header; without a valid traceparent, tracestate is ignored.
        let mut plain = Vec::new();
        trace_of(&[("traceparent", VALID), ("tracestate", "")]).expect("valid").stamp(&mut plain);
        assert_eq!(plain.len(), 1);
        assert_eq!(trace_of(&[("tracestate", "congo=t61rcWkgMzE")]), None);
    }
}

/// Properties of the parser over generated input: what the specification accepts, and
/// nothing else, parses; what parses formats back to the same ids and flag.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A `traceparent` per W3C Trace Context level 1, written independently of
    /// [`TraceContext::parse`]: fields split at dashes, not read at fixed offsets.
    fn conforms(value: &[u8]) -> bool {
        let lower_hex = |field: &[u8], len: usize| {
            field.len() == len && field.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        };
        let nonzero = |field: &[u8]| field.iter().any(|&b| b != b'0');
        let fields: Vec<&[u8]> = value.split(|&b| b == b'-').collect();
        let [version, trace_id, parent_id, flags, ..] = fields[..] else { return false };
        lower_hex(version, 2)
            && version != b"ff"
            // Version 00 has four fields; a later one may add fields after a dash.
            && (version != b"00" || fields.len() == 4)
            && lower_hex(trace_id, 32)
            && nonzero(trace_id)
            && lower_hex(parent_id, 16)
            && nonzero(parent_id)
            && lower_hex(flags, 2)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A valid traceparent of any version but `ff`, with what a later version may append.
    fn valid() -> impl Strategy<Value = String> {
        let version = (0u8..0xff).prop_map(|v| format!("{v:02x}"));
        let trace_id = any::<[u8; 16]>().prop_filter("all-zero trace id", |id| *id != [0; 16]);
        let parent_id = any::<[u8; 8]>().prop_filter("all-zero parent id", |id| *id != [0; 8]);
        (version, trace_id, parent_id, any::<u8>(), "(-[ -~]{0,12})?").prop_map(
            |(version, trace_id, parent_id, flags, tail)| {
                let tail = if version == "00" { String::new() } else { tail };
                format!("{version}-{}-{}-{flags:02x}{tail}", hex(&trace_id), hex(&parent_id))
            },
        )
    }

    /// Text close to a valid traceparent: one byte changed, a range cut out, or bytes added,
    /// which is where a parser reading fixed offsets goes wrong.
    fn near_valid() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![Just(b'-'), Just(b'0'), Just(b'f'), Just(b'F'), Just(b'g'), Just(b'x'), any::<u8>()];
        (valid(), any::<prop::sample::Index>(), any::<prop::sample::Index>(), byte, 0..4u8).prop_map(
            |(text, at, to, byte, how)| {
                let mut value = text.into_bytes();
                let (at, to) = (at.index(value.len()), to.index(value.len() + 1));
                match how {
                    0 => value[at] = byte,
                    1 => drop(value.drain(at.min(to)..at.max(to))),
                    2 => value.insert(at, byte),
                    _ => value.push(byte),
                }
                value
            },
        )
    }

    /// Text built field by field, each field valid or at one of the grammar's edges (an
    /// all-zero id, version `ff`, upper case, one digit too many or too few), so that every
    /// rule of the grammar is met and broken often.
    fn fields() -> impl Strategy<Value = String> {
        let version = prop_oneof!["00", "ff", "[0-9a-f]{2}", "[0-9a-fA-Fg]{1,3}"];
        let regex = |pattern: String| prop::string::string_regex(&pattern).expect("a valid regex");
        let id = |len: usize| {
            prop_oneof![
                Just("0".repeat(len)),
                regex(format!("[0-9a-f]{{{len}}}")),
                regex(format!("0{{{}}}[1-9a-f]", len - 1)),
                regex(format!("[0-9a-fA-F]{{{len}}}")),
                regex(format!("[0-9a-f]{{{},{}}}", len - 1, len + 1)),
            ]
        };
        let flags = prop_oneof!["[0-9a-f]{2}", "[0-9a-fA-Fx]{1,3}"];
        let separator = prop_oneof![8 => Just("-"), 1 => Just("_"), 1 => Just("")];
        let tail = prop_oneof![Just(String::new()), Just("-".to_owned()), "-[ -~]{1,8}", "[ -~]{1,3}"];
        (version, separator.clone(), id(32), separator.clone(), id(16), separator, flags, tail).prop_map(
            |(version, s1, trace_id, s2, parent_id, s3, flags, tail)| {
                format!("{version}{s1}{trace_id}{s2}{parent_id}{s3}{flags}{tail}")
            },
        )
    }

    /// `name` with the letters whose bit is set in `mask` in upper case.
    fn any_case(name: &'static str) -> impl Strategy<Value = String> {
        any::<u16>().prop_map(move |mask| {
            name.chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 16) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    /// Headers of a consumed message (or of a handler's output): trace headers in any case,
    /// others, values valid, nearly valid or not traceparents at all, or absent.
    fn headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
        let name = prop_oneof![any_case(HEADER), any_case(STATE_HEADER), "[a-z.-]{0,12}"];
        let value = prop_oneof![
            valid().prop_map(String::into_bytes),
            near_valid(),
            fields().prop_map(String::into_bytes),
            "[ -~]{0,10}".prop_map(String::into_bytes),
            Just(Vec::new()),
        ];
        prop::collection::vec((name, prop::option::weighted(0.9, value)), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn from_headers_reads_the_first_traceparent_and_joins_every_tracestate(headers in headers()) {
            let trace = TraceContext::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())));
            let first = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(HEADER));
            let valid = first.and_then(|(_, value)| value.as_deref()).filter(|value| conforms(value));
            prop_assert_eq!(trace.is_some(), valid.is_some());
            let (Some(trace), Some(valid)) = (trace, valid) else { return Ok(()) };
            prop_assert_eq!(trace.trace_id().to_string(), String::from_utf8_lossy(&valid[3..35]));
            prop_assert_eq!(trace.parent_id().to_string(), String::from_utf8_lossy(&valid[36..52]));
            let states: Vec<&[u8]> = headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(STATE_HEADER))
                .filter_map(|(_, value)| value.as_deref())
                .filter(|value| !value.is_empty())
                .collect();
            let expected = (!states.is_empty()).then(|| states.join(&b","[..]));
            prop_assert_eq!(trace.state, expected);
        }

        #[test]
        fn stamp_adds_the_trace_headers_only_where_the_handler_set_none(
            parent in valid(),
            state in prop::option::of("[ -~]{1,10}".prop_map(String::into_bytes)),
            given in headers(),
        ) {
            let mut trace = TraceContext::parse(parent.as_bytes()).ok_or_else(|| TestCaseError::fail("refused"))?;
            trace.state = state.clone();
            let given: Vec<(String, Vec<u8>)> =
                given.into_iter().map(|(name, value)| (name, value.unwrap_or_default())).collect();
            let mut headers = given.clone();
            trace.stamp(&mut headers);
            let has = |header: &str| given.iter().any(|(name, _)| name.eq_ignore_ascii_case(header));
            let mut expected = given.clone();
            if !has(HEADER) {
                expected.push((HEADER.to_owned(), trace.child_traceparent().into_bytes()));
                if let (Some(state), false) = (state, has(STATE_HEADER)) {
                    expected.push((STATE_HEADER.to_owned(), state));
                }
            }
            prop_assert_eq!(headers, expected);
        }

        #[test]
        fn a_valid_traceparent_parses_to_its_ids_and_flag(
            version in (0u8..0xff).prop_map(|v| format!("{v:02x}")),
            trace_id in any::<[u8; 16]>().prop_filter("zero", |id| *id != [0; 16]),
            parent_id in any::<[u8; 8]>().prop_filter("zero", |id| *id != [0; 8]),
            flags in any::<u8>(),
        ) {
            let text = format!("{version}-{}-{}-{flags:02x}", hex(&trace_id), hex(&parent_id));
            let parsed = TraceContext::parse(text.as_bytes());
            let trace = parsed.ok_or_else(|| TestCaseError::fail(format!("{text} refused")))?;
            prop_assert_eq!(trace.trace_id, trace_id);
            prop_assert_eq!(trace.parent_id, parent_id);
            prop_assert_eq!(trace.sampled, flags & 1 == 1);
            prop_assert_eq!(trace.trace_id().to_string(), hex(&trace_id));
            prop_assert_eq!(trace.parent_id().to_string(), hex(&parent_id));
            prop_assert_ne!(trace.span_id, [0; 8]);
        }

        #[test]
        fn the_child_traceparent_parses_back_to_the_trace_and_the_processing_span(text in valid()) {
            let trace = TraceContext::parse(text.as_bytes());
            let trace = trace.ok_or_else(|| TestCaseError::fail(format!("{text} refused")))?;
            let child = trace.child_traceparent();
            prop_assert!(conforms(child.as_bytes()), "{} does not conform", child);
            prop_assert!(child.starts_with("00-"), "{}", child);
            let parsed = TraceContext::parse(child.as_bytes());
            let parsed = parsed.ok_or_else(|| TestCaseError::fail(format!("child {child} refused")))?;
            prop_assert_eq!(parsed.trace_id, trace.trace_id);
            prop_assert_eq!(parsed.parent_id, trace.span_id);
            prop_assert_eq!(parsed.sampled, trace.sampled);
        }

        #[test]
        fn text_built_field_by_field_parses_exactly_when_it_conforms(text in fields()) {
            prop_assert_eq!(TraceContext::parse(text.as_bytes()).is_some(), conforms(text.as_bytes()), "{}", text);
        }

        #[test]
        fn near_valid_text_parses_exactly_when_it_conforms(value in near_valid()) {
            let parsed = TraceContext::parse(&value);
            prop_assert_eq!(parsed.is_some(), conforms(&value), "{:?}", String::from_utf8_lossy(&value));
        }

        #[test]
        fn arbitrary_bytes_parse_exactly_when_they_conform(value in prop::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(TraceContext::parse(&value).is_some(), conforms(&value));
        }
    }
}
