//! RFC 3339 times (`2026-11-26T10:00:00Z`, `2026-11-26T11:00:00.250+01:00`) to
//! milliseconds since the Unix epoch, as Kafka's offsets-for-times lookup wants them.
//! Parsed by `jiff`, which checks the calendar: `2026-02-31T00:00:00Z` is refused, not
//! taken as 3 March.

/// Parses `text`; `None` when it is not an RFC 3339 date and time with a zone (or `Z`).
pub(crate) fn parse_millis(text: &str) -> Option<i64> {
    let timestamp: jiff::Timestamp = text.trim().parse().ok()?;
    Some(timestamp.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn utc_offsets_and_fractions() {
        assert_eq!(parse_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_millis("2026-11-26T10:00:00Z"), Some(1_795_687_200_000));
        assert_eq!(parse_millis("2026-11-26T11:00:00.250+01:00"), Some(1_795_687_200_250));
        assert_eq!(parse_millis("2000-02-29T23:59:59.9-00:30"), Some(951_870_599_900));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T10:00:00",
            "12345",
            "2026-02-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-04-31T12:00:00+02:00",
            "2026-11-26T24:00:01Z",
        ] {
            assert_eq!(parse_millis(text), None, "{text}");
        }
    }
}
