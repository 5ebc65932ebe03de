//! The command line, run as a user runs it: the built binary in a scratch
//! directory, with a cleared environment so that no real key (or the
//! repository's ./routes.toml) can change what it does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hermes-proxy");

fn repo_routes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml")
}

/// A fresh empty directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hermes-cli-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with only PATH and HOME from the real environment, run in `dir`.
fn hermes(dir: &Scratch) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().current_dir(&dir.0);
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs to completion, killing it (and failing) if it takes over 30 s:
/// a `serve` that should have refused to start must not hang the suite.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 30 s\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The 1-based line of the first line of `text` starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

// ----- check -----

#[test]
fn check_accepts_the_repository_config_and_warns_about_unset_keys() {
    let dir = Scratch::new("check-ok");
    let routes = repo_routes();
    let out = run(hermes(&dir).arg("check").arg("--config").arg(&routes));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");

    let file = std::fs::read_to_string(&routes).unwrap();
    let path = routes.display().to_string();
    for var in ["MOONSHOT_API_KEY", "OPENROUTER_API_KEY"] {
        let line = line_of(&file, &format!("api_key_env = \"{var}\""));
        let warning = text
            .lines()
            .find(|l| l.contains("warning") && l.contains(var))
            .unwrap_or_else(|| panic!("no warning about {var}:\n{text}"));
        assert!(
            warning.contains(&format!("{path}:{line}:")),
            "warning without its place: {warning}"
        );
    }
}

#[test]
fn check_does_not_warn_about_a_key_that_is_set() {
    let dir = Scratch::new("check-set");
    let out = run(hermes(&dir)
        .arg("check")
        .arg("--config")
        .arg(repo_routes())
        .env("MOONSHOT_API_KEY", "sk-set"));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("MOONSHOT_API_KEY"), "{text}");
    assert!(text.contains("OPENROUTER_API_KEY"), "{text}");
}

const BROKEN: &str = r#"# a config with four mistakes
[server]
listen = "127.0.0.1:8080"
max_body_bytes = "ten megabytes"
colour = "blue"

[defaults]
request_timeout = "five minutes"
max_attempts = 3

[providers.demo]
kind = "mock"

[routes.default]
targets = [
  { provider = "demo", model = "demo" },
  { provider = "kimmi", model = "kimi-k2.6" },
]
"#;

#[test]
fn check_lists_every_error_with_its_line_and_exits_2() {
    let dir = Scratch::new("check-broken");
    let config = dir.write("broken.toml", BROKEN);
    let out = run(hermes(&dir).arg("check").arg("--config").arg(&config));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");

    let prefix = format!("{}:", config.display());
    let errors: Vec<(usize, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (line, message) = rest.split_once(": ")?;
            Some((line.parse().ok()?, message))
        })
        .collect();
    let expected = [
        (4, "max_body_bytes"),
        (5, "colour"),
        (8, "request_timeout"),
        (17, "kimmi"),
    ];
    assert_eq!(
        errors.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        expected.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        "{text}"
    );
    for ((line, message), (_, names)) in errors.iter().zip(expected) {
        assert!(
            message.contains(names),
            "line {line} does not name `{names}`: {message}"
        );
    }
    assert!(!text.contains(": ok ("), "{text}");
}

#[test]
fn check_reports_a_toml_syntax_error_with_its_line() {
    let dir = Scratch::new("check-syntax");
    let config = dir.write(
        "syntax.toml",
        "[server]\nlisten = \"127.0.0.1:8080\"\nmax_body_bytes = \n",
    );
    let out = run(hermes(&dir).arg("check").arg("--config").arg(&config));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("{}:3: ", config.display())),
        "{text}"
    );
}

#[test]
fn check_reads_routes_toml_from_the_working_directory_and_hermes_config() {
    let dir = Scratch::new("check-cwd");
    dir.write("routes.toml", BROKEN);
    let out = run(hermes(&dir).arg("check"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("routes.toml:5:"), "{}", stderr(&out));

    // HERMES_CONFIG names the file instead.
    let out = run(hermes(&dir)
        .arg("check")
        .env("HERMES_CONFIG", repo_routes()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// ----- config show -----

#[test]
fn config_show_says_a_key_is_set_without_printing_it() {
    let dir = Scratch::new("show");
    let out = run(hermes(&dir)
        .args(["config", "show", "--config"])
        .arg(repo_routes())
        .env("MOONSHOT_API_KEY", "sk-secret-value"));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!text.contains("sk-secret-value"), "{text}");
    assert!(!stderr(&out).contains("sk-secret-value"));
    let moonshot = text
        .lines()
        .find(|l| l.contains("MOONSHOT_API_KEY"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        moonshot.contains("set") && !moonshot.contains("not set"),
        "{moonshot}"
    );
    let openrouter = text
        .lines()
        .find(|l| l.contains("OPENROUTER_API_KEY"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(openrouter.contains("not set"), "{openrouter}");
    assert!(text.contains("[routes.default]"), "{text}");
}

// ----- models -----

#[test]
fn models_lists_the_default_route_and_its_targets_in_order() {
    // No ./routes.toml in the scratch dir: the embedded default is used.
    let dir = Scratch::new("models");
    let out = run(hermes(&dir).arg("models"));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        text.lines().any(|l| l.starts_with("default")),
        "no route line: {text}"
    );
    let targets = [
        "kimi/kimi-k2.6",
        "openrouter/moonshotai/kimi-k2.6",
        "local/qwen3:8b",
        "demo/demo",
    ];
    let at: Vec<usize> = targets
        .iter()
        .map(|t| {
            text.find(t)
                .unwrap_or_else(|| panic!("{t} missing:\n{text}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{text}");
    let kimi = text.lines().find(|l| l.contains("kimi/kimi-k2.6")).unwrap();
    assert!(kimi.contains("disabled"), "{kimi}");
}

// ----- serve -----

/// A served proxy, killed if a failed assertion drops it before
/// `stop_and_read_log`: left running, it would hold the suite's output open.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `cmd` (a `serve` listening on `addr`) with its info log piped,
/// and waits until it answers `/health`.
fn serving(cmd: &mut Command, addr: &str) -> Serving {
    let child = Serving(
        cmd.env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("the proxy to listen", || {
        http_get(addr, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    child
}

/// Sends `signal` (`-HUP`, `-TERM`) to a served proxy.
fn signal(Serving(child): &Serving, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops a served proxy as a supervisor does (SIGTERM), checks that it
/// exits 0, and returns what it logged.
fn stop_and_read_log(mut served: Serving) -> String {
    signal(&served, "-TERM");
    let child = &mut served.0;
    let mut code = None;
    wait_for("a clean exit", || {
        code = child.try_wait().unwrap();
        code.is_some()
    });
    assert!(code.unwrap().success(), "exit status {code:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    log
}

#[test]
fn serve_refuses_a_public_address_without_client_keys() {
    let dir = Scratch::new("serve-public");
    let out = run(hermes(&dir).args(["serve", "--listen", "0.0.0.0:0"]));
    assert!(!out.status.success(), "it started");
    let err = stderr(&out);
    assert!(err.contains("loopback"), "{err}");

    // The same through HERMES_LISTEN, and with serve implied.
    let out = run(hermes(&dir).env("HERMES_LISTEN", "0.0.0.0:0"));
    assert!(!out.status.success(), "it started");
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_a_worker_count_that_is_no_count() {
    let dir = Scratch::new("serve-workers");
    for bad in ["0", "two", "-1"] {
        let out = run(hermes(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("TOKIO_WORKER_THREADS", bad));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("TOKIO_WORKER_THREADS") && err.contains(&format!("`{bad}`")),
            "{err}"
        );
    }
}

#[test]
fn serve_says_how_many_worker_threads_serve() {
    let dir = Scratch::new("serve-worker-count");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = serving(
        hermes(&dir)
            .args(["serve", "--listen", &addr])
            .env("TOKIO_WORKER_THREADS", "3"),
        &addr,
    );
    let log = stop_and_read_log(child);
    assert!(
        log.lines()
            .any(|l| l.contains("listening on") && l.contains("3 worker threads")),
        "{log}"
    );
}

// ----- help -----

#[test]
fn help_lists_every_command() {
    let dir = Scratch::new("help");
    let out = run(hermes(&dir).arg("--help"));
    assert!(out.status.success());
    let text = stdout(&out);
    for command in ["serve", "check", "models", "config"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing:\n{text}"
        );
    }
}

/// A raw HTTP/1.1 GET on loopback; None while nothing listens.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `what` every 20 ms for up to 15 s.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_config_and_sigterm_stops_cleanly() {
    let dir = Scratch::new("sighup");
    let routes = |names: &[&str]| {
        let mut t = String::from("[providers.demo]\nkind = \"mock\"\n");
        for n in names {
            t.push_str(&format!(
                "[routes.{n}]\ntargets = [{{ provider = \"demo\", model = \"m\" }}]\n"
            ));
        }
        t
    };
    let config = dir.write("edited.toml", &routes(&["alpha"]));
    let addr = format!("127.0.0.1:{}", free_port());
    let child = serving(
        hermes(&dir).args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &addr,
        ]),
        &addr,
    );
    assert!(!http_get(&addr, "/v1/models").unwrap().contains("\"beta\""));

    // The file watcher may notice the edit as well; the log says which
    // trigger reloaded, and SIGHUP always does.
    std::fs::write(&config, routes(&["alpha", "beta"])).unwrap();
    signal(&child, "-HUP");
    wait_for("the reload", || {
        http_get(&addr, "/v1/models").is_some_and(|r| r.contains("\"beta\""))
    });

    let log = stop_and_read_log(child);
    assert!(
        log.lines()
            .any(|l| l.contains("SIGHUP") && l.contains("config reloaded")),
        "{log}"
    );
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_start_naming_its_path() {
    let dir = Scratch::new("bad-store");
    dir.write("not-a-folder", "a file where a folder should be");
    let config = dir.write(
        "routes.toml",
        "[store]\npath = \"not-a-folder/hermes.db\"\n\n[providers.demo]\nkind = \"mock\"\n\n[routes.default]\ntargets = [{ provider = \"demo\", model = \"demo\" }]\n",
    );
    let out = run(hermes(&dir).args([
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the store at not-a-folder/hermes.db"),
        "{stderr}"
    );
    assert!(stderr.contains("[store]"), "{stderr}");
}

/// An HTTPS upstream on loopback with a certificate of its own authority,
/// speaking HTTP/2 when ALPN offers it (as OpenAI's and Anthropic's APIs
/// do), HTTP/1.1 otherwise. Counts TLS connections and those that chose h2.
struct TlsUpstream {
    port: u16,
    /// The authority's certificate, PEM.
    ca: String,
    connections: std::sync::Arc<AtomicUsize>,
    h2: std::sync::Arc<AtomicUsize>,
}

fn tls_upstream(rt: &tokio::runtime::Runtime) -> TlsUpstream {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::sync::Arc;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, h2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, counted_h2) = (connections.clone(), h2.clone());
    rt.spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counted_h2) = (acceptor.clone(), counted_h2.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return; // a client that did not trust us
                };
                let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let answer = hyper::service::service_fn(|_req| async {
                    let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":0}}}"#;
                    let resp = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            body.as_bytes(),
                        )))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let io = TokioIo::new(stream);
                if is_h2 {
                    counted_h2.fetch_add(1, Ordering::SeqCst);
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, answer)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, answer)
                        .await;
                }
            });
        }
    });
    TlsUpstream {
        port,
        ca: ca.pem(),
        connections,
        h2,
    }
}

/// A chat completion through the proxy at `addr`: status and body.
fn chat(rt: &tokio::runtime::Runtime, addr: &str) -> (u16, String) {
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn serve_trusts_the_authorities_of_ssl_cert_file_and_shares_one_http2_connection() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = tls_upstream(&rt);
    let dir = Scratch::new("tls-upstream");
    let ca = dir.write("ca.pem", &up.ca);
    let config = dir.write(
        "routes.toml",
        &format!(
            "[providers.tls]\nkind = \"openai\"\nbase_url = \"https://127.0.0.1:{}/v1\"\napi_key_env = \"UP_KEY\"\n\n[routes.main]\ntargets = [{{ provider = \"tls\", model = \"m\" }}]\n",
            up.port
        ),
    );
    let serve = |ca: Option<&Path>| {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = hermes(&dir);
        cmd.env("UP_KEY", "k")
            .env("TOKIO_WORKER_THREADS", "1")
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &addr,
            ]);
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        (serving(&mut cmd, &addr), addr)
    };

    // Mozilla's authorities alone do not vouch for this upstream: a clear 502.
    let (child, addr) = serve(None);
    let (status, body) = chat(&rt, &addr);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("certificate"), "{body}");
    stop_and_read_log(child);
    let refused = up.connections.load(Ordering::SeqCst);

    let (child, addr) = serve(Some(&ca));
    for _ in 0..3 {
        let (status, body) = chat(&rt, &addr);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("over tls"), "{body}");
    }
    // Requests at once share the pooled HTTP/2 connection too.
    let at_once: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                chat(&rt, &addr).0
            })
        })
        .collect();
    for request in at_once {
        assert_eq!(request.join().unwrap(), 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst) - refused, 1);
    assert_eq!(up.h2.load(Ordering::SeqCst), 1);
    let log = stop_and_read_log(child);
    assert!(
        log.contains("upstream TLS also trusts the 1 certificate(s) of SSL_CERT_FILE="),
        "{log}"
    );
}
