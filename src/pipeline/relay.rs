//! Streaming back: the upstream's remaining events go to the client as they
//! arrive, normalized. A stream always ends with `data: [DONE]`, after an
//! error chunk if the upstream broke, cut out or ran past the deadline; a
//! client that goes away cancels the upstream request (dropping its body
//! closes the connection).
//!
//! On a route with `resume = true`, a text answer that breaks is continued
//! on the route's next target instead: it is given the partial answer as an
//! assistant message and asked to go on, and its stream is spliced in, so
//! the client sees one stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use tower::ServiceExt;

use super::exchange::{Caller, Exchange, RouteTable};
use super::Handles;
use crate::body::{self, Body, BoxError};
use crate::error::{ApiError, ErrorKind, UpstreamError};
use crate::provider::{event_error, normalize_event, Answer};
use crate::wire::agent::{self, ToolEvent};
use crate::wire::chat::{ChatBody, Endpoint};
use crate::wire::encode::StreamEncoder;
use crate::wire::messages;
use crate::wire::sse::{self, SseEvent, SseReader};
use crate::wire::usage::Usage;

/// Silence longer than this gets a `: keep-alive` comment, so proxies and
/// browsers between us and the client do not time the stream out.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

/// How many times one stream may be continued elsewhere.
const MAX_RESUMES: u32 = 2;

const CONTINUE_PROMPT: &str =
    "Your previous answer was cut off mid-way. Continue it exactly where it stopped: \
do not repeat anything already written and do not comment on the interruption.";

pub struct Relay {
    pub handles: Arc<Handles>,
    pub provider: String,
    /// Tokens the attempt charged to the provider's `tpm` before sending.
    pub estimated_tokens: u32,
    /// The stream is the agent loop's: its usage was counted step by step
    /// (so it is only noted here), and its internal events (tool calls, its
    /// failure) are honoured; from an upstream they are ignored.
    pub agent: bool,
    /// Set when the stream is in the client's own dialect (Messages), passed
    /// through untranslated: its events go on as they came, named, and only
    /// their usage (tallied in this map) and errors are read.
    pub native: Option<Map<String, Value>>,
    pub deadline: Instant,
    /// The configured `request_timeout`, for the message when `deadline` passes.
    pub timeout: Duration,
    pub resume: Option<Resume>,
    /// The stream's usage once an event reported it, for the log.
    pub usage: Option<Usage>,
    /// Writes the events in the client's dialect.
    pub encoder: Box<dyn StreamEncoder>,
}

/// What continuing a broken stream needs: the request as the client sent it
/// and the answer so far.
pub struct Resume {
    pub routes: Arc<RouteTable>,
    pub route: String,
    pub request: ChatBody,
    pub caller: Option<Arc<Caller>>,
    text: String,
    /// False once the answer carries tool calls: those cannot be spliced.
    text_only: bool,
    resumes: u32,
}

impl Resume {
    pub fn new(
        routes: Arc<RouteTable>,
        route: String,
        request: ChatBody,
        caller: Option<Arc<Caller>>,
    ) -> Self {
        Resume {
            routes,
            route,
            request,
            caller,
            text: String::new(),
            text_only: true,
            resumes: 0,
        }
    }

    fn observe(&mut self, event: &[u8]) {
        let Some(json) = event.strip_prefix(b"data: ") else {
            return;
        };
        let Ok(chunk) = serde_json::from_slice::<Value>(json) else {
            return;
        };
        let delta = &chunk["choices"][0]["delta"];
        if let Some(text) = delta["content"].as_str() {
            self.text.push_str(text);
        }
        if delta.get("tool_calls").is_some_and(|t| !t.is_null()) {
            self.text_only = false;
        }
    }
}

/// Starts relaying and returns the client's body at once.
pub fn start(mut relay: Relay, first: Bytes, rest: Option<SseReader>) -> Body {
    let (tx, body) = body::channel(16);
    // The relay outlives the handler: keep its log lines in the request's span.
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            if let Some(resume) = &mut relay.resume {
                resume.observe(&first);
            }
            if let Some(tally) = &mut relay.native {
                // `message_start`: the input side of the usage.
                for data in sse::payloads(&first) {
                    let data = String::from_utf8_lossy(data);
                    let _ = messages::stream_usage(tally, &data);
                }
            }
            if relay.send(&tx, first).await.is_err() {
                return;
            }
            if let Some(reader) = rest {
                relay.run(reader, &tx).await;
            }
        }
        .instrument(span),
    );
    body
}

impl Relay {
    async fn run(&mut self, mut reader: SseReader, tx: &mpsc::Sender<Bytes>) {
        loop {
            let Some(err) = self.pump(&mut reader, tx).await else {
                return;
            };
            // Boxed: it is rarely needed, and would otherwise size every stream's task.
            match Box::pin(self.continue_elsewhere(&err, tx)).await {
                Some(Some(next)) => reader = next,
                Some(None) => return, // the continuation came whole
                None => return self.fail(tx, err).await,
            }
        }
    }

    /// Relays until the stream ends (`None`) or breaks (`Some(why)`).
    async fn pump(
        &mut self,
        reader: &mut SseReader,
        tx: &mpsc::Sender<Bytes>,
    ) -> Option<UpstreamError> {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return None, // client went away: drop the upstream
                _ = tokio::time::sleep_until(self.deadline) => {
                    let end = self.encoder.fail(&ApiError::Timeout(self.timeout).to_json());
                    let _ = tx.send(end).await;
                    return None;
                }
                next = tokio::time::timeout(KEEP_ALIVE_EVERY, reader.next()) => next,
            };
            let event = match next {
                Err(_silence) => {
                    if tx.send(Bytes::from_static(sse::KEEP_ALIVE)).await.is_err() {
                        return None;
                    }
                    continue;
                }
                Ok(read) => match upstream_event(read) {
                    Ok(event) => event,
                    Err(err) => return Some(err),
                },
            };
            let data = match event {
                SseEvent::Comment => continue, // upstream keep-alives are not data
                SseEvent::Data {
                    event: Some(name),
                    data,
                } if self.agent && name == agent::EVENT => {
                    if let Ok(event) = serde_json::from_str::<ToolEvent>(&data) {
                        let bytes = self.encoder.tool(&event);
                        if tx.send(bytes).await.is_err() {
                            return None;
                        }
                    }
                    continue;
                }
                SseEvent::Data {
                    event: Some(name),
                    data,
                } if self.agent && name == agent::FAILED => {
                    let error = serde_json::from_str(&data).unwrap_or_default();
                    let _ = tx.send(self.encoder.fail(&error)).await;
                    return None;
                }
                SseEvent::Data { event, data } if self.native.is_some() => {
                    match self.pass_on(event, data, tx).await {
                        Ok(true) => continue,
                        Ok(false) => {
                            reader.finish();
                            return None;
                        }
                        Err(err) => return Some(err),
                    }
                }
                SseEvent::Data { data, .. } => data,
            };
            if data == "[DONE]" {
                reader.finish();
                let _ = self.send(tx, Bytes::from_static(sse::DONE)).await;
                self.finished();
                return None;
            }
            match normalize_event(&data) {
                Ok((bytes, usage)) => {
                    if let Some(usage) = usage {
                        if !self.agent {
                            self.handles.account(
                                &self.provider,
                                None,
                                self.estimated_tokens,
                                usage,
                            );
                        }
                        self.usage = Some(usage);
                    }
                    if let Some(resume) = &mut self.resume {
                        resume.observe(&bytes);
                    }
                    if self.send(tx, bytes).await.is_err() {
                        return None;
                    }
                }
                Err(err) => return Some(err),
            }
        }
    }

    /// One event of a stream in the client's own dialect, sent on as it
    /// came. Ok(false): the stream is over (ended, or the client left).
    async fn pass_on(
        &mut self,
        event: Option<String>,
        data: String,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<bool, UpstreamError> {
        let name = event.unwrap_or_else(|| "message".into());
        if name == "error" {
            let value: Value = serde_json::from_str(&data).unwrap_or_default();
            return Err(event_error(&value).unwrap_or_else(|| {
                UpstreamError::transport(ErrorKind::ServerError, "the stream sent an error")
            }));
        }
        if let Some(tally) = &mut self.native {
            if let Some(usage) = messages::stream_usage(tally, &data) {
                self.usage = Some(usage);
            }
        }
        let end = name == "message_stop";
        if self
            .send(tx, sse::named(&name, data.as_bytes()))
            .await
            .is_err()
        {
            return Ok(false);
        }
        if end {
            self.finished();
        }
        Ok(!end)
    }

    /// The stream ended as it should: its usage is accounted and logged.
    fn finished(&self) {
        if let Some(usage) = self.usage.filter(|_| !self.agent) {
            if self.native.is_some() {
                self.handles
                    .account(&self.provider, None, self.estimated_tokens, usage);
            }
        }
        tracing::info!(
            provider = %self.provider,
            prompt_tokens = self.usage.map(|u| u.prompt),
            completion_tokens = self.usage.map(|u| u.completion),
            "stream finished"
        );
    }

    /// With `resume = true`: asks the route's other targets to finish the
    /// answer, sends their first event, and returns the rest of their stream
    /// (`Some(None)` when that first event was the end). `None`: no resume.
    async fn continue_elsewhere(
        &mut self,
        err: &UpstreamError,
        tx: &mpsc::Sender<Bytes>,
    ) -> Option<Option<SseReader>> {
        let resume = self.resume.as_mut()?;
        if !resume.text_only || resume.resumes >= MAX_RESUMES {
            return None;
        }
        resume.resumes += 1;
        tracing::warn!(provider = %self.provider, "stream broke ({}); resuming on the next target", err.message);
        let mut request = resume.request.clone();
        if let Some(Value::Array(messages)) = request.tree_mut().get_mut("messages") {
            messages.push(json!({"role": "assistant", "content": resume.text}));
            messages.push(json!({"role": "user", "content": CONTINUE_PROMPT}));
        }
        let (plan, service) = resume.routes.resolve(&resume.route).ok()?;
        let mut plan = (*plan).clone();
        plan.targets.retain(|t| t.provider.name != self.provider);
        if plan.targets.is_empty() {
            return None;
        }
        let exchange = Exchange {
            endpoint: Endpoint::Chat,
            body: request,
            plan: Arc::new(plan),
            deadline: self.deadline,
            routes: resume.routes.clone(),
            caller: resume.caller.clone(),
            native: None,
        };
        let served = service.oneshot(exchange).await.ok()?;
        let Answer::Stream { first, rest } = served.answer else {
            return None;
        };
        self.handles
            .metrics
            .fallbacks
            .with_label_values(&[&resume.route, &self.provider, &served.provider])
            .inc();
        self.provider = served.provider;
        self.estimated_tokens = served.estimated_tokens;
        resume.observe(&first);
        self.send(tx, first).await.ok()?;
        Some(rest)
    }

    async fn fail(&mut self, tx: &mpsc::Sender<Bytes>, err: UpstreamError) {
        tracing::warn!(provider = %self.provider, outcome = err.kind.as_str(), "stream failed after it began: {}", err.message);
        self.handles
            .metrics
            .upstream_requests
            .with_label_values(&[&self.provider, err.kind.as_str()])
            .inc();
        let mut json = err.to_openai_json();
        json["error"]["message"] = format!("{}: {}", self.provider, err.message).into();
        let end = self.encoder.fail(&json);
        let _ = tx.send(end).await;
    }

    /// Sends `events` in the client's dialect; Err once the client is gone.
    async fn send(&mut self, tx: &mpsc::Sender<Bytes>, events: Bytes) -> Result<(), ()> {
        if self.native.is_some() {
            return tx.send(events).await.map_err(|_| ());
        }
        let encoded = self.encoder.encode(events);
        if let Some(settling) = self.encoder.settle() {
            settling.await;
        }
        if encoded.is_empty() {
            return Ok(());
        }
        tx.send(encoded).await.map_err(|_| ())
    }
}

/// An upstream stream's next event, or why the stream broke: it ended
/// before `[DONE]`, or the connection failed.
pub(super) fn upstream_event(
    read: Result<Option<SseEvent>, BoxError>,
) -> Result<SseEvent, UpstreamError> {
    let broken = |message: String| UpstreamError::transport(ErrorKind::ServerError, message);
    match read {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(broken("the upstream stream ended before [DONE]".into())),
        Err(e) => Err(broken(format!("the upstream stream broke: {e}"))),
    }
}
