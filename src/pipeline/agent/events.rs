//! A streamed step's chunks, one at a time, normalized as the relay would
//! normalize them for a client: the first event the attempt already read,
//! then the rest of the upstream's stream.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::Value;

use crate::error::UpstreamError;
use crate::pipeline::relay::upstream_event;
use crate::provider::normalize_event;
use crate::wire::sse::{self, SseEvent, SseReader};

pub struct Events {
    queued: VecDeque<Value>,
    /// `[DONE]` was among the queued events.
    done: bool,
    rest: Option<SseReader>,
}

impl Events {
    pub fn new(first: Bytes, rest: Option<SseReader>) -> Self {
        let mut events = Events {
            queued: VecDeque::new(),
            done: false,
            rest,
        };
        for payload in sse::payloads(&first) {
            if payload == b"[DONE]" {
                events.done = true;
            } else if let Ok(chunk) = serde_json::from_slice(payload) {
                events.queued.push_back(chunk);
            }
        }
        events
    }

    /// The next chunk; `None` after `[DONE]`.
    pub async fn next(&mut self) -> Result<Option<Value>, UpstreamError> {
        if let Some(chunk) = self.queued.pop_front() {
            return Ok(Some(chunk));
        }
        if self.done {
            return Ok(None);
        }
        let Some(reader) = &mut self.rest else {
            // The whole answer came in the first read.
            return Ok(None);
        };
        loop {
            let data = match upstream_event(reader.next().await)? {
                SseEvent::Data { data, .. } => data,
                SseEvent::Comment => continue,
            };
            if data == "[DONE]" {
                self.done = true;
                return Ok(None);
            }
            let (bytes, _) = normalize_event(&data)?;
            let Some(payload) = sse::payloads(&bytes).next() else {
                continue;
            };
            if let Ok(chunk) = serde_json::from_slice(payload) {
                return Ok(Some(chunk));
            }
        }
    }
}
