//! A cluster for tests: a real `redis-server` on a free loopback port, and
//! replicas that are real `hermes-proxy` processes sharing it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hermes-proxy");

/// Whether `redis-server` can run here. Missing under CI is a failure
/// (`.ci/run` installs it); elsewhere the caller skips and says so.
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: redis-server is not installed");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Redis, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: as abrupt as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many times Redis ran each of `commands` (lower case, as
    /// `INFO commandstats` names them) without refusing it: the first
    /// EVALSHA of a fresh Redis fails with NOSCRIPT, for one.
    pub fn calls(&self, commands: &[&str]) -> u64 {
        let stats = self.command(&["INFO", "commandstats"]);
        let field = |line: &str, name: &str| -> u64 {
            let at = (line.find(&format!(",{name}="))).or_else(|| line.find(&format!(":{name}=")));
            at.and_then(|at| {
                line[at + name.len() + 2..]
                    .split(',')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
        };
        stats
            .lines()
            .filter(|l| {
                commands
                    .iter()
                    .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
            })
            .map(|l| field(l, "calls") - field(l, "failed_calls") - field(l, "rejected_calls"))
            .sum()
    }

    /// A command through redis-cli-free plain RESP, for assertions.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = vec![0; 65536];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One replica: `hermes-proxy --config <file>` with `HERMES_REDIS_URL` set.
pub struct Replica {
    pub addr: SocketAddr,
    child: Child,
    /// Everything it logged, for assertions.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts a replica on a free port with `config` and `env`, and waits
    /// until it listens.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Replica {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env_remove("HERMES_CONFIG")
            .env_remove("HERMES_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("hermes-proxy starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("replica did not start: {:?}", log.lock().unwrap()));
        Replica {
            addr: addr.parse().unwrap(),
            child,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn base_url(&self) -> String {
        self.url("/v1")
    }

    pub async fn metrics(&self) -> String {
        super::proxy::http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled series on /metrics, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let page = self.metrics().await;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn logged(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica's cluster handle straight from the library, on `url` under
/// `prefix`.
pub fn library_cluster(
    url: &str,
    prefix: &str,
    timeout: Duration,
) -> Arc<hermes_proxy::cluster::Cluster> {
    let settings = hermes_proxy::config::Cluster {
        redis_url_env: "HERMES_REDIS_URL".into(),
        redis_url: Some(hermes_proxy::config::Secret::new(url.into())),
        prefix: prefix.into(),
        timeout,
    };
    let gauge = prometheus::IntGauge::new("up", "up").unwrap();
    hermes_proxy::cluster::Cluster::new(&settings, gauge).expect("a cluster")
}

/// A name no other in this test process has (for config and store files).
pub fn unique_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "r{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Writes `text` as a config file in `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `check` until it holds, up to `within`; panics with `what` if not.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
