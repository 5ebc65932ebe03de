//! Retry hints: when an upstream said to come back, from whichever of the
//! headers and message wordings it used (`Retry-After` in seconds or as an
//! HTTP date, OpenAI's and Anthropic's bucket resets, Go durations, "try
//! again in 20s"). HTTP dates and RFC 3339 times are read by httpdate and
//! humantime; the spoken and Go-style durations are the providers' own mix,
//! which no crate reads, so they are parsed here.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

pub(super) const NANOS_PER_MS: u128 = 1_000_000;
pub(super) const NANOS_PER_SEC: u128 = 1_000_000_000;

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date
/// already past gives no hint, so a later source (or the caller's own
/// backoff) decides instead of a zero wait born of clock skew.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    parse_decimal(value, NANOS_PER_SEC).or_else(|| {
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()
    })
}

/// The latest reset among buckets that are exhausted: their `remaining` is 0,
/// or, on a 429, unknown. A bucket with room left is not what stopped us, and
/// its reset (when it is full again) would only overstate the wait.
pub(super) fn bucket_reset(
    headers: &HeaderMap,
    now: SystemTime,
    throttled: bool,
) -> Option<Duration> {
    const GO_DURATION_BUCKETS: &[(&str, &str)] = &[
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ];
    const RFC3339_BUCKETS: &[(&str, &str)] = &[
        (
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ),
        (
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ),
        (
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ),
    ];
    let exhausted = |remaining: &str| match header(headers, remaining) {
        Some(v) => v.parse::<f64>().map_or(throttled, |n| n <= 0.0),
        None => throttled,
    };
    let go = GO_DURATION_BUCKETS
        .iter()
        .filter(|(remaining, _)| exhausted(remaining))
        .filter_map(|(_, reset)| parse_go_duration(header(headers, reset)?));
    let rfc = RFC3339_BUCKETS
        .iter()
        .filter(|(remaining, _)| exhausted(remaining))
        .filter_map(|(_, reset)| {
            parse_rfc3339(header(headers, reset)?)?
                .duration_since(now)
                .ok()
        });
    go.chain(rfc).max()
}

/// Every header `hint` reads starts so.
pub(super) fn is_hint_header(name: &str) -> bool {
    name.starts_with("retry-after")
        || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
}

/// "try again after 1 seconds" (Kimi), "try again in 644ms" / "in 1.5s"
/// (OpenAI), "retry after 20 seconds" (Azure), "retry in 32.5s" (Gemini).
pub(super) fn message_hint(message: &str) -> Option<Duration> {
    const MARKERS: &[&str] = &[
        "try again in ",
        "try again after ",
        "retry after ",
        "retry in ",
    ];
    let lower = message.to_lowercase();
    MARKERS.iter().find_map(|marker| {
        lower
            .match_indices(marker)
            .find_map(|(at, _)| spoken_duration(&lower[at + marker.len()..]))
    })
}

/// A duration at the start of `text`: "644ms.", "6m0s", "1 seconds", "2 minutes".
pub(super) fn spoken_duration(text: &str) -> Option<Duration> {
    let mut words = text.split_whitespace();
    let first = words.next()?.trim_end_matches(['.', ',', ';', ')']);
    if let Some(d) = parse_go_duration(first) {
        return Some(d);
    }
    let unit = words.next()?.trim_end_matches(['.', ',', ';', ')']);
    let unit_nanos = match unit {
        "ms" | "millisecond" | "milliseconds" => NANOS_PER_MS,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SEC,
        "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SEC,
        "h" | "hour" | "hours" => 3600 * NANOS_PER_SEC,
        _ => return None,
    };
    parse_decimal(first, unit_nanos)
}

/// Go's `time.Duration` text as OpenAI sends it: "1s", "6m0s", "12ms",
/// "1m30.5s". Integer arithmetic so "644ms" is exactly 644 ms.
pub(super) fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => NANOS_PER_MS,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        total = total.saturating_add(parse_decimal(number, unit_nanos)?);
        rest = tail;
    }
    (!text.is_empty()).then_some(total)
}

/// A non-negative decimal ("7", "1.5", "1500.25") times a unit in
/// nanoseconds; one too large for a `Duration` is `Duration::MAX`.
pub(super) fn parse_decimal(text: &str, unit_nanos: u128) -> Option<Duration> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
        return None;
    }
    // Digits beyond nanosecond precision of the largest unit change nothing.
    let frac = &frac[..frac.len().min(18)];
    // Only digits: a failed parse is an overflow.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().unwrap_or(u128::MAX)
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let nanos = whole
        .saturating_mul(unit_nanos)
        .saturating_add(frac_value * unit_nanos / 10u128.pow(frac.len() as u32));
    Some(match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    })
}

/// An RFC 3339 time, as Anthropic's reset headers send it. humantime reads
/// the UTC form (`Z`) only, so a numeric offset (`+02:00`) is taken off here.
pub(super) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let offset = text.len().checked_sub(6).and_then(|i| {
        let (head, tail) = (text.get(..i)?, text.get(i..)?);
        let east = match tail.as_bytes() {
            [b'+', _, _, b':', _, _] => true,
            [b'-', _, _, b':', _, _] => false,
            _ => return None,
        };
        let (hours, minutes): (u64, u64) = (tail[1..3].parse().ok()?, tail[4..6].parse().ok()?);
        Some((head, east, Duration::from_secs(hours * 3600 + minutes * 60)))
    });
    match offset {
        None => humantime::parse_rfc3339(text).ok(),
        Some((local, east, by)) => {
            let as_if_utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
            if east {
                as_if_utc.checked_sub(by)
            } else {
                as_if_utc.checked_add(by)
            }
        }
    }
}
