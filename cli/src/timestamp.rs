//! RFC 3339 times (`2026-11-26T10:00:00Z`, `2026-11-26T11:00:00.250+01:00`) to
//! milliseconds since the Unix epoch, as Kafka's offsets-for-times lookup wants them.

/// Parses `text`; `None` when it is not an RFC 3339 date and time with a zone.
pub(crate) fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, zone_minutes) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0)
    } else {
        let split = rest.rfind(['+', '-'])?;
        let (time, zone) = rest.split_at(split);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone[1..].split_once(':')?;
        (time, sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?))
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.split(':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next()?.parse().ok()?;
    if clock_parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let millis: i64 = if fraction.is_empty() {
        0
    } else {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{fraction:0<3}")[..3].parse().ok()?
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) - zone_minutes * 60) * 1_000 + millis)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
        for text in ["", "yesterday", "2026-11-26", "2026-13-01T00:00:00Z", "2026-11-26T10:00:00", "12345"] {
            assert_eq!(parse_millis(text), None, "{text}");
        }
    }
}
