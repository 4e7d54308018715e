//! Small helpers shared by the modules: capped exponential backoff, RFC 3339 parsing (Docker's
//! timestamps), query-string encoding and Docker name sanitizing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Capped exponential backoff: 100 ms, 200 ms, 400 ms … up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(start: Duration, cap: Duration) -> Self {
        Backoff {
            start,
            cap,
            next: start,
        }
    }

    /// The standard agent backoff: start 100 ms, cap 5 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The delay to wait now; doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

/// Nanoseconds since the epoch for an RFC 3339 timestamp as Docker writes them
/// (`2024-05-01T12:34:56.123456789Z`, or with a `+02:00` offset). `None` for malformed input
/// and for Docker's zero time (`0001-01-01T00:00:00Z`) and anything before 1971.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 9 {
                nanos = nanos * 10 + i64::from(c - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z') | Some(b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            let v = oh * 3600 + om * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    if year < 1971 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch (ECS timestamp style) for nanoseconds since the epoch.
pub fn ns_to_epoch_secs(ns: i64) -> f64 {
    (ns / 1_000_000) as f64 / 1000.0
}

/// Percent-encodes a query-string component (everything but RFC 3986 unreserved characters).
pub fn urlencode(s: &str) -> String {
    gantry_auth::sigv4::percent_encode(s)
}

/// Makes `s` acceptable as a Docker container or volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`):
/// other characters become `-`, and a leading character that is not alphanumeric is
/// prefixed with `x`.
pub fn sanitize_docker_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        out.insert(0, 'x');
    }
    out
}

/// Sleep until `deadline`, or forever when there is none (a `select!` arm that never fires).
pub async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::standard();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(parse_rfc3339_ns("1970-01-02T00:00:00Z"), None); // before 1971
        assert_eq!(
            parse_rfc3339_ns("2021-01-01T00:00:00Z"),
            Some(1_609_459_200_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2021-01-01T00:00:00.123456789Z"),
            Some(1_609_459_200_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2021-01-01T00:00:00.5Z"),
            Some(1_609_459_200_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2021-01-01T02:00:00+02:00"),
            Some(1_609_459_200_000_000_000)
        );
        assert_eq!(parse_rfc3339_ns("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ns("garbage"), None);
        assert_eq!(parse_rfc3339_ns("2021-13-01T00:00:00Z"), None);
        // Leap year day.
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T12:00:00Z"),
            Some(1_709_208_000_000_000_000)
        );
    }

    #[test]
    fn encodes_query_components() {
        assert_eq!(
            urlencode("arn:aws:ecs:us-east-1:0:cluster/a b"),
            "arn%3Aaws%3Aecs%3Aus-east-1%3A0%3Acluster%2Fa%20b"
        );
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(
            sanitize_docker_name("ecs-web-3-app-0123"),
            "ecs-web-3-app-0123"
        );
        assert_eq!(sanitize_docker_name("ecs-my app/x:1"), "ecs-my-app-x-1");
        assert_eq!(sanitize_docker_name("_x"), "x_x");
        assert_eq!(sanitize_docker_name("é"), "x-");
    }
}
