//! The stream an agent answer is written to: canonical chat chunks under
//! one stream id for every step, the internal tool events between them, and
//! the end. The relay reads it like an upstream's and writes each event in
//! the client's dialect.

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::wire::agent::{self, StreamId, ToolEvent};
use crate::wire::sse;

/// The client went away (the relay dropped the stream).
#[derive(Debug)]
pub struct Gone;

pub struct Sink {
    tx: mpsc::Sender<Bytes>,
    pub stream: StreamId,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Bytes>, stream: StreamId) -> Self {
        Sink { tx, stream }
    }

    async fn send(&self, bytes: Bytes) -> Result<(), Gone> {
        self.tx.send(bytes).await.map_err(|_| Gone)
    }

    /// Resolves once the client is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// A chunk of this stream with `delta`.
    pub fn chunk(&self, delta: Map<String, Value>, finish_reason: Option<&str>) -> Bytes {
        let chunk = self
            .stream
            .chunk(json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]));
        sse::data(&serde_json::to_vec(&chunk).unwrap_or_default())
    }

    pub async fn delta(&self, delta: Map<String, Value>) -> Result<(), Gone> {
        self.send(self.chunk(delta, None)).await
    }

    pub async fn tool(&self, event: &ToolEvent) -> Result<(), Gone> {
        self.send(event.encode()).await
    }

    /// The client's own tool calls, the finish reason, usage if asked for,
    /// and `[DONE]`.
    pub async fn finish(
        &self,
        calls: Vec<Value>,
        finish_reason: &str,
        usage: Option<Value>,
    ) -> Result<(), Gone> {
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    c["index"] = i.into();
                    c
                })
                .collect();
            let mut delta = Map::new();
            delta.insert("tool_calls".into(), calls.into());
            self.delta(delta).await?;
        }
        self.send(self.chunk(Map::new(), Some(finish_reason)))
            .await?;
        if let Some(usage) = usage {
            let mut chunk = self.stream.chunk(json!([]));
            chunk["usage"] = usage;
            self.send(sse::data(&serde_json::to_vec(&chunk).unwrap_or_default()))
                .await?;
        }
        self.send(Bytes::from_static(sse::DONE)).await
    }

    /// The loop failed after the stream began: the relay ends the stream
    /// with `error` (OpenAI's shape) in the client's dialect.
    pub async fn fail(&self, error: Value) {
        let json = serde_json::to_vec(&error).unwrap_or_default();
        let _ = self.send(sse::named(agent::FAILED, &json)).await;
    }
}
