//! RFC 3339 times as rackform writes and reads them, through `time`: whole seconds in UTC
//! (`2026-01-02T03:04:05Z`) out, any fraction and offset in.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds as RFC 3339 in UTC; a time out of range reads as the epoch.
pub fn format(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// A system time as RFC 3339 in UTC, in whole seconds.
pub fn format_system(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format(seconds)
}

/// Unix seconds of an RFC 3339 time; `None` when it is not one.
pub fn parse(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(parse("2024-03-01T01:59:59.5+02:00"), Some(1_709_251_199));
        assert_eq!(parse("yesterday"), None);
        // As the Packet API writes `created_at`.
        assert_eq!(parse("2019-08-24T14:15:22Z"), Some(1_566_656_122));
        assert_eq!(parse("2021-09-03T16:32:00+03:00"), Some(1_630_675_920));
        for bad in [
            "",
            "2019-08-24",
            "2019-13-24T14:15:22Z",
            "2019-08-24T14:15:22",
            "2019-08-24T14:15:22+3",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(format_system(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
