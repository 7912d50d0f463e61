//! Times as people write them on a command line or in a URL.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::{Error, Result};

/// A time on the command line: RFC 3339 (`2026-01-31T12:00:00+01:00`), a date (`2026-01-31`,
/// midnight UTC), `now`, or `now-30d` / `now-12h` / `now-2w`.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix("now-") {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = n
            .parse()
            .map_err(|_| Error::BadRequest(format!("{s:?}: expected now-<number><d|h|w>")))?;
        let d = match unit {
            "d" => Duration::days(n),
            "h" => Duration::hours(n),
            "w" => Duration::weeks(n),
            _ => {
                return Err(Error::BadRequest(format!(
                    "{s:?}: expected now-<number><d|h|w>"
                )));
            }
        };
        return Ok(now - d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(Error::BadRequest(format!(
        "{s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), now or now-30d"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_on_the_command_line() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
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
}
