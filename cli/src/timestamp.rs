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

/// Properties of the time parser over generated dates: a date and time with a zone gives
/// its instant, counted here without `jiff`, in any form written; an impossible one none.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::parse_millis;

    fn leap(year: i64) -> bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days from 1970-01-01 to the date (Howard Hinnant's `days_from_civil`).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// A date and time of day: year, month, day, hour, minute, second, millisecond.
    #[derive(Debug, Clone)]
    struct Civil {
        year: i64,
        month: i64,
        day: i64,
        hour: i64,
        minute: i64,
        second: i64,
        milli: i64,
    }

    /// A valid date and time; years 0001 to 9998, so that every offset keeps the instant
    /// within the years `jiff` counts.
    fn civil() -> impl Strategy<Value = Civil> {
        (1i64..=9998, 1i64..=12)
            .prop_flat_map(|(year, month)| (Just(year), Just(month), 1..=days_in_month(year, month)))
            .prop_flat_map(|(year, month, day)| (Just((year, month, day)), 0i64..24, 0i64..60, 0i64..60, 0i64..1000))
            .prop_map(|((year, month, day), hour, minute, second, milli)| Civil {
                year,
                month,
                day,
                hour,
                minute,
                second,
                milli,
            })
    }

    /// A UTC offset in minutes, as RFC 3339 writes them (hours 00 to 23).
    fn offset() -> impl Strategy<Value = i64> {
        prop_oneof![Just(0i64), -(23i64 * 60 + 59)..=(23 * 60 + 59)]
    }

    fn millis(civil: &Civil, offset_minutes: i64) -> i64 {
        let seconds = days_from_civil(civil.year, civil.month, civil.day) * 86_400
            + civil.hour * 3600
            + civil.minute * 60
            + civil.second
            - offset_minutes * 60;
        seconds * 1000 + civil.milli
    }

    /// `civil` at `offset` in RFC 3339, each of the choices it leaves open taken by a bit
    /// of `form`: `T`, `t` or a space between date and time; `Z`, `z`, `+00:00` or `-00:00`
    /// for UTC; the fraction with zeros after it or without those it needs; blanks around.
    fn written(civil: &Civil, offset: i64, form: u8) -> String {
        let separator = ["T", "t", " "][usize::from(form % 3)];
        let fraction = match (form / 3) % 3 {
            0 if civil.milli == 0 => String::new(),
            0 => format!(".{:03}", civil.milli).trim_end_matches('0').to_owned(),
            1 => format!(".{:03}", civil.milli),
            _ => format!(".{:03}000000", civil.milli),
        };
        let zone = match (offset, (form / 9) % 4) {
            (0, 0) => "Z".to_owned(),
            (0, 1) => "z".to_owned(),
            (0, 3) => "-00:00".to_owned(),
            (offset, _) => {
                format!("{}{:02}:{:02}", if offset < 0 { '-' } else { '+' }, offset.abs() / 60, offset.abs() % 60)
            }
        };
        let blank = if form >= 128 { " " } else { "" };
        format!(
            "{blank}{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{fraction}{zone}{blank}",
            civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_time_with_a_zone_gives_its_instant_in_every_form(civil in civil(), offset in offset(), form in any::<u8>()) {
            let text = written(&civil, offset, form);
            prop_assert_eq!(parse_millis(&text), Some(millis(&civil, offset)), "{}", text);
        }

        #[test]
        fn an_impossible_date_or_time_is_refused(
            civil in civil(),
            offset in offset(),
            field in 0..5u8,
            excess in 0i64..40,
        ) {
            let mut civil = civil;
            match field {
                0 => civil.day = days_in_month(civil.year, civil.month) + 1 + excess % (32 - days_in_month(civil.year, civil.month)),
                1 => civil.month = 13 + excess,
                2 => civil.hour = 24 + excess,
                3 => civil.minute = 60 + excess,
                // 60 is a leap second, read as 59.
                _ => civil.second = 61 + excess,
            }
            let text = written(&civil, offset, 0);
            prop_assert_eq!(parse_millis(&text), None, "{}", text);
        }

        #[test]
        fn a_time_without_a_zone_is_refused(civil in civil(), form in any::<u8>()) {
            let text = written(&civil, 0, form % 9);
            let local = text.trim_end_matches(['Z', 'z']);
            prop_assert_eq!(parse_millis(local), None, "{}", local);
        }

        #[test]
        fn any_text_gives_an_instant_that_reads_back_or_none(text in prop_oneof![any::<String>(), "[0-9T:.+Zz -]{0,30}"]) {
            if let Some(millis) = parse_millis(&text) {
                let again = jiff::Timestamp::from_millisecond(millis).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(parse_millis(&again.to_string()), Some(millis), "{}", text);
            }
        }
    }
}
