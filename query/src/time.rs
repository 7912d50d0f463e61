//! Times as people write them on a command line or in a URL.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::{Error, Result};

const RELATIVE: &str = "expected now-<number><d|h|w>, e.g. now-30d";

/// A time on the command line: RFC 3339 (`2026-01-31T12:00:00+01:00`), a date (`2026-01-31`,
/// midnight UTC), `now`, or `now-30d` / `now-12h` / `now-2w`. Whatever the text, the answer is
/// a time or an error saying what to write; nothing panics.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix("now-") {
        let digits = rel.bytes().take_while(u8::is_ascii_digit).count();
        let (n, unit) = rel.split_at(digits);
        let bad = || Error::BadRequest(format!("{s:?}: {RELATIVE}"));
        let n: i64 = n.parse().map_err(|_| bad())?;
        let d = match unit {
            "d" => Duration::try_days(n),
            "h" => Duration::try_hours(n),
            "w" => Duration::try_weeks(n),
            _ => return Err(bad()),
        };
        return d.and_then(|d| now.checked_sub_signed(d)).ok_or_else(|| {
            Error::BadRequest(format!(
                "{s:?} is before the earliest time cdlake can represent"
            ))
        });
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(midnight) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(Error::BadRequest(format!(
        "{s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), now or now-30d"
    )))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_on_the_command_line() {
        let now = now();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("now-2d", now).unwrap().to_rfc3339(),
            "2026-11-26T12:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-31", now).unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-01-31T05:30:00+05:30", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
    }

    #[test]
    fn what_once_panicked_is_an_error_naming_the_format() {
        let now = now();
        for s in [
            "now-5é",
            "now-💥",
            "now-200000000000d",
            "now-99999999999999w",
            "now-",
            "now-d",
            "now--5d",
            "now-9223372036854775807h",
        ] {
            let e = parse_time(s, now).expect_err(s);
            assert!(matches!(e, Error::BadRequest(_)), "{s}: {e}");
            assert_eq!(e.status(), 400, "{s}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_a_time_or_an_error(s in "\\PC{0,40}") {
            let _ = parse_time(&s, now());
        }

        #[test]
        fn any_relative_time_is_a_time_or_an_error(n in any::<i64>(), unit in "[a-zé💥]{0,2}") {
            let _ = parse_time(&format!("now-{n}{unit}"), now());
        }

        #[test]
        fn relative_days_go_back_exactly(n in 0i64..1_000_000) {
            let t = parse_time(&format!("now-{n}d"), now()).unwrap();
            prop_assert_eq!(now() - t, Duration::days(n));
        }
    }
}
