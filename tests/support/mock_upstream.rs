//! A programmable mock upstream: a real HTTP server on `127.0.0.1:0` that
//! plays an LLM provider for the proxy's integration tests.
//!
//! # Usage
//! ```ignore
//! use support::mock_upstream::{wire, MockUpstream, Reply};
//!
//! let up = MockUpstream::start().await;
//! up.push(wire::openai_rate_limit());                // 1st POST: 429 + retry-after
//! up.push(Reply::chat("hi").delay(Duration::from_millis(50))); // 2nd: slow first byte
//! up.push(Reply::stream_text("a b c").cut_after(2)); // 3rd POST: stream cut mid-way
//! // every later POST gets the default (a normal chat completion), see `set_default`
//! let base = up.base_url();                          // "http://127.0.0.1:PORT/v1"
//! // ... point the proxy at `base`, send requests ...
//! assert_eq!(up.request_count(), 3);
//! assert_eq!(up.requests()[0].body["model"], "gpt-4o");
//! ```
//!
//! # Rules
//! - Any path is accepted. Every request is recorded (method, path, headers,
//!   body parsed as JSON or `Null`) *before* its reply is chosen or sent, so a
//!   request whose reply hangs up or is cut is still in [`MockUpstream::requests`].
//! - **POST** requests consume the script in order ([`MockUpstream::push`]);
//!   once it is empty they get the default reply ([`MockUpstream::set_default`],
//!   itself [`Reply::chat`]`("Hello from mock")` until changed).
//! - **Other methods** (GET, ...) never touch the script. A reply registered with
//!   [`MockUpstream::on_get`] for the exact path is sent (reused every time);
//!   otherwise a path ending in `/models` gets the OpenAI list
//!   `{"object":"list","data":[{"id":"mock-model","object":"model",...}]}` and
//!   anything else a 404 OpenAI-style error.
//! - [`Reply::chat`] and [`Reply::stream_text`] echo the request's `model`
//!   (or `"mock-model"` if it has none) and count one completion token per
//!   whitespace-separated word; `prompt_tokens` is always 10.
//! - Timing only uses `tokio::time::sleep`, so the mock works both on the
//!   multi-thread runtime and under `#[tokio::test(start_paused = true)]`,
//!   where delays and gaps are skipped over by the auto-advancing clock.
//! - The server speaks HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.
//! - Dropping the [`MockUpstream`] (or [`MockUpstream::shutdown`]) stops the
//!   accept loop and every open connection.
//!
//! [`wire`] holds the providers' real error replies from `WIRE.md`, exactly.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::anthropic_wire::{
    kimi_missing_reasoning_400, missing_reasoning_content, thinking_violation,
};

/// The body type the mock answers with: fixed bytes or a timed stream.
type MockBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A running mock upstream. Cheap to query from the test while requests are in flight.
pub struct MockUpstream {
    /// Where the server listens.
    addr: SocketAddr,
    /// Script, default, GET routes and the record, shared with the server task.
    shared: Arc<Mutex<Shared>>,
    /// The accept loop; it owns the per-connection tasks, so aborting it ends them all.
    server: Option<JoinHandle<()>>,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `"POST"`, `"GET"`, ...
    pub method: String,
    /// The URI path without the query, e.g. `"/v1/chat/completions"`.
    pub path: String,
    pub headers: HeaderMap,
    /// The body parsed as JSON, or `Value::Null` when it is empty or not JSON.
    pub body: Value,
    /// The body exactly as received.
    pub raw_body: Bytes,
}

impl Recorded {
    /// The header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the mock does with one request. Build it with the helper functions
/// ([`Reply::chat`], [`Reply::json`], [`Reply::sse`], [`Reply::hang_up`], ...)
/// and the modifiers ([`Reply::header`], [`Reply::delay`], [`Reply::gap`], [`Reply::cut_after`]).
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with an HTTP response.
    Respond(Respond),
    /// Read the request, wait `delay`, then close the connection without a
    /// response (a crashed upstream). The client sees a connection error.
    HangUp { delay: Duration },
}

/// An HTTP answer; build it through [`Reply`].
#[derive(Clone, Debug)]
pub struct Respond {
    status: u16,
    /// Added after the defaults; a name given here replaces that default.
    headers: Vec<(String, String)>,
    body: Body,
    /// Wait before sending the head.
    delay: Duration,
}

#[derive(Clone, Debug)]
enum Body {
    Fixed {
        content_type: String,
        bytes: Bytes,
    },
    /// OpenAI `chat.completion`, rendered against the request.
    OpenAiChat(String),
    /// Anthropic Messages `message`, rendered against the request.
    AnthropicMessage(String),
    Sse {
        events: Events,
        gap: Duration,
        cut_after: Option<usize>,
    },
}

#[derive(Clone, Debug)]
enum Events {
    Fixed(Vec<String>),
    OpenAiText(String),
    AnthropicText(String),
}

impl Reply {
    /// 200 OpenAI `chat.completion` with `text` as the assistant message,
    /// `finish_reason: "stop"`, usage `{prompt_tokens: 10, completion_tokens: words(text), total_tokens}`;
    /// `model` echoes the request's.
    pub fn chat(text: &str) -> Reply {
        Reply::with_body(200, Body::OpenAiChat(text.to_string()))
    }

    /// `status` with `body` as `application/json`.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::raw(status, "application/json", &body.to_string())
    }

    /// `status` with `body` sent verbatim under `content_type`.
    pub fn raw(status: u16, content_type: &str, body: &str) -> Reply {
        Reply::with_body(
            status,
            Body::Fixed {
                content_type: content_type.to_string(),
                bytes: Bytes::from(body.to_string()),
            },
        )
    }

    /// 200 `text/event-stream`; each event is written exactly as given (include
    /// the `data: ...\n\n` or `: comment\n\n` framing yourself), [`Reply::gap`]
    /// apart. The stream ends cleanly after the last one: add `"data: [DONE]\n\n"`
    /// yourself if you want it.
    pub fn sse(events: Vec<String>) -> Reply {
        Reply::with_body(
            200,
            Body::Sse {
                events: Events::Fixed(events),
                gap: Duration::ZERO,
                cut_after: None,
            },
        )
    }

    /// A normal OpenAI stream of `text`: one `chat.completion.chunk` per word
    /// (the first also carries `role: "assistant"`; the pieces concatenate to
    /// `text` exactly, spaces included; an empty text gives one chunk with
    /// `content: ""`), a finish chunk (`delta: {}`, `finish_reason: "stop"`),
    /// then, if the request had `stream_options.include_usage: true`, a chunk
    /// with `choices: []` and the usage (the others then carry `usage: null`),
    /// then `data: [DONE]`.
    pub fn stream_text(text: &str) -> Reply {
        Reply::with_body(
            200,
            Body::Sse {
                events: Events::OpenAiText(text.to_string()),
                gap: Duration::ZERO,
                cut_after: None,
            },
        )
    }

    /// 200 Anthropic Messages `message` with one text block, `stop_reason: "end_turn"`,
    /// usage `{input_tokens: 10, output_tokens: words(text)}`; `model` echoes the request's.
    pub fn anthropic_message(text: &str) -> Reply {
        Reply::with_body(200, Body::AnthropicMessage(text.to_string()))
    }

    /// A normal Anthropic Messages stream of `text`: `message_start`,
    /// `content_block_start`, `ping`, one `content_block_delta` (`text_delta`)
    /// per word, `content_block_stop`, `message_delta` (`end_turn`, usage), `message_stop`.
    pub fn anthropic_stream_text(text: &str) -> Reply {
        Reply::with_body(
            200,
            Body::Sse {
                events: Events::AnthropicText(text.to_string()),
                gap: Duration::ZERO,
                cut_after: None,
            },
        )
    }

    /// Close the connection without any response (simulates a crashed upstream).
    pub fn hang_up() -> Reply {
        Reply::HangUp {
            delay: Duration::ZERO,
        }
    }

    /// Add a response header (ignored by [`Reply::hang_up`]). Several calls
    /// with one name send several values; a name that the mock sets by
    /// default (`content-type`, `cache-control`) is replaced.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Respond(r) = &mut self {
            r.headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Wait `d` after reading the request before sending the head (slow first
    /// byte), or before hanging up.
    pub fn delay(mut self, d: Duration) -> Reply {
        match &mut self {
            Reply::Respond(r) => r.delay = d,
            Reply::HangUp { delay } => *delay = d,
        }
        self
    }

    /// Wait `d` between two events of a stream. Panics on a non-stream reply.
    pub fn gap(mut self, d: Duration) -> Reply {
        match &mut self {
            Reply::Respond(Respond {
                body: Body::Sse { gap, .. },
                ..
            }) => *gap = d,
            other => panic!("Reply::gap needs a stream reply, got {other:?}"),
        }
        self
    }

    /// Send only the first `n_events` events of the stream (all of them if it
    /// has fewer), then close the connection abruptly: no `[DONE]`, and the
    /// chunked body is never terminated, so the client sees a body error.
    /// Panics on a non-stream reply.
    pub fn cut_after(mut self, n_events: usize) -> Reply {
        match &mut self {
            Reply::Respond(Respond {
                body: Body::Sse { cut_after, .. },
                ..
            }) => *cut_after = Some(n_events),
            other => panic!("Reply::cut_after needs a stream reply, got {other:?}"),
        }
        self
    }

    fn with_body(status: u16, body: Body) -> Reply {
        Reply::Respond(Respond {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        })
    }
}

/// The state shared between the test and the server task.
struct Shared {
    /// Replies for the next POSTs, front first.
    script: VecDeque<Reply>,
    /// The reply for a POST when the script is empty.
    default: Reply,
    /// Replies for non-POST requests, by exact path.
    gets: HashMap<String, Reply>,
    /// A context window: a POST whose messages hold more words than this
    /// gets the reply instead of its scripted one (see `enforce_context`).
    context: Option<(usize, Reply)>,
    /// Kimi's check: a tool-call turn without `reasoning_content` gets its 400.
    require_reasoning: bool,
    /// Anthropic's check: a thinking request whose last tool_use turn lacks a
    /// signed thinking block gets its 400.
    require_signatures: bool,
    /// Every request received, in arrival order, but probes.
    requests: Vec<Recorded>,
    /// Model probes: GET .../models, /props, /api/show.
    probes: Vec<Recorded>,
    /// SSE bodies being sent now; one drops when its stream ends or its
    /// connection closes (how a test sees the proxy cancel an upstream).
    open_streams: Arc<AtomicUsize>,
}

/// Counts an SSE body as open for as long as it lives.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        OpenStream(counter.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MockUpstream {
    /// Bind `127.0.0.1:0` and serve in a tokio task until dropped or shut down.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("mock upstream: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("mock upstream: local_addr");
        let shared = Arc::new(Mutex::new(Shared {
            script: VecDeque::new(),
            default: Reply::chat("Hello from mock"),
            gets: HashMap::new(),
            requests: Vec::new(),
            probes: Vec::new(),
            context: None,
            require_reasoning: false,
            require_signatures: false,
            open_streams: Arc::new(AtomicUsize::new(0)),
        }));
        let server = tokio::spawn(accept_loop(listener, shared.clone()));
        MockUpstream {
            addr,
            shared,
            server: Some(server),
        }
    }

    /// `"http://127.0.0.1:PORT/v1"`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Append a reply for a future POST.
    pub fn push(&self, reply: Reply) {
        self.lock().script.push_back(reply);
    }

    /// The reply for POSTs once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    /// The reply to every request for exactly `path` (e.g. `"/v1/models"`,
    /// `"/props"`, `"/api/show"`), whatever its method, replacing the
    /// built-in one and bypassing the script. Reused, not consumed.
    pub fn on_get(&self, path: &str, reply: Reply) {
        self.lock().gets.insert(path.to_string(), reply);
    }

    /// Scripted replies not yet used.
    pub fn remaining(&self) -> usize {
        self.lock().script.len()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests were received so far (all methods).
    /// Plays a model with a context window: every POST whose messages hold
    /// more than `max_words` whitespace-separated words (a stand-in for
    /// tokens that never exceeds a BPE count) gets `reply`, without using
    /// up the script.
    pub fn enforce_context(&self, max_words: usize, reply: Reply) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.context = Some((max_words, reply));
    }

    /// Plays Kimi with thinking on: from now on a POST whose `messages` hold
    /// an assistant message with `tool_calls` but no `reasoning_content`
    /// (absent or null; `""` passes) gets Kimi's 400 naming that message's
    /// index, without using up the script. Recorded like any request.
    pub fn require_reasoning_content(&self) {
        self.lock().require_reasoning = true;
    }

    /// Plays Anthropic: from now on a POST with `thinking.type: "enabled"`
    /// whose last assistant tool_use message does not start with a signed
    /// `thinking` (or a `redacted_thinking`) block gets Anthropic's 400 for
    /// it, without using up the script. Recorded like any request.
    pub fn require_thinking_signatures(&self) {
        self.lock().require_signatures = true;
    }

    /// Model probes received (GET .../models, /props, /api/show), which
    /// `requests` leaves out.
    pub fn probes(&self) -> Vec<Recorded> {
        self.lock().probes.clone()
    }

    /// SSE replies still being sent (their connection still open).
    pub fn open_streams(&self) -> usize {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.open_streams.load(Ordering::SeqCst)
    }

    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Stop serving and wait until the accept loop and all connections are gone.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panicking test thread must not hide the record from the next assertion.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Accept connections forever; each is served in a task of `conns`, which is
/// dropped (aborting them all) when this task is aborted.
async fn accept_loop(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Small replies written in pieces must not wait on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Errors here are the point of hang-ups and cuts, or the client leaving.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The service's error: makes hyper drop the connection without answering.
#[derive(Debug)]
struct HangUp;

impl fmt::Display for HangUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock upstream hung up")
    }
}

impl std::error::Error for HangUp {}

async fn handle(
    shared: Arc<Mutex<Shared>>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, HangUp> {
    let (parts, incoming) = req.into_parts();
    let raw_body = match incoming.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(HangUp),
    };
    let body: Value = serde_json::from_slice(&raw_body).unwrap_or(Value::Null);
    let path = parts.uri.path().to_string();
    let is_post = parts.method == http::Method::POST;

    let (reply, seq, open) = {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let open = s.open_streams.clone();
        // Questions about the model (what a proxy asks to learn a context
        // window) are kept apart, so `requests` counts only API calls.
        let probe =
            (!is_post && path.ends_with("/models")) || path == "/props" || path == "/api/show";
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers,
            body: body.clone(),
            raw_body,
        };
        if probe {
            s.probes.push(recorded);
        } else {
            s.requests.push(recorded);
        }
        let seq = s.requests.len();
        let too_long = s
            .context
            .as_ref()
            .filter(|(max, _)| is_post && words_in(&body) > *max);
        // A strict upstream refuses before it reads the script, as the real one
        // refuses before it runs the model.
        let refused = if is_post {
            strict_refusal(&s, &body)
        } else {
            None
        };
        let reply = if let Some(reply) = refused {
            reply
        } else if let Some((_, reply)) = too_long {
            reply.clone()
        } else if let Some(r) = s.gets.get(&path) {
            // a fixed reply for this path, whatever the method (Ollama's
            // /api/show is a POST that must not use up the script)
            r.clone()
        } else if is_post && !probe {
            let next = s.script.pop_front();
            next.unwrap_or_else(|| s.default.clone())
        } else if path.ends_with("/models") {
            Reply::json(200, models_list())
        } else {
            Reply::json(
                404,
                json!({"error": {
                    "message": format!("mock upstream: no {} route for {path}", parts.method),
                    "type": "invalid_request_error", "param": null, "code": "not_found"}}),
            )
        };
        (reply, seq, open)
    };

    match reply {
        Reply::HangUp { delay } => {
            sleep_unless_zero(delay).await;
            Err(HangUp)
        }
        Reply::Respond(r) => {
            sleep_unless_zero(r.delay).await;
            Ok(render(r, &body, seq, &open))
        }
    }
}

/// The 400 a strict upstream (see `require_reasoning_content`,
/// `require_thinking_signatures`) sends for this request body, if any.
fn strict_refusal(s: &Shared, body: &Value) -> Option<Reply> {
    if s.require_reasoning {
        if let Some(index) = missing_reasoning_content(body) {
            return Some(kimi_missing_reasoning_400(index));
        }
    }
    if s.require_signatures {
        thinking_violation(body)
    } else {
        None
    }
}

async fn sleep_unless_zero(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn models_list() -> Value {
    json!({"object": "list", "data": [
        {"id": "mock-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}
    ]})
}

/// Turn a reply into a response for the request whose JSON body is `req` (the
/// `seq`-th request the mock saw, used in ids).
fn render(r: Respond, req: &Value, seq: usize, open: &Arc<AtomicUsize>) -> Response<MockBody> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let mut headers = HeaderMap::new();
    let body: MockBody = match r.body {
        Body::Fixed {
            content_type,
            bytes,
        } => {
            set(&mut headers, "content-type", &content_type);
            full(bytes)
        }
        Body::OpenAiChat(text) => {
            set(&mut headers, "content-type", "application/json");
            full(openai_completion(&text, &model, seq).to_string().into())
        }
        Body::AnthropicMessage(text) => {
            set(&mut headers, "content-type", "application/json");
            full(anthropic_message(&text, &model, seq).to_string().into())
        }
        Body::Sse {
            events,
            gap,
            cut_after,
        } => {
            set(&mut headers, "content-type", "text/event-stream");
            set(&mut headers, "cache-control", "no-cache");
            let mut events = match events {
                Events::Fixed(events) => events,
                Events::OpenAiText(text) => openai_stream_events(&text, &model, seq, req),
                Events::AnthropicText(text) => anthropic_stream_events(&text, &model, seq),
            };
            if let Some(n) = cut_after {
                events.truncate(n);
            }
            sse_body(events, gap, cut_after.is_some(), OpenStream::new(open))
        }
    };
    let mut replaced = Vec::new();
    for (name, value) in r.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("mock reply: bad header name");
        let value = HeaderValue::from_str(&value).expect("mock reply: bad header value");
        if !replaced.contains(&name) {
            headers.remove(&name);
            replaced.push(name.clone());
        }
        headers.append(name, value);
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(r.status).expect("mock reply: bad status");
    *resp.headers_mut() = headers;
    resp
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    headers.insert(
        name,
        HeaderValue::from_str(value).expect("mock reply: bad header value"),
    );
}

fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Words in a chat request's message contents and tool-call arguments.
fn words_in(body: &Value) -> usize {
    let Some(messages) = body["messages"].as_array() else {
        return 0;
    };
    messages
        .iter()
        .map(|m| {
            let content = m["content"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .count();
            let calls: usize = m["tool_calls"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|c| {
                            c["function"]["arguments"]
                                .as_str()
                                .unwrap_or_default()
                                .split_whitespace()
                                .count()
                        })
                        .sum()
                })
                .unwrap_or(0);
            content + calls
        })
        .sum()
}

/// A body that sends `events` `gap` apart, then ends, or with `cut`, fails
/// (which makes hyper drop the connection mid-body).
fn sse_body(events: Vec<String>, gap: Duration, cut: bool, open: OpenStream) -> MockBody {
    struct St {
        events: VecDeque<String>,
        gap: Duration,
        cut: bool,
        first: bool,
        _open: OpenStream,
    }
    let st = St {
        events: events.into(),
        gap,
        cut,
        first: true,
        _open: open,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(event) = st.events.pop_front() {
            if !st.first {
                sleep_unless_zero(st.gap).await;
            }
            st.first = false;
            Some((Ok(Frame::data(Bytes::from(event))), st))
        } else if st.cut {
            st.cut = false;
            // Let hyper flush what was sent so far before the connection drops.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let err = std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "mock upstream cut the stream",
            );
            Some((Err(err), st))
        } else {
            None
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Split `text` into pieces that each start at a word (the spaces before a
/// word go with it), so that they concatenate back to `text`.
fn word_pieces(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_word = false;
    for c in text.chars() {
        let space = c.is_whitespace();
        if space && prev_word {
            pieces.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        prev_word = !space;
    }
    match pieces.last_mut() {
        // Trailing spaces stay with the last word.
        Some(last) if !prev_word => last.push_str(&cur),
        _ => pieces.push(cur),
    }
    pieces
}

fn openai_completion(text: &str, model: &str, seq: usize) -> Value {
    let n = word_count(text);
    json!({
        "id": format!("chatcmpl-mock-{seq}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
    })
}

fn openai_stream_events(text: &str, model: &str, seq: usize, req: &Value) -> Vec<String> {
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let id = format!("chatcmpl-mock-{seq}");
    let created = now_secs();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        data_event(&c)
    };
    let mut events = Vec::new();
    for (i, piece) in word_pieces(text).into_iter().enumerate() {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        events.push(chunk(delta, Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let n = word_count(text);
        events.push(data_event(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null, "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
        })));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

fn anthropic_message(text: &str, model: &str, seq: usize) -> Value {
    json!({
        "id": format!("msg_mock_{seq}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": word_count(text)}
    })
}

fn anthropic_stream_events(text: &str, model: &str, seq: usize) -> Vec<String> {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_mock_{seq}"), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    for piece in word_pieces(text) {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(ev(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": word_count(text)}}),
    ));
    events.push(ev("message_stop", json!({"type": "message_stop"})));
    events
}

/// `data: <json>\n\n`.
pub fn data_event(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// `t` as RFC 3339 UTC with seconds, e.g. `2026-01-02T03:04:05Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The providers' real replies from `WIRE.md`: status, headers and body exactly
/// as the samples there (ellipses filled in with plausible text where the
/// sample elides them). Each doc line names the kind the proxy should classify it as.
pub mod wire {
    // A test crate that uses none of them would otherwise fail `-D warnings`.
    #[allow(unused_imports)]
    pub use super::super::anthropic_wire::*;
    use super::{data_event, rfc3339, Reply};
    use serde_json::{json, Value};
    use std::time::{Duration, SystemTime};

    fn j(status: u16, body: &str) -> Reply {
        let v: Value = serde_json::from_str(body).expect("wire sample is JSON");
        Reply::json(status, v)
    }

    /// OpenAI 429 TPM limit (rate_limited). Headers: `retry-after: 1`,
    /// `retry-after-ms: 644`, `x-ratelimit-*` with Go-style reset durations
    /// (`x-ratelimit-reset-requests: 6m0s`, `x-ratelimit-reset-tokens: 644ms`).
    pub fn openai_rate_limit() -> Reply {
        j(429, r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#)
            .header("retry-after", "1")
            .header("retry-after-ms", "644")
            .header("x-ratelimit-limit-requests", "500")
            .header("x-ratelimit-remaining-requests", "499")
            .header("x-ratelimit-reset-requests", "6m0s")
            .header("x-ratelimit-limit-tokens", "30000")
            .header("x-ratelimit-remaining-tokens", "63")
            .header("x-ratelimit-reset-tokens", "644ms")
    }

    /// OpenAI 429 `insufficient_quota` (quota_exhausted, never retry). No retry headers.
    pub fn openai_insufficient_quota() -> Reply {
        j(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        )
    }

    /// Kimi 429 `rate_limit_reached_error` (rate_limited), no `code`, **no
    /// Retry-After header**: the wait is only in the text ("after 1 seconds").
    pub fn kimi_rate_limit() -> Reply {
        j(
            429,
            r#"{"error":{"type":"rate_limit_reached_error","message":"Your account org-x<ak-y> request reached organization max RPM: 3, please try again after 1 seconds"}}"#,
        )
    }

    /// Kimi 429 `exceeded_current_quota_error` (quota_exhausted: billing sent as 429).
    pub fn kimi_quota() -> Reply {
        j(
            429,
            r#"{"error":{"type":"exceeded_current_quota_error","message":"Your account is suspended due to insufficient balance, please recharge your account or check your plan and billing details"}}"#,
        )
    }

    /// Kimi 429 `engine_overloaded_error` (overloaded).
    pub fn kimi_overloaded() -> Reply {
        j(
            429,
            r#"{"error":{"type":"engine_overloaded_error","message":"The engine is currently overloaded, please try again later"}}"#,
        )
    }

    /// OpenRouter 429 "Provider returned error" (rate_limited), `retry-after: 1`.
    pub fn openrouter_rate_limit() -> Reply {
        j(429, r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"z-ai/glm-5.3-flash is temporarily rate-limited upstream. Please retry shortly","provider_name":"BaseTen"}}}"#)
            .header("retry-after", "1")
    }

    /// OpenRouter 402 out of credits (quota_exhausted; a smaller max_tokens may pass).
    pub fn openrouter_credits_402() -> Reply {
        j(
            402,
            r#"{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 3395.","code":402,"metadata":{"provider_name":null}}}"#,
        )
    }

    /// Anthropic 429 `rate_limit_error` (rate_limited): `retry-after: 1` and
    /// `anthropic-ratelimit-requests-*` with an RFC 3339 reset 1 s from now.
    pub fn anthropic_rate_limit() -> Reply {
        let reset = rfc3339(SystemTime::now() + Duration::from_secs(1));
        j(429, r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#)
            .header("retry-after", "1")
            .header("anthropic-ratelimit-requests-limit", "50")
            .header("anthropic-ratelimit-requests-remaining", "0")
            .header("anthropic-ratelimit-requests-reset", &reset)
    }

    /// Anthropic 529 `overloaded_error` (overloaded).
    pub fn anthropic_overloaded_529() -> Reply {
        j(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    }

    /// Ollama 503 "server busy" (overloaded); the error is a bare string.
    pub fn ollama_busy_503() -> Reply {
        j(
            503,
            r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#,
        )
    }

    /// llama.cpp server 503 "Loading model" (overloaded).
    pub fn llamacpp_loading_503() -> Reply {
        j(
            503,
            r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#,
        )
    }

    /// OpenAI 400 `context_length_exceeded` (context_length; match on `code`).
    pub fn openai_context_length() -> Reply {
        j(
            400,
            r#"{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        )
    }

    /// vLLM 400, old top-level shape `{"object":"error",...}` (context_length).
    pub fn vllm_context_length() -> Reply {
        j(
            400,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
        )
    }

    /// vLLM 400 "'max_tokens' ... is too large" in the newer `{"error":{...}}`
    /// shape (context_length; lowering max_tokens is the fix).
    pub fn vllm_max_tokens_too_large() -> Reply {
        j(
            400,
            r#"{"error":{"message":"'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).","type":"BadRequestError","param":null,"code":400}}"#,
        )
    }

    /// llama.cpp 400 `exceed_context_size_error` (context_length; match on `type`).
    pub fn llamacpp_context_length() -> Reply {
        j(
            400,
            r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#,
        )
    }

    /// Ollama 400 "prompt too long" (context_length); the error is a bare string.
    pub fn ollama_context_length() -> Reply {
        j(
            400,
            r#"{"error":"prompt too long; exceeded max context length by 4 tokens"}"#,
        )
    }

    /// Kimi 400 "exceeded model token limit" (context_length).
    pub fn kimi_context_length() -> Reply {
        j(
            400,
            r#"{"error":{"type":"invalid_request_error","message":"Invalid request: Your request exceeded model token limit : 262144"}}"#,
        )
    }

    /// OpenRouter 400 "This endpoint's maximum context length" (context_length).
    pub fn openrouter_context_length() -> Reply {
        j(
            400,
            r#"{"error":{"message":"This endpoint's maximum context length is 32768 tokens. However, you requested about 42832 tokens (42832 of text input). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.","code":400,"metadata":{"provider_name":null}}}"#,
        )
    }

    /// Anthropic 400 "prompt is too long" (context_length).
    pub fn anthropic_context_length() -> Reply {
        j(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
        )
    }

    /// Events of an OpenRouter stream that fails mid-way (HTTP 200): a
    /// `: OPENROUTER PROCESSING` comment, two normal chunks ("Hello", " world"),
    /// a chunk with a top-level `error` and `finish_reason: "error"`, then
    /// `data: [DONE]` (pop it to test a stream that also ends without one).
    /// Use with `Reply::sse(...)`.
    pub fn openrouter_mid_stream_error_events() -> Vec<String> {
        let chunk = |delta: Value| {
            data_event(&json!({
                "id": "gen-mock-1", "provider": "OpenAI", "model": "openai/gpt-4o",
                "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "choices": [{"index": 0, "delta": delta, "finish_reason": null, "native_finish_reason": null, "logprobs": null}]
            }))
        };
        vec![
            ": OPENROUTER PROCESSING\n\n".to_string(),
            chunk(json!({"role": "assistant", "content": "Hello"})),
            chunk(json!({"role": "assistant", "content": " world"})),
            data_event(&json!({
                "id": "gen-mock-1", "provider": "OpenAI", "model": "openai/gpt-4o",
                "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
            })),
            "data: [DONE]\n\n".to_string(),
        ]
    }

    /// A Kimi stream of "Hello from Kimi" (model `kimi-k2.6`) whose usage comes
    /// inside the last choice, with `cached_tokens` at the top level of `usage`:
    /// `"choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":10,
    /// "completion_tokens":3,"total_tokens":13,"cached_tokens":4}}]`, then `data: [DONE]`.
    pub fn kimi_stream_usage_in_choice() -> Reply {
        let chunk = |choice: Value| {
            data_event(&json!({
                "id": "chatcmpl-kimi-mock", "object": "chat.completion.chunk",
                "created": 1_700_000_000u64, "model": "kimi-k2.6", "choices": [choice]
            }))
        };
        Reply::sse(vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
            ),
            chunk(json!({"index": 0, "delta": {"content": "Hello"}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {"content": " from"}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {"content": " Kimi"}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop",
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "cached_tokens": 4}})),
            "data: [DONE]\n\n".to_string(),
        ])
    }
}
