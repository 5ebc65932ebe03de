//! The proxy's pool of upstream connections, against a raw HTTP/1.1
//! upstream that counts the connections it accepts and can close each one
//! right after answering, as servers with short keep-alive times do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::mock_upstream::{MockUpstream, Reply};
use crate::support::proxy::{config_for, Proxy};

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"up-model","choices":[{"index":0,"message":{"role":"assistant","content":"pooled"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}"#;

const STREAM_CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[{"index":0,"delta":{"role":"assistant","content":"pooled"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}"#;

/// Answers every request with [`ANSWER`], or a stream of [`STREAM_CHUNK`]
/// when asked for one (the proxy's context-window probes too); counts
/// accepted connections.
struct RawUpstream {
    base_url: String,
    accepted: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(close_after_answer: bool) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(conn, close_after_answer));
            }
        });
        RawUpstream { base_url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut conn: TcpStream, close_after_answer: bool) {
    let mut buf = Vec::new();
    loop {
        // One request: its head, then as many body bytes as it says.
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let streamed =
            String::from_utf8_lossy(&buf[head_end..head_end + length]).contains("\"stream\":true");
        buf.drain(..head_end + length);
        let answer = if streamed {
            // As streaming servers send it: chunked, `[DONE]`, then the
            // closing chunk.
            let chunk = |event: &str| format!("{:x}\r\n{event}\r\n", event.len());
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{}{}0\r\n\r\n",
                chunk(&format!("data: {STREAM_CHUNK}\n\n")),
                chunk("data: [DONE]\n\n"),
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            )
        };
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if close_after_answer {
            // No `connection: close`: the client learns it from the socket.
            return;
        }
    }
}

/// A [`RawUpstream`] and a proxy whose route `main` goes to it.
async fn proxied(close_after_answer: bool) -> (RawUpstream, Proxy) {
    let up = RawUpstream::start(close_after_answer).await;
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url)], "")).await;
    (up, proxy)
}

fn chat() -> Value {
    json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]})
}

async fn ask(proxy: &Proxy) -> Value {
    ask_counting_attempts(proxy).await.0
}

/// The answer, and how many attempts it took (`x-hermes-attempts`).
async fn ask_counting_attempts(proxy: &Proxy) -> (Value, String) {
    let resp = proxy.post("/v1/chat/completions", &chat()).await;
    assert_eq!(resp.status(), 200);
    let attempts = resp.headers()["x-hermes-attempts"]
        .to_str()
        .unwrap()
        .to_owned();
    (resp.json().await.unwrap(), attempts)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (up, proxy) = proxied(false).await;
    for _ in 0..5 {
        assert_eq!(
            ask(&proxy).await["choices"][0]["message"]["content"],
            "pooled"
        );
    }
    assert_eq!(up.connections(), 1);
}

/// A stream ends at `[DONE]`, but its connection is free only once the
/// closing chunk is read too.
#[tokio::test]
async fn sequential_streams_share_one_upstream_connection() {
    let (up, proxy) = proxied(false).await;
    let mut streamed = chat();
    streamed["stream"] = json!(true);
    for _ in 0..3 {
        let resp = proxy.post("/v1/chat/completions", &streamed).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("pooled") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_each_connection_after_answering_still_answers_every_request() {
    let (_up, proxy) = proxied(true).await;
    for _ in 0..5 {
        let (answer, attempts) = ask_counting_attempts(&proxy).await;
        assert_eq!(answer["choices"][0]["message"]["content"], "pooled");
        // A connection seen closed is never sent on.
        assert_eq!(attempts, "1");
        // The close reaches the proxy while it holds the connection idle.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Back to back, a close can cross the next request on the wire. One
    // not yet sent goes on a new connection; one already sent is not sent
    // again by the pool (it is a POST), and the attempt loop retries it.
    for _ in 0..20 {
        assert_eq!(
            ask(&proxy).await["choices"][0]["message"]["content"],
            "pooled"
        );
    }
}

#[tokio::test]
async fn a_stream_left_half_read_does_not_leave_its_connection_in_the_pool() {
    let up = MockUpstream::start().await;
    up.push(
        Reply::stream_text("one two three four five six seven eight")
            .gap(Duration::from_millis(100)),
    );
    let proxy = Proxy::start(&config_for(&[("up", &up.base_url())], "")).await;
    let mut streamed = chat();
    streamed["stream"] = json!(true);
    let resp = proxy.post("/v1/chat/completions", &streamed).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // The next requests go through, on a connection that is not mid-answer.
    for _ in 0..3 {
        assert_eq!(
            ask(&proxy).await["choices"][0]["message"]["content"],
            "Hello from mock"
        );
    }
    assert_eq!(up.request_count(), 4);
}
