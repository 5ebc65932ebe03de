//! The agent's built-in tools through their public API: real files in a
//! temporary workspace, real HTTP servers on loopback, real processes. One
//! test per way out of the sandbox.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermes_proxy::tools::{
    Memory, Outcome, Settings, ToolOutput, Toolbox, WebPolicy, MEMORY_LIMIT,
};
use serde_json::json;

const ALL: [&str; 7] = [
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "web_fetch",
    "memory",
    "terminal",
];

fn settings(ws: &Path) -> Settings {
    Settings {
        workspace: ws.to_path_buf(),
        enabled: ALL.map(String::from).to_vec(),
        terminal_allow: vec![],
        timeout: Duration::from_secs(30),
        web: WebPolicy::default(),
        private: vec![],
    }
}

#[test]
fn a_workspace_that_holds_the_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inside = Settings {
        private: vec![dir.path().join("data/hermes.db")],
        ..settings(dir.path())
    };
    let err = Toolbox::new(inside, Duration::from_secs(1)).err().unwrap();
    assert!(err.contains("data/hermes.db"), "{err}");
    let ws = dir.path().join("workspace");
    let beside = Settings {
        private: vec![dir.path().join("data/hermes.db")],
        ..settings(&ws)
    };
    assert!(Toolbox::new(beside, Duration::from_secs(1)).is_ok());
}

fn toolbox(ws: &Path) -> Toolbox {
    Toolbox::new(settings(ws), Duration::from_secs(2)).unwrap()
}

async fn call(tools: &Toolbox, name: &str, args: serde_json::Value) -> ToolOutput {
    tools
        .run(name, &args.to_string(), &Memory::new(String::new()))
        .await
}

fn assert_refused(out: &ToolOutput) {
    assert_eq!(out.outcome, Outcome::Refused, "{}", out.text);
    assert!(out.text.starts_with("error: refused: "), "{}", out.text);
}

// ----- files -----

#[tokio::test]
async fn read_write_list_in_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let tools = toolbox(dir.path());
    let out = call(
        &tools,
        "write_file",
        json!({"path": "notes/a/b.md", "content": "one\ntwo\nthree\n"}),
    )
    .await;
    assert_eq!(
        (out.outcome, out.text.as_str()),
        (Outcome::Ok, "wrote 14 bytes to notes/a/b.md")
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("notes/a/b.md")).unwrap(),
        "one\ntwo\nthree\n"
    );
    // Replacing truncates.
    call(
        &tools,
        "write_file",
        json!({"path": "notes/a/b.md", "content": "x\ny\n"}),
    )
    .await;
    let out = call(&tools, "read_file", json!({"path": "notes/a/b.md"})).await;
    assert_eq!(out.text, "x\ny\n");
    let out = call(
        &tools,
        "read_file",
        json!({"path": "./notes/../notes/a/b.md", "offset": 2, "limit": 1}),
    )
    .await;
    assert_eq!(out.text, "y\n");
    fs::write(dir.path().join("z.txt"), "").unwrap();
    fs::write(dir.path().join("b.txt"), "").unwrap();
    let out = call(&tools, "list_files", json!({})).await;
    assert_eq!(out.text, "b.txt\nnotes/\nz.txt");
    let out = call(&tools, "list_files", json!({"path": "notes"})).await;
    assert_eq!(out.text, "a/");
    let out = call(&tools, "read_file", json!({"path": "missing.txt"})).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(out.text.starts_with("error: no such file"), "{}", out.text);
}

#[tokio::test]
async fn dot_dot_out_of_the_workspace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tools = toolbox(dir.path());
    let out = call(&tools, "read_file", json!({"path": "../../etc/passwd"})).await;
    assert_refused(&out);
    assert_eq!(out.text, "error: refused: path leaves the workspace");
    assert_refused(
        &call(
            &tools,
            "write_file",
            json!({"path": "a/../../x", "content": "x"}),
        )
        .await,
    );
    assert_refused(&call(&tools, "list_files", json!({"path": ".."})).await);
    assert_refused(
        &call(
            &tools,
            "search_files",
            json!({"pattern": "root", "path": "../.."}),
        )
        .await,
    );
}

#[tokio::test]
async fn absolute_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tools = toolbox(dir.path());
    assert_refused(&call(&tools, "read_file", json!({"path": "/etc/passwd"})).await);
    assert_refused(&call(&tools, "list_files", json!({"path": "/"})).await);
    // Even one that names a file inside the workspace.
    let inside = dir.path().join("f.txt");
    fs::write(&inside, "x").unwrap();
    assert_refused(&call(&tools, "read_file", json!({"path": inside})).await);
}

#[tokio::test]
async fn a_symlink_to_a_file_outside_is_neither_read_nor_written() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    fs::write(&secret, "the secret").unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("link.txt")).unwrap();
    let tools = toolbox(dir.path());
    let out = call(&tools, "read_file", json!({"path": "link.txt"})).await;
    assert_refused(&out);
    assert!(!out.text.contains("the secret"));
    let out = call(
        &tools,
        "write_file",
        json!({"path": "link.txt", "content": "owned"}),
    )
    .await;
    assert_refused(&out);
    assert_eq!(fs::read_to_string(&secret).unwrap(), "the secret");
    // search does not follow it either.
    let out = call(&tools, "search_files", json!({"pattern": "secret"})).await;
    assert_eq!(out.text, "no matches");
}

#[tokio::test]
async fn no_folder_is_created_through_a_symlinked_folder_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    let tools = toolbox(dir.path());
    let out = call(
        &tools,
        "write_file",
        json!({"path": "out/sub/deeper/x.txt", "content": "x"}),
    )
    .await;
    assert_refused(&out);
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing created outside"
    );
    assert_refused(&call(&tools, "read_file", json!({"path": "out/anything"})).await);
    assert_refused(&call(&tools, "list_files", json!({"path": "out"})).await);
}

#[tokio::test]
async fn a_huge_sparse_file_is_read_capped_and_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let file = fs::File::create(dir.path().join("huge.bin")).unwrap();
    file.set_len(10 * 1024 * 1024 * 1024).unwrap();
    let mut settings = settings(dir.path());
    settings.timeout = Duration::from_secs(20);
    let tools = Toolbox::new(settings, Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let out = call(&tools, "read_file", json!({"path": "huge.bin"})).await;
    assert_eq!(
        out.outcome,
        Outcome::Ok,
        "{}",
        &out.text[out.text.len() - 100..]
    );
    assert!(
        out.text.len() < 256 * 1024 + 200,
        "{} bytes",
        out.text.len()
    );
    assert!(out
        .text
        .ends_with("[cut at 256 KiB: read on with offset=1]"));
    // A line far away in a file without newlines: the scan stops at its cap.
    let out = call(
        &tools,
        "read_file",
        json!({"path": "huge.bin", "offset": 5}),
    )
    .await;
    assert_eq!(out.outcome, Outcome::Ok);
    assert!(out.text.contains("only the first 64 MiB"), "{}", out.text);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn search_finds_matches_and_survives_a_catastrophic_pattern() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(
        dir.path().join("src/main.rs"),
        "fn main() {\n    println!(\"hi\");\n}\n",
    )
    .unwrap();
    let mut many_a = "a".repeat(200_000);
    many_a.push('\n');
    fs::write(dir.path().join("aaaa.txt"), many_a.repeat(20)).unwrap();
    let tools = toolbox(dir.path());
    let out = call(
        &tools,
        "search_files",
        json!({"pattern": r"println!\(", "path": "src"}),
    )
    .await;
    assert_eq!(out.text, "src/main.rs:2:     println!(\"hi\");");
    let started = Instant::now();
    let out = call(&tools, "search_files", json!({"pattern": "(a*)*b"})).await;
    assert_eq!(
        (out.outcome, out.text.as_str()),
        (Outcome::Ok, "no matches")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let out = call(&tools, "search_files", json!({"pattern": "(unclosed"})).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(
        out.text.starts_with("error: invalid pattern"),
        "{}",
        out.text
    );
}

// ----- the toolbox itself -----

#[tokio::test]
async fn unknown_tools_and_bad_arguments_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.enabled = vec!["read_file".into(), "memory".into()];
    let tools = Toolbox::new(settings, Duration::from_secs(1)).unwrap();
    let memory = Memory::new(String::new());
    let out = tools.run("rm_rf", "{}", &memory).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(out.text.starts_with("error: unknown tool"), "{}", out.text);
    // A built-in that is not enabled is unknown too.
    let out = tools.run("terminal", r#"{"command":"ls"}"#, &memory).await;
    assert!(out.text.starts_with("error: unknown tool"), "{}", out.text);
    let out = tools.run("read_file", "{not json", &memory).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(
        out.text
            .starts_with("error: invalid arguments for read_file"),
        "{}",
        out.text
    );
    let out = tools.run("read_file", r#"{"offset": 3}"#, &memory).await;
    assert!(out.text.contains("missing field `path`"), "{}", out.text);
    assert!(tools.offers("memory") && !tools.offers("terminal"));
    let names: Vec<String> = tools
        .schemas()
        .iter()
        .map(|s| {
            assert_eq!(s["type"], "function");
            assert_eq!(s["function"]["parameters"]["type"], "object");
            s["function"]["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["read_file", "memory"]);
}

#[tokio::test]
async fn every_schema_names_its_tool() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = toolbox(dir.path()).schemas();
    let names: Vec<&str> = schemas
        .iter()
        .map(|s| s["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    assert!(ALL.iter().all(|n| hermes_proxy::tools::is_builtin(n)));
}

#[tokio::test]
async fn memory_changes_and_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let tools = toolbox(dir.path());
    let memory = Memory::new("prefers metric units".to_owned());
    let run = |args: serde_json::Value| {
        let args = args.to_string();
        let (tools, memory) = (&tools, &memory);
        async move { tools.run("memory", &args, memory).await }
    };
    let out = run(json!({"action": "add", "content": "name: Ada"})).await;
    assert_eq!(out.text, "prefers metric units\nname: Ada");
    let out = run(json!({"action": "replace", "old_text": "metric", "content": "imperial"})).await;
    assert_eq!(out.text, "prefers imperial units\nname: Ada");
    let out = run(json!({"action": "remove", "old_text": "name: Ada"})).await;
    assert_eq!(out.text, "prefers imperial units");
    assert_eq!(memory.changed().as_deref(), Some("prefers imperial units"));
    let out = run(json!({"action": "add", "content": "x".repeat(MEMORY_LIMIT)})).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(
        out.text.starts_with("error: the memory would be"),
        "{}",
        out.text
    );
    assert_eq!(memory.notes(), "prefers imperial units");
    let out = run(json!({"action": "forget"})).await;
    assert_eq!(out.outcome, Outcome::Error);
}

// ----- web_fetch -----

/// A one-shot-per-connection HTTP server on `ip`: answers every request
/// with `response` and counts the requests.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

fn serve(ip: &str, response: impl Fn(SocketAddr) -> String + Send + 'static) -> Server {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(response(addr).as_bytes());
        }
    });
    Server { addr, hits }
}

fn http(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A toolbox with `policy`; its workspace is a temporary folder that lives
/// as long as the toolbox does.
struct Web {
    tools: Toolbox,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Web {
    type Target = Toolbox;
    fn deref(&self) -> &Toolbox {
        &self.tools
    }
}

fn web(policy: WebPolicy) -> Web {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.web = policy;
    settings.timeout = Duration::from_secs(10);
    Web {
        tools: Toolbox::new(settings, Duration::from_secs(2)).unwrap(),
        _dir: dir,
    }
}

async fn fetch(tools: &Toolbox, url: &str) -> ToolOutput {
    call(tools, "web_fetch", json!({ "url": url })).await
}

#[tokio::test]
async fn loopback_by_address_is_refused_and_never_contacted() {
    let server = serve("127.0.0.1", |_| http("200 OK", "", "secret"));
    let tools = web(WebPolicy::default());
    let out = fetch(&tools, &format!("http://127.0.0.1:{}/", server.addr.port())).await;
    assert_refused(&out);
    assert!(!out.text.contains("secret"));
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn private_link_local_metadata_and_cgnat_literals_are_refused() {
    let tools = web(WebPolicy::default());
    for url in [
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0/",
    ] {
        let out = fetch(&tools, url).await;
        assert_refused(&out);
        assert!(
            out.text.contains("is not a public address"),
            "{url}: {}",
            out.text
        );
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused() {
    let server = serve("127.0.0.1", |_| http("200 OK", "", "secret"));
    let tools = web(WebPolicy::default());
    let out = fetch(&tools, &format!("http://localhost:{}/", server.addr.port())).await;
    assert_refused(&out);
    assert!(
        out.text.contains("resolves only to refused addresses"),
        "{}",
        out.text
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_from_a_public_name_to_loopback_is_refused() {
    let secret = serve("127.0.0.1", |_| http("200 OK", "", "secret"));
    let secret_port = secret.addr.port();
    let public = serve("127.0.0.2", move |_| {
        let to = format!("location: http://127.0.0.1:{secret_port}/secret\r\n");
        http("302 Found", &to, "")
    });
    let exempt: IpAddr = "127.0.0.2".parse().unwrap();
    let tools = web(WebPolicy {
        allow_private: false,
        exempt: vec![exempt],
        resolve: vec![("docs.example.com".into(), exempt)],
    });
    let out = fetch(
        &tools,
        &format!("http://docs.example.com:{}/page", public.addr.port()),
    )
    .await;
    assert_refused(&out);
    assert_eq!(
        public.hits.load(Ordering::SeqCst),
        1,
        "the first hop was fetched"
    );
    assert_eq!(
        secret.hits.load(Ordering::SeqCst),
        0,
        "loopback never saw a request"
    );
}

#[tokio::test]
async fn a_redirect_to_a_file_url_is_refused() {
    let server = serve("127.0.0.2", |_| {
        http("301 Moved", "location: file:///etc/passwd\r\n", "")
    });
    let exempt: IpAddr = "127.0.0.2".parse().unwrap();
    let tools = web(WebPolicy {
        exempt: vec![exempt],
        ..WebPolicy::default()
    });
    let out = fetch(&tools, &format!("http://127.0.0.2:{}/", server.addr.port())).await;
    assert_refused(&out);
    assert!(out.text.contains("file"), "{}", out.text);
    assert!(!out.text.contains("root:"));
    assert_refused(&fetch(&tools, "file:///etc/passwd").await);
}

#[tokio::test]
async fn redirects_are_followed_at_most_five_times() {
    let server = serve("127.0.0.1", |addr| {
        http(
            "302 Found",
            &format!("location: http://{addr}/again\r\n"),
            "",
        )
    });
    let tools = web(WebPolicy {
        allow_private: true,
        ..WebPolicy::default()
    });
    let out = fetch(&tools, &format!("http://{}/", server.addr)).await;
    assert_eq!(out.outcome, Outcome::Error);
    assert!(out.text.contains("more than 5 redirects"), "{}", out.text);
    assert_eq!(server.hits.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn an_html_page_becomes_text_when_private_addresses_are_allowed() {
    let page = "<!doctype html><html><head><title>T</title><style>p{color:red}</style></head>\
                <body><h1>Release notes</h1><p>Version <b>2.0</b> is out.</p>\
                <ul><li>faster</li><li>smaller</li></ul></body></html>";
    let server = serve("127.0.0.1", move |_| {
        http("200 OK", "content-type: text/html; charset=utf-8\r\n", page)
    });
    let tools = web(WebPolicy {
        allow_private: true,
        ..WebPolicy::default()
    });
    let out = fetch(
        &tools,
        &format!("http://127.0.0.1:{}/notes", server.addr.port()),
    )
    .await;
    assert_eq!(out.outcome, Outcome::Ok, "{}", out.text);
    for words in [
        "Release notes",
        "Version",
        "2.0",
        "is out",
        "faster",
        "smaller",
    ] {
        assert!(out.text.contains(words), "{words:?} in {}", out.text);
    }
    assert!(
        !out.text.contains('<') && !out.text.contains("color:red"),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn a_huge_page_is_read_only_up_to_the_cap() {
    let body = "word ".repeat(1_000_000);
    let server = serve("127.0.0.1", move |_| {
        http("200 OK", "content-type: text/plain\r\n", &body)
    });
    let tools = web(WebPolicy {
        allow_private: true,
        ..WebPolicy::default()
    });
    let out = fetch(&tools, &format!("http://{}/", server.addr)).await;
    assert_eq!(out.outcome, Outcome::Ok);
    assert!(out.text.len() < 256 * 1024 + 300, "{}", out.text.len());
    assert!(
        out.text.contains("[cut: the page continues"),
        "{}",
        &out.text[out.text.len() - 200..]
    );
}

// ----- terminal -----

fn terminal(ws: &Path, allow: &[&str], timeout: Duration) -> Toolbox {
    let mut settings = settings(ws);
    settings.terminal_allow = allow.iter().map(|s| s.to_string()).collect();
    settings.timeout = timeout;
    Toolbox::new(settings, Duration::from_secs(1)).unwrap()
}

async fn sh(tools: &Toolbox, command: &str) -> ToolOutput {
    call(tools, "terminal", json!({ "command": command })).await
}

#[tokio::test]
async fn only_allowed_programs_run() {
    let dir = tempfile::tempdir().unwrap();
    let tools = terminal(dir.path(), &["echo"], Duration::from_secs(10));
    let out = sh(&tools, "rm -rf /").await;
    assert_refused(&out);
    assert!(
        out.text
            .contains("`rm` is not an allowed program (allowed: echo)"),
        "{}",
        out.text
    );
    assert_refused(&sh(&tools, "sh -c 'echo hi'").await);
    // A path to an allowed name is another program.
    assert_refused(&sh(&tools, "/bin/echo hi").await);
    let out = sh(&tools, "echo hello   world").await;
    assert_eq!(out.outcome, Outcome::Ok);
    assert_eq!(out.text, "exit code: 0\nstdout:\nhello world\n\nstderr:\n");
    let tools = terminal(dir.path(), &["sh"], Duration::from_secs(10));
    let out = sh(&tools, "sh -c 'echo hi; echo oops >&2; exit 3'").await;
    assert_eq!(out.text, "exit code: 3\nstdout:\nhi\n\nstderr:\noops\n");
    let out = sh(&tools, "sh -c 'unbalanced").await;
    assert_eq!(out.outcome, Outcome::Error);
}

#[tokio::test]
async fn shell_syntax_is_not_interpreted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file-that-ls-would-show"), "").unwrap();
    let tools = terminal(dir.path(), &["echo", "ls"], Duration::from_secs(10));
    let out = sh(&tools, "echo $HOME; ls *").await;
    assert_eq!(out.text, "exit code: 0\nstdout:\n$HOME; ls *\n\nstderr:\n");
    let out = sh(&tools, "echo a | ls && ls > x").await;
    assert_eq!(
        out.text,
        "exit code: 0\nstdout:\na | ls && ls > x\n\nstderr:\n"
    );
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn the_proxy_environment_is_not_visible() {
    // Set once, before any process is spawned by this test.
    std::env::set_var("HERMES_TEST_SECRET", "sk-do-not-leak");
    let dir = tempfile::tempdir().unwrap();
    let tools = terminal(dir.path(), &["env", "pwd"], Duration::from_secs(10));
    let out = sh(&tools, "env").await;
    assert_eq!(out.outcome, Outcome::Ok, "{}", out.text);
    assert!(!out.text.contains("sk-do-not-leak") && !out.text.contains("HERMES_TEST_SECRET"));
    let stdout = out
        .text
        .split("\nstdout:\n")
        .nth(1)
        .unwrap()
        .split("\nstderr:")
        .next()
        .unwrap();
    let mut names: Vec<&str> = stdout.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    assert_eq!(names, ["HOME", "LANG", "PATH"], "{stdout}");
    let home = fs::canonicalize(dir.path()).unwrap();
    assert!(
        stdout.contains(&format!("HOME={}", home.display())),
        "{stdout}"
    );
    let out = sh(&tools, "pwd").await;
    assert!(
        out.text.contains(&format!("stdout:\n{}\n", home.display())),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big"), "y".repeat(200_000)).unwrap();
    let tools = terminal(dir.path(), &["cat"], Duration::from_secs(10));
    let out = sh(&tools, "cat big").await;
    assert_eq!(out.outcome, Outcome::Ok);
    assert!(
        out.text
            .contains(&format!("[cut: {} more bytes]", 200_000 - 64 * 1024)),
        "{}",
        &out.text[..100]
    );
    assert!(out.text.len() < 64 * 1024 + 200);
}

/// Processes running exactly `sleep <mark>`, as pids.
fn sleeps(mark: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{mark}\0");
    let mut found = vec![];
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A zombie's command line is empty: it is gone for this purpose.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline == wanted.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// Polls `check` until it holds or `within` passes; whether it held.
async fn eventually(within: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// `sleep` with a duration no other process has: its command line marks it.
fn marker() -> String {
    format!("100.{}", fastrand::u32(100_000..999_999))
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Arc::new(terminal(dir.path(), &["sh"], Duration::from_secs(3)));
    let mark = marker();
    // The child (sh) starts a grandchild in the background and waits on another.
    let command = format!("sh -c 'sleep {mark} & sleep {mark}; wait'");
    let started = Instant::now();
    let running = {
        let tools = tools.clone();
        tokio::spawn(async move { sh(&tools, &command).await })
    };
    assert!(
        eventually(Duration::from_secs(10), || sleeps(&mark).len() == 2).await,
        "both sleeps started: {:?}",
        sleeps(&mark)
    );
    let out = running.await.unwrap();
    assert_eq!(out.outcome, Outcome::Timeout, "{}", out.text);
    assert_eq!(out.text, "error: timed out after 3s");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(5), || sleeps(&mark).is_empty()).await,
        "left running: {:?}",
        sleeps(&mark)
    );
}

#[tokio::test]
async fn dropping_the_call_kills_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Arc::new(terminal(dir.path(), &["sh"], Duration::from_secs(60)));
    let mark = marker();
    let command = format!("sh -c 'sleep {mark} & sleep {mark}; wait'");
    let running = {
        let tools = tools.clone();
        tokio::spawn(async move { sh(&tools, &command).await })
    };
    assert!(
        eventually(Duration::from_secs(10), || sleeps(&mark).len() == 2).await,
        "both sleeps started: {:?}",
        sleeps(&mark)
    );
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert!(
        eventually(Duration::from_secs(5), || sleeps(&mark).is_empty()).await,
        "left running: {:?}",
        sleeps(&mark)
    );
}

#[tokio::test]
async fn the_jail_allows_writing_only_the_workspace_and_has_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let tools = terminal(
        dir.path(),
        &["touch", "bash", "cat"],
        Duration::from_secs(10),
    );
    if !tools.jailed() {
        eprintln!("bwrap does not work here: the jail is not tested");
        return;
    }
    let out = sh(&tools, "touch inside.txt").await;
    assert!(out.text.starts_with("exit code: 0"), "{}", out.text);
    assert!(dir.path().join("inside.txt").exists());
    let escaped = other.path().join("escaped");
    let out = sh(&tools, &format!("touch {}", escaped.display())).await;
    assert!(!out.text.starts_with("exit code: 0"), "{}", out.text);
    assert!(!escaped.exists());
    let out = sh(&tools, "touch /usr/escaped").await;
    assert!(!out.text.starts_with("exit code: 0"), "{}", out.text);
    // /etc is there only in the parts programs need.
    let out = sh(&tools, "cat /etc/hostname").await;
    assert!(!out.text.starts_with("exit code: 0"), "{}", out.text);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = sh(
        &tools,
        &format!("bash -c 'echo hello > /dev/tcp/127.0.0.1/{port}'"),
    )
    .await;
    assert!(!out.text.starts_with("exit code: 0"), "{}", out.text);
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "the jailed program reached the host's loopback"
    );
}
