//! The access log: one line per proxied request. Written by hand into a
//! reused buffer and handed to a non-blocking writer, because through
//! `tracing`'s formatter it was an eighth of a request's instructions
//! (benches/README.md, issue 15) and its `write(2)` sat on the request's path.
//!
//! The line says what the `tracing` event said, in the same place of the
//! same output: text like the formatter's (`... INFO request{id=..}:
//! hermes_proxy::http::edge: POST /v1/chat/completions route=...`) or its
//! JSON. It obeys `RUST_LOG` like any info event of `hermes_proxy::http::edge`.
//! Without a sink installed (the library embedded, the tests) the line goes
//! through `tracing` as before.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Where finished lines go; must not block (a full buffer drops the line).
pub type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

struct Installed {
    sink: Sink,
    json: bool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Sends access lines to `sink` from now on, as JSON or text. Once per process.
pub fn install(sink: Sink, json: bool) {
    let _ = INSTALLED.set(Installed { sink, json });
}

/// One proxied request, as the log line tells it.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub provider: &'a str,
    pub attempts: u32,
    pub status: u16,
    pub ms: u64,
    pub upstream_ms: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

const TARGET: &str = "hermes_proxy::http::edge";

/// Logs `line` if info events of this module are enabled.
pub fn log(line: &Line<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let Some(installed) = INSTALLED.get() else {
        tracing::info!(
            route = line.route,
            provider = line.provider,
            attempts = line.attempts,
            status = line.status,
            ms = line.ms,
            upstream_ms = line.upstream_ms,
            prompt_tokens = line.prompt_tokens,
            completion_tokens = line.completion_tokens,
            "{} {}",
            line.method,
            line.path
        );
        return;
    };
    thread_local! {
        static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(256));
    }
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        if installed.json {
            json(&mut buffer, line);
        } else {
            text(&mut buffer, line);
        }
        (installed.sink)(buffer.as_bytes());
    });
}

fn timestamp(out: &mut String) {
    timestamp_of(out, SystemTime::now());
}

/// RFC 3339 with microseconds, as `humantime` writes it. The date and time
/// of day are formatted once a second: through `fmt` they were a third of
/// writing a line.
fn timestamp_of(out: &mut String, at: SystemTime) {
    thread_local! {
        /// A second, and its text up to the fraction ("2026-12-02T13:49:12").
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != since.as_secs() {
            let (seconds, text) = &mut *second;
            text.clear();
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(at));
            text.pop(); // its `Z`
            *seconds = since.as_secs();
        }
        out.push_str(&second.1);
    });
    out.push('.');
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    out.extend(std::iter::repeat_n('0', 6 - micros.len()));
    out.push_str(micros);
    out.push('Z');
}

fn text(out: &mut String, l: &Line<'_>) {
    timestamp(out);
    out.push_str("  INFO request{id=");
    out.push_str(l.request_id);
    out.push_str("}: ");
    out.push_str(TARGET);
    out.push_str(": ");
    out.push_str(l.method);
    out.push(' ');
    out.push_str(l.path);
    out.push_str(" route=\"");
    out.push_str(l.route);
    out.push_str("\" provider=\"");
    out.push_str(l.provider);
    out.push('"');
    let mut number = |name: &str, n: u64| {
        out.push(' ');
        out.push_str(name);
        out.push('=');
        out.push_str(itoa::Buffer::new().format(n));
    };
    number("attempts", u64::from(l.attempts));
    number("status", u64::from(l.status));
    number("ms", l.ms);
    number("upstream_ms", l.upstream_ms);
    if let Some(n) = l.prompt_tokens {
        number("prompt_tokens", n);
    }
    if let Some(n) = l.completion_tokens {
        number("completion_tokens", n);
    }
    out.push('\n');
}

/// The shape of `tracing-subscriber`'s JSON events.
fn json(out: &mut String, l: &Line<'_>) {
    let string = |out: &mut String, s: &str| {
        // serde_json escapes exactly as the JSON formatter does.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    };
    out.push_str("{\"timestamp\":\"");
    timestamp(out);
    out.push_str("\",\"level\":\"INFO\",\"fields\":{\"message\":");
    string(out, &format!("{} {}", l.method, l.path));
    out.push_str(",\"route\":");
    string(out, l.route);
    out.push_str(",\"provider\":");
    string(out, l.provider);
    let _ = write!(
        out,
        ",\"attempts\":{},\"status\":{},\"ms\":{},\"upstream_ms\":{}",
        l.attempts, l.status, l.ms, l.upstream_ms
    );
    if let Some(n) = l.prompt_tokens {
        let _ = write!(out, ",\"prompt_tokens\":{n}");
    }
    if let Some(n) = l.completion_tokens {
        let _ = write!(out, ",\"completion_tokens\":{n}");
    }
    out.push_str("},\"target\":\"");
    out.push_str(TARGET);
    out.push_str("\",\"span\":{\"id\":");
    string(out, l.request_id);
    out.push_str(",\"name\":\"request\"},\"spans\":[{\"id\":");
    string(out, l.request_id);
    out.push_str(",\"name\":\"request\"}]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_as_humantime_writes_it() {
        use std::time::Duration;
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_683_352);
        for micros in [0, 7, 123_456, 999_999, 1_000_000 + 42, 3_600_000_000 + 1] {
            let at = base + Duration::from_micros(micros);
            let mut ours = String::new();
            timestamp_of(&mut ours, at);
            assert_eq!(ours, humantime::format_rfc3339_micros(at).to_string());
        }
    }

    fn line() -> Line<'static> {
        Line {
            request_id: "req_1",
            method: "POST",
            path: "/v1/chat/completions",
            route: "default",
            provider: "kimi",
            attempts: 2,
            status: 200,
            ms: 41,
            upstream_ms: 39,
            prompt_tokens: Some(12),
            completion_tokens: None,
        }
    }

    #[test]
    fn the_text_line_reads_like_the_formatters() {
        let mut out = String::new();
        text(&mut out, &line());
        let (_, rest) = out.split_once("  INFO ").unwrap();
        assert_eq!(
            rest,
            "request{id=req_1}: hermes_proxy::http::edge: POST /v1/chat/completions route=\"default\" provider=\"kimi\" attempts=2 status=200 ms=41 upstream_ms=39 prompt_tokens=12\n"
        );
    }

    #[test]
    fn the_json_line_is_json_with_the_formatters_fields() {
        let mut out = String::new();
        let mut l = line();
        l.path = "/v1/\"odd\"";
        json(&mut out, &l);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["fields"]["message"], "POST /v1/\"odd\"");
        assert_eq!(v["fields"]["attempts"], 2);
        assert_eq!(v["fields"]["prompt_tokens"], 12);
        assert!(v["fields"].get("completion_tokens").is_none());
        assert_eq!(v["span"]["id"], "req_1");
        assert_eq!(v["level"], "INFO");
    }
}
