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

/// Starts `cmd` (a `serve` listening on `addr`) with its info log piped,
/// and waits until it answers `/health`.
fn serving(cmd: &mut Command, addr: &str) -> Child {
    let child = cmd
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the proxy to listen", || {
        http_get(addr, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    child
}

/// Sends `signal` (`-HUP`, `-TERM`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops a served proxy as a supervisor does (SIGTERM), checks that it
/// exits 0, and returns what it logged.
fn stop_and_read_log(mut child: Child) -> String {
    signal(&child, "-TERM");
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
