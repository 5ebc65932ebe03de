//! Hostile or careless clients, over raw sockets: headers that never end, a
//! body that trickles, a keep-alive left idle, more connections than allowed,
//! and the 401's `WWW-Authenticate`. Timed tests run on tokio's paused clock:
//! the proxy's timers and the test's share it, and it jumps ahead whenever
//! every task waits, so seconds of configured timeouts take no real time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::support::proxy::{http, Proxy};
use crate::support::raw_http::read_message;

fn demo_config(server: &str) -> String {
    format!(
        "[server]\n{server}\n\
         [providers.demo]\nkind = \"mock\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n"
    )
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// A chat completion's body, sent after [`chat_head`].
const CHAT: &[u8] = br#"{"model": "main", "messages": [{"role": "user", "content": "hi"}]}"#;

fn chat_head() -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        CHAT.len()
    )
}

/// Longer than any limit under test: on the paused clock, waiting this long
/// means "never".
const NEVER: Duration = Duration::from_secs(3600);

/// One HTTP/1.1 answer off the socket: status and body. None when the server
/// closed the connection before answering.
async fn read_response(conn: &mut TcpStream) -> Option<(u16, String)> {
    let answer = read_message(conn).await?;
    Some((answer.head[9..12].parse().unwrap(), answer.body))
}

/// Waits until the server closes `conn` (reads return 0 or fail).
async fn closed(conn: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = conn.read(&mut chunk).await {
        if n == 0 {
            return;
        }
    }
}

/// How long `conn`, idle from now, stays open (an hour at most).
async fn idle_until_closed(conn: &mut TcpStream) -> Duration {
    let from = Instant::now();
    timeout(NEVER, closed(conn))
        .await
        .expect("an idle keep-alive was held for an hour");
    from.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_slowloris_client_is_cut_off_after_header_read_timeout() {
    let proxy = Proxy::start(&demo_config(
        "header_read_timeout = \"2s\"\nidle_timeout = \"1h\"\n",
    ))
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // One more header byte every half second: always sending, never done.
    let trickle = async {
        let mut chunk = [0u8; 64];
        loop {
            tokio::select! {
                read = conn.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => panic!("the proxy answered a request whose headers never ended"),
                },
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if conn.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    timeout(NEVER, trickle)
        .await
        .expect("a client still sending its headers was held for an hour");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(2) && held < Duration::from_secs(3),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    let proxy = Proxy::start(&demo_config(
        "header_read_timeout = \"2s\"\nidle_timeout = \"1h\"\n",
    ))
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    timeout(NEVER, closed(&mut conn))
        .await
        .expect("a silent connection was held for an hour");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_trickles_gets_408_request_timeout() {
    let proxy = Proxy::start(&demo_config("body_read_timeout = \"3s\"\n")).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(chat_head().as_bytes()).await.unwrap();
    conn.write_all(&CHAT[..10]).await.unwrap();
    let started = Instant::now();
    let (status, text) = timeout(NEVER, read_response(&mut conn))
        .await
        .expect("a half-sent body was waited on for an hour")
        .expect("the proxy closed without answering");
    assert_eq!(status, 408, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "request_timeout", "{text}");
    assert!(error["error"]["message"].as_str().unwrap().contains("3s"));
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// A request slower than both limits is served whole, and its connection's
/// idle time starts when the answer has gone, not when the request came.
#[tokio::test(start_paused = true)]
async fn a_slow_answer_outlasts_the_limits_and_idle_time_starts_after_it() {
    let proxy = Proxy::start(
        "[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n\
         [providers.demo]\nkind = \"mock\"\nfirst_byte_delay = \"5s\"\n\n\
         [routes.main]\ntargets = [{ provider = \"demo\", model = \"demo\" }]\n",
    )
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(chat_head().as_bytes()).await.unwrap();
    conn.write_all(CHAT).await.unwrap();
    let (status, text) = timeout(NEVER, read_response(&mut conn))
        .await
        .expect("a slow answer was waited on for an hour")
        .expect("the connection was closed while its request was served");
    assert_eq!(status, 200, "{text}");
    let idle = idle_until_closed(&mut conn).await;
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_is_closed_after_idle_timeout_and_not_before() {
    // The header timeout is shorter than the idle one: it must not apply to
    // a keep-alive that is waiting for its next request.
    let proxy = Proxy::start(&demo_config(
        "header_read_timeout = \"1s\"\nidle_timeout = \"5s\"\n",
    ))
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut conn).await.unwrap().0, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    conn.write_all(HEALTH).await.unwrap();
    assert_eq!(
        read_response(&mut conn)
            .await
            .expect("a keep-alive idle for less than idle_timeout was closed")
            .0,
        200
    );
    let idle = idle_until_closed(&mut conn).await;
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
}

const CAP_OF_TWO: &str = "max_connections = 2\nidle_timeout = \"1h\"\n";

#[tokio::test(start_paused = true)]
async fn beyond_max_connections_a_new_connection_waits_until_one_closes() {
    let proxy = Proxy::start(&demo_config(CAP_OF_TWO)).await;
    let mut open = a_third_connection_waits_for_a_slot(&proxy, Duration::from_secs(30)).await;
    // The one still open keeps working.
    open[0].write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut open[0]).await.unwrap().0, 200);
}

/// The cap is the process's, not each worker thread's: with one per thread,
/// two threads would serve four connections here.
#[tokio::test]
async fn max_connections_holds_across_worker_threads() {
    let proxy = Proxy::start_on_workers(&demo_config(CAP_OF_TWO), 2).await;
    // The workers run on real time: half a second unserved stands for never.
    a_third_connection_waits_for_a_slot(&proxy, Duration::from_millis(500)).await;
    proxy.stop().await;
}

/// Under a cap of two: two connections are served, a third is not (for
/// `unserved`) until one of them closes. The one left open is returned.
async fn a_third_connection_waits_for_a_slot(proxy: &Proxy, unserved: Duration) -> Vec<TcpStream> {
    let mut open = vec![];
    for _ in 0..2 {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(HEALTH).await.unwrap();
        assert_eq!(read_response(&mut conn).await.unwrap().0, 200);
        open.push(conn);
    }
    // The kernel completes the handshake (the backlog), but the proxy does
    // not take the connection while two are open.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    let early = timeout(unserved, read_response(&mut third)).await;
    assert!(early.is_err(), "a third connection was served: {early:?}");
    drop(open.remove(0));
    let served = timeout(Duration::from_secs(30), read_response(&mut third))
        .await
        .expect("the waiting connection was not served after one closed");
    assert_eq!(served.unwrap().0, 200);
    open
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme() {
    let keys = "admin_key_env = \"ADMIN\"\n\
                [[server.keys]]\nname = \"team-a\"\nkey_env = \"TEAM_A_KEY\"\n";
    let proxy = Proxy::start_with_env(
        &demo_config(keys),
        &[("TEAM_A_KEY", "sk-team-a-123"), ("ADMIN", "admin-secret")],
    )
    .await;
    let chat =
        serde_json::json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]});
    let answers = [
        http()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap(),
        http()
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth("sk-wrong")
            .json(&chat)
            .send()
            .await
            .unwrap(),
        http().get(proxy.url("/v1/models")).send().await.unwrap(),
        http()
            .post(proxy.url("/admin/reload"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
    ];
    for resp in answers {
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{}",
            resp.url()
        );
    }
}
