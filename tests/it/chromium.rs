//! The browser rules in a real browser: headless Chromium (Debian's
//! `chromium`; `.ci/run` installs it) loads a page from `evil.test`, a name
//! Chromium's `--host-resolver-rules` maps to 127.0.0.1, so the browser
//! itself sets the `Origin` a page cannot forge. The page `fetch`es a
//! streamed chat answer from the proxy and posts what it got back to the
//! page's own server. Without Chromium the tests say so and pass, except
//! under CI (`CI` set), where a missing browser is a failure.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::proxy::Proxy;
use crate::support::raw_http::read_message;

const CHROMIUM: &str = "chromium";

fn demo_config(server: &str) -> String {
    format!(
        "[server]\n{server}\n\
         [providers.demo]\nkind = \"mock\"\nchunk_delay = \"1ms\"\n\n\
         [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n"
    )
}

/// Whether to go on: false (skip) when Chromium is missing outside CI.
fn chromium_present() -> bool {
    let present = std::process::Command::new(CHROMIUM)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return true;
    }
    let message = "chromium is not installed: run .ci/run once (it installs it), \
                   or `apt-get install chromium`";
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// The page: one streamed chat request to the proxy with `content_type`,
/// then its outcome, as one line, to `/result` on its own origin.
fn page(proxy: &str, content_type: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="result">pending</pre><script>
(async () => {{
  let out;
  try {{
    const r = await fetch("{proxy}/v1/chat/completions", {{
      method: "POST",
      headers: {{"content-type": "{content_type}"}},
      body: JSON.stringify({{model: "main", stream: true,
                            messages: [{{role: "user", content: "hello"}}]}}),
    }});
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let text = "", reads = 0;
    for (;;) {{
      const {{done, value}} = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, {{stream: true}});
    }}
    let content = "";
    for (const event of text.split("\n\n")) {{
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const delta = JSON.parse(event.slice(6)).choices[0]?.delta?.content;
      content += delta ?? "";
    }}
    out = `status=${{r.status}} reads=${{reads}} done=${{text.includes("data: [DONE]")}} content=${{content}}`;
  }} catch (e) {{
    out = `error=${{e.name}}`;
  }}
  document.getElementById("result").textContent = out;
  await fetch("/result", {{method: "POST", body: out}});
}})();
</script></body></html>"#
    )
}

/// Serves `html` at `/page.html` and sends what is posted to `/result`.
async fn page_server(html: String) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve_one(conn, html.clone(), tx.clone()));
        }
    });
    (port, rx)
}

async fn serve_one(mut conn: TcpStream, html: String, results: mpsc::Sender<String>) {
    let Some(request) = read_message(&mut conn).await else {
        return;
    };
    let head = request.head;
    let (status, body) = if head.starts_with("GET /page.html ") {
        ("200 OK", html)
    } else if head.starts_with("POST /result ") {
        let _ = results.send(request.body).await;
        ("200 OK", String::new())
    } else {
        ("404 Not Found", String::new())
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(answer.as_bytes()).await;
}

/// Opens `http://evil.test:<port>/page.html` in headless Chromium and
/// returns what the page reported.
async fn open_page(port: u16, results: &mut mpsc::Receiver<String>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let log = profile.path().join("chromium.log");
    let mut browser = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--host-resolver-rules=MAP evil.test 127.0.0.1",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("http://evil.test:{port}/page.html"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let result = tokio::time::timeout(Duration::from_secs(60), results.recv()).await;
    let _ = browser.kill().await;
    match result {
        Ok(Some(result)) => result,
        _ => panic!(
            "the page reported nothing within 60 s; chromium said:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    }
}

fn proxy_url(proxy: &Proxy) -> String {
    format!("http://127.0.0.1:{}", proxy.addr.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_a_listed_origin_streams_a_chat_answer_through_cors() {
    if !chromium_present() {
        return;
    }
    let proxy = Proxy::start(&demo_config("cors_origins = [\"*\"]\n")).await;
    // A JSON body makes the browser ask first (a preflight).
    let (port, mut results) = page_server(page(&proxy_url(&proxy), "application/json")).await;
    // The page's origin is known once its server has a port: list it then.
    let listed = demo_config(&format!("cors_origins = [\"http://evil.test:{port}\"]\n"));
    let config = hermes_proxy::config::parse(&listed, "listed.toml", &|_| None).unwrap();
    proxy.state.install(config);
    let result = open_page(port, &mut results).await;
    assert!(
        result.starts_with("status=200 ") && result.contains(" done=true "),
        "{result}"
    );
    let content = result.split(" content=").nth(1).unwrap_or_default();
    assert!(!content.trim().is_empty(), "no streamed content: {result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_without_keys_an_unlisted_page_cannot_use_the_proxy() {
    if !chromium_present() {
        return;
    }
    // The embedded default's CORS setting: before the browser rules, this
    // page read the whole answer.
    let proxy = Proxy::start(&demo_config("cors_origins = [\"*\"]\n")).await;
    // A text/plain body needs no preflight: the request reaches the proxy,
    // which must refuse it itself.
    let (port, mut results) = page_server(page(&proxy_url(&proxy), "text/plain")).await;
    let result = open_page(port, &mut results).await;
    assert_eq!(result, "error=TypeError");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("hermes_requests_total{route=\"unrouted\",status=\"403\"} 1")
            && !metrics.contains("hermes_requests_total{route=\"main\""),
        "the request was not refused by the proxy:\n{metrics}"
    );
}
