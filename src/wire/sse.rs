//! Server-sent events: a reader that turns an upstream body into events, and
//! the few encodings the proxy writes.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// A `:` line: upstream keep-alive chatter (`: OPENROUTER PROCESSING`).
    Comment,
    /// `data:` lines joined by `\n`, with the `event:` name if one was given.
    Data { event: Option<String>, data: String },
}

/// Work done inside one `next` call before it lets the runtime in: an
/// upstream that sends faster than we parse must not starve the timers
/// (first_byte_timeout, the deadline) or other requests on this worker.
const YIELD_EVERY: usize = 256 * 1024;

/// Reads events from a body as they arrive, without waiting for the whole body.
///
/// The upstream is untrusted, so what the reader holds is bounded: the event
/// being read (its name, its data lines and a line not yet ended) never
/// exceeds `max_event_bytes`; a longer one ends the stream with an error.
/// Every byte is looked at once: a frame is scanned only where the previous
/// one stopped.
pub struct SseReader {
    body: Body,
    /// The unscanned rest of the last frame the body gave.
    frame: Bytes,
    /// A line begun in an earlier frame, still without its newline.
    partial: BytesMut,
    event: Option<String>,
    data: Option<String>,
    ended: bool,
    max_event_bytes: usize,
    high_water: usize,
    /// Masked wherever it appears in an event's data: upstreams sometimes
    /// echo the key they were sent.
    secret: Option<Box<str>>,
    /// Shown every event's data as it is read (see [`SseReader::tap`]).
    tap: Option<Tap>,
}

/// Something that watches a stream's events go by.
pub type Tap = Box<dyn FnMut(&str) + Send + Sync>;

enum Scan {
    Event(SseEvent),
    /// The frame is used up: the body must give more.
    Drained,
    /// The work budget of this call is spent; the frame is not.
    Busy,
}

impl SseReader {
    pub fn new(body: Body, max_event_bytes: usize) -> Self {
        SseReader {
            body,
            frame: Bytes::new(),
            partial: BytesMut::new(),
            event: None,
            data: None,
            ended: false,
            max_event_bytes,
            high_water: 0,
            secret: None,
            tap: None,
        }
    }

    /// Shows `tap` every event's data (masked) from now on, for layers that
    /// keep something of a stream they do not consume themselves.
    pub fn tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// Masks `secret` in every event's data from now on.
    pub fn mask(mut self, secret: Option<&str>) -> Self {
        self.secret = secret.filter(|s| !s.is_empty()).map(Into::into);
        self
    }

    /// The most bytes of events this reader has held at once (frames the
    /// body hands over are not counted: they are the body's).
    pub fn buffered(&self) -> usize {
        self.high_water
    }

    /// Reads what is left of the body in the background, for at most a
    /// second: after `[DONE]` an HTTP/1 answer still has its closing chunk
    /// to give, and only a body read to its end lets its upstream
    /// connection serve another request (a body dropped short closes it,
    /// and the next stream pays for a new one).
    pub fn finish(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut rest = std::mem::replace(&mut self.body, body::empty());
        tokio::spawn(async move {
            let drained = async { while let Some(Ok(_)) = rest.frame().await {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
        });
    }

    /// The next event; `Ok(None)` when the body ended (a final event without
    /// its blank line is still delivered first). An event or line over
    /// `max_event_bytes` is an error, after which the body is dropped.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, BoxError> {
        let mut work = 0;
        loop {
            match self.scan(&mut work) {
                Ok(Scan::Event(event)) => return Ok(Some(self.seen(event))),
                Ok(Scan::Busy) => {
                    work = 0;
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(Scan::Drained) => {}
                Err(e) => {
                    self.abandon();
                    return Err(e);
                }
            }
            if self.ended {
                return Ok(self.flush().map(|e| self.seen(e)));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.frame = data;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    self.ended = true;
                    // A last line without its newline is still a line.
                    if !self.partial.is_empty() {
                        self.frame = Bytes::from_static(b"\n");
                    }
                }
            }
        }
    }

    /// Lines out of the current frame until one completes an event.
    fn scan(&mut self, work: &mut usize) -> Result<Scan, BoxError> {
        while !self.frame.is_empty() {
            if *work >= YIELD_EVERY {
                return Ok(Scan::Busy);
            }
            let held = self.held();
            // A newline further than this would make the event too large:
            // no need to look that far.
            let room = self.max_event_bytes.saturating_sub(held);
            let window = &self.frame[..self.frame.len().min(room.saturating_add(1))];
            let Some(at) = memchr::memchr(b'\n', window) else {
                if held + self.frame.len() > self.max_event_bytes {
                    return Err(self.too_large());
                }
                *work += self.frame.len();
                self.partial.extend_from_slice(&self.frame);
                self.frame.clear();
                self.note();
                break;
            };
            // Within the window, so the line fits beside what is held.
            let head = self.frame.split_to(at + 1);
            *work += head.len();
            let line = if self.partial.is_empty() {
                head
            } else {
                self.partial.extend_from_slice(&head);
                self.partial.split().freeze()
            };
            if let Some(event) = self.line(strip_eol(&line))? {
                return Ok(Scan::Event(event));
            }
        }
        Ok(Scan::Drained)
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, BoxError> {
        if line.is_empty() {
            return Ok(self.flush());
        }
        if line[0] == b':' {
            return Ok(self.data.is_none().then_some(SseEvent::Comment));
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        // Invalid UTF-8 grows as it is replaced (one byte, three of U+FFFD),
        // so the line's size alone does not bound what is kept.
        let kept = matches!(field, "data" | "event");
        if kept && self.held() + value.len() + 1 > self.max_event_bytes {
            return Err(self.too_large());
        }
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry: nothing the proxy needs
        }
        self.note();
        Ok(None)
    }

    fn flush(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent::Data { event, data })
    }

    fn held(&self) -> usize {
        self.partial.len()
            + self.data.as_ref().map_or(0, String::len)
            + self.event.as_ref().map_or(0, String::len)
    }

    fn note(&mut self) {
        self.high_water = self.high_water.max(self.held());
    }

    fn too_large(&self) -> BoxError {
        format!(
            "an upstream event is larger than max_event_bytes ({} bytes)",
            self.max_event_bytes
        )
        .into()
    }

    /// After an error nothing more is read: the upstream connection goes.
    fn abandon(&mut self) {
        self.body = body::empty();
        self.frame = Bytes::new();
        self.partial = BytesMut::new();
        self.event = None;
        self.data = None;
        self.ended = true;
    }

    fn seen(&mut self, event: SseEvent) -> SseEvent {
        let event = self.masked(event);
        if let (Some(tap), SseEvent::Data { data, .. }) = (&mut self.tap, &event) {
            tap(data);
        }
        event
    }

    fn masked(&self, event: SseEvent) -> SseEvent {
        match (event, self.secret.as_deref()) {
            (SseEvent::Data { event, data }, Some(key)) if data.contains(key) => SseEvent::Data {
                event,
                data: data.replace(key, "***"),
            },
            (event, _) => event,
        }
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub fn data(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

pub fn named(event: &str, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + event.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&data(json));
    out.freeze()
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The JSON payloads of the `data:` events in `events`; `[DONE]` included.
pub fn payloads(events: &[u8]) -> impl Iterator<Item = &[u8]> {
    events
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;
    /// `[server] max_event_bytes`'s default.
    const LIMIT: usize = 8 * MIB;

    async fn read_all(text: &'static str) -> Vec<SseEvent> {
        let mut reader = SseReader::new(full(text), LIMIT);
        let mut out = vec![];
        while let Some(e) = reader.next().await.unwrap() {
            out.push(e);
        }
        out
    }

    fn data_event(s: &str) -> SseEvent {
        SseEvent::Data {
            event: None,
            data: s.into(),
        }
    }

    #[tokio::test]
    async fn splits_events_and_comments_with_either_line_ending() {
        let events =
            read_all(": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\r\n\r\ndata: [DONE]\n\n").await;
        assert_eq!(
            events,
            vec![
                SseEvent::Comment,
                data_event("{\"a\":1}"),
                data_event("[DONE]")
            ]
        );
    }

    #[tokio::test]
    async fn joins_multiline_data_and_keeps_event_names() {
        let events = read_all("event: message_start\ndata: a\ndata: b\n\n").await;
        assert_eq!(
            events,
            vec![SseEvent::Data {
                event: Some("message_start".into()),
                data: "a\nb".into()
            }]
        );
    }

    #[tokio::test]
    async fn delivers_a_final_event_missing_its_blank_line() {
        assert_eq!(read_all("data: tail").await, vec![data_event("tail")]);
    }

    /// `count` copies of `frame`, then `tail`, each as the body hands it over.
    fn frames(frame: Bytes, count: usize, tail: &'static [u8]) -> Body {
        let body = futures_util::stream::iter(0..count)
            .map(move |_| frame.clone())
            .chain(futures_util::stream::once(async move {
                Bytes::from_static(tail)
            }))
            .map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
        BodyExt::boxed(StreamBody::new(body))
    }

    async fn first_error(reader: &mut SseReader) -> String {
        loop {
            match reader.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => return e.to_string(),
            }
        }
    }

    #[tokio::test]
    async fn a_64_mib_line_is_refused_holding_no_more_than_the_limit() {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let body = frames(chunk, 1024, b"\n\n");
        let mut reader = SseReader::new(body, LIMIT);
        let err = first_error(&mut reader).await;
        assert!(err.contains("max_event_bytes (8388608 bytes)"), "{err}");
        assert!(reader.buffered() <= LIMIT, "{}", reader.buffered());
        assert!(
            reader.next().await.unwrap().is_none(),
            "nothing after the error"
        );
    }

    #[tokio::test]
    async fn an_unterminated_100_mib_run_of_data_lines_is_refused_within_the_limit() {
        let mut line = b"data: ".to_vec();
        line.resize(1023, b'y');
        line.push(b'\n');
        let chunk = Bytes::from(line.repeat(64));
        // 100 MiB of data lines, and the blank line that would end the event.
        let body = frames(chunk, 1600, b"\n");
        let mut reader = SseReader::new(body, LIMIT);
        let err = first_error(&mut reader).await;
        assert!(err.contains("max_event_bytes"), "{err}");
        assert!(reader.buffered() <= LIMIT, "{}", reader.buffered());
        assert!(reader.buffered() > LIMIT - 2048, "{}", reader.buffered());
    }

    #[tokio::test]
    async fn a_huge_line_in_one_frame_is_refused_and_an_event_at_the_limit_passes() {
        let mut huge = b"data: ".to_vec();
        huge.resize(64 * MIB, b'z');
        huge.extend_from_slice(b"\n\n");
        let mut reader = SseReader::new(full(huge), LIMIT);
        first_error(&mut reader).await;
        assert!(reader.buffered() <= LIMIT);

        // Two lines of 1 KiB: within 2 KiB, not within 1.5 KiB.
        let value = "v".repeat(1019);
        let text = format!("data:{value}\ndata:{value}\n\n");
        let mut reader = SseReader::new(full(text.clone()), 2048);
        let event = reader.next().await.unwrap().unwrap();
        assert_eq!(event, data_event(&format!("{value}\n{value}")));
        let mut reader = SseReader::new(full(text), 1536);
        first_error(&mut reader).await;
    }

    #[tokio::test]
    async fn lines_split_across_frames_are_joined() {
        let body = frames(Bytes::from_static(b"data: ab"), 3, b"c\n\ndata: [DONE]\n\n");
        let mut reader = SseReader::new(body, LIMIT);
        assert_eq!(
            reader.next().await.unwrap(),
            Some(data_event("abdata: abdata: abc"))
        );
        assert_eq!(reader.next().await.unwrap(), Some(data_event("[DONE]")));
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_body_that_never_stops_sending_does_not_starve_timers() {
        // Endless blank lines, always ready: no event ever completes and the
        // body never makes the reader wait.
        let body = frames(Bytes::from(vec![b'\n'; 64 * 1024]), usize::MAX, b"");
        let mut reader = SseReader::new(body, LIMIT);
        let timed = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(timed.is_err(), "the timeout fired");
    }

    #[tokio::test]
    async fn the_provider_key_is_masked_in_every_event() {
        let text = "data: {\"echo\":\"sk-live-123\"}\n\ndata: sk-live-123 again sk-live-123\n\n";
        let mut reader = SseReader::new(full(text), LIMIT).mask(Some("sk-live-123"));
        assert_eq!(
            reader.next().await.unwrap(),
            Some(data_event("{\"echo\":\"***\"}"))
        );
        assert_eq!(
            reader.next().await.unwrap(),
            Some(data_event("*** again ***"))
        );
    }
}
