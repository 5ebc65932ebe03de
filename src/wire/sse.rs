//! Server-sent events: a reader that turns an upstream body into events, and
//! the few encodings the proxy writes.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// A `:` line: upstream keep-alive chatter (`: OPENROUTER PROCESSING`).
    Comment,
    /// `data:` lines joined by `\n`, with the `event:` name if one was given.
    Data { event: Option<String>, data: String },
}

/// Reads events from a body as they arrive, without waiting for the whole body.
pub struct SseReader {
    body: Body,
    buf: BytesMut,
    event: Option<String>,
    data: Option<String>,
    ended: bool,
}

impl SseReader {
    pub fn new(body: Body) -> Self {
        SseReader {
            body,
            buf: BytesMut::new(),
            event: None,
            data: None,
            ended: false,
        }
    }

    /// The next event; `Ok(None)` when the body ended (a final event without
    /// its blank line is still delivered first).
    pub async fn next(&mut self) -> Result<Option<SseEvent>, BoxError> {
        loop {
            if let Some(event) = self.next_buffered() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(self.flush());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    self.ended = true;
                    // A last line without its newline is still a line.
                    if !self.buf.is_empty() {
                        self.buf.extend_from_slice(b"\n");
                    }
                }
            }
        }
    }

    fn next_buffered(&mut self) -> Option<SseEvent> {
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(pos + 1);
            let line = strip_eol(&line);
            if line.is_empty() {
                if let Some(event) = self.flush() {
                    return Some(event);
                }
                continue;
            }
            if line[0] == b':' {
                if self.data.is_none() {
                    return Some(SseEvent::Comment);
                }
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let (field, value) = match text.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*text, ""),
            };
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
        }
        None
    }

    fn flush(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent::Data { event, data })
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

    async fn read_all(text: &'static str) -> Vec<SseEvent> {
        let mut reader = SseReader::new(full(text));
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
}
