//! Streaming back: the upstream's remaining events go to the client as they
//! arrive, normalized. A stream always ends with `data: [DONE]`, after an
//! error chunk if the upstream broke, cut out or ran past the deadline; a
//! client that goes away cancels the upstream request (dropping its body
//! closes the connection).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::sse::{self, SseEvent, SseReader};
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::provider::classify::{ErrorKind, UpstreamError};
use crate::provider::normalize_event;
use crate::state::Shared;

/// Silence longer than this gets a `: keep-alive` comment, so proxies and
/// browsers between us and the client do not time the stream out.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

pub struct Relay {
    pub shared: Arc<Shared>,
    pub provider: String,
    pub deadline: Instant,
    /// The configured `request_timeout`, for the message when `deadline` passes.
    pub timeout: Duration,
}

/// Starts relaying and returns the client's body at once.
pub fn start(relay: Relay, first: Bytes, rest: Option<SseReader>) -> Body {
    let (tx, body) = body::channel(16);
    tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        if let Some(reader) = rest {
            relay.run(reader, &tx).await;
        }
    });
    body
}

impl Relay {
    async fn run(&self, mut reader: SseReader, tx: &mpsc::Sender<Bytes>) {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return, // client went away: drop the upstream
                _ = tokio::time::sleep_until(self.deadline) => {
                    let err = ApiError::Timeout(self.timeout);
                    return finish_with_error(tx, &err.to_json()).await;
                }
                next = tokio::time::timeout(KEEP_ALIVE_EVERY, reader.next()) => next,
            };
            let event = match next {
                Err(_silence) => {
                    if tx.send(Bytes::from_static(sse::KEEP_ALIVE)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => {
                    let err = broken("the upstream stream ended before [DONE]");
                    return self.fail(tx, err).await;
                }
                Ok(Err(e)) => {
                    return self
                        .fail(tx, broken(&format!("the upstream stream broke: {e}")))
                        .await
                }
            };
            let data = match event {
                SseEvent::Comment => continue, // upstream keep-alives are not data
                SseEvent::Data { data, .. } => data,
            };
            if data == "[DONE]" {
                let _ = tx.send(Bytes::from_static(sse::DONE)).await;
                return;
            }
            match normalize_event(&data) {
                Ok((bytes, usage)) => {
                    if let Some(usage) = usage {
                        self.shared.metrics.record_usage(&self.provider, usage);
                    }
                    if tx.send(bytes).await.is_err() {
                        return;
                    }
                }
                Err(err) => return self.fail(tx, err).await,
            }
        }
    }

    async fn fail(&self, tx: &mpsc::Sender<Bytes>, err: UpstreamError) {
        tracing::warn!(provider = %self.provider, outcome = err.kind.as_str(), "stream failed after it began: {}", err.message);
        self.shared
            .metrics
            .upstream_requests
            .with_label_values(&[&self.provider, err.kind.as_str()])
            .inc();
        let mut json = err.to_openai_json();
        json["error"]["message"] = format!("{}: {}", self.provider, err.message).into();
        finish_with_error(tx, &json).await;
    }
}

fn broken(message: &str) -> UpstreamError {
    UpstreamError::transport(ErrorKind::ServerError, message)
}

async fn finish_with_error(tx: &mpsc::Sender<Bytes>, error: &serde_json::Value) {
    let chunk = sse::data(&serde_json::to_vec(error).unwrap_or_default());
    if tx.send(chunk).await.is_ok() {
        let _ = tx.send(Bytes::from_static(sse::DONE)).await;
    }
}
