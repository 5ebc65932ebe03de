//! A real proxy instance for tests: the library's own server on 127.0.0.1:0,
//! configured from a routes.toml string, stopped gracefully on `stop`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use hermes_proxy::config;
use hermes_proxy::pipeline::service::Layers;
use hermes_proxy::runtime::reload::ConfigSource;
use hermes_proxy::runtime::State;
use hermes_proxy::server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// Where this proxy's response store lives, unless its config says.
    _store_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy from routes.toml text; panics with every config error.
    pub async fn start(toml: &str) -> Proxy {
        Self::start_with_env(toml, &[]).await
    }

    /// As `start`, served as the binary serves: on `workers` threads with a
    /// runtime each.
    pub async fn start_on_workers(toml: &str, workers: usize) -> Proxy {
        let (config, dir) = parse(toml, "test.toml", &lookup(&[]));
        Self::serve_on(State::new(config).unwrap(), None, dir, Some(workers)).await
    }

    /// As `start`, with extra tower layers on named routes' stacks.
    pub async fn start_with_layers(toml: &str, layers: Layers) -> Proxy {
        let (config, dir) = parse(toml, "test.toml", &lookup(&[]));
        Self::serve(State::build(config, None, layers).unwrap(), None, dir).await
    }

    /// As `start`, with the environment variables the config names.
    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Proxy {
        let (config, dir) = parse(toml, "test.toml", &lookup(env));
        Self::serve(State::new(config).unwrap(), None, dir).await
    }

    /// Serves the config file at `path` and reloads it on change, as
    /// `hermes-proxy --config path` does.
    pub async fn start_watching(path: &std::path::Path, env: &[(&str, &str)]) -> Proxy {
        Self::start_watching_every(path, env, hermes_proxy::runtime::reload::DEBOUNCE).await
    }

    /// As `start_watching`, with the watcher's debounce set.
    pub async fn start_watching_every(
        path: &std::path::Path,
        env: &[(&str, &str)],
        debounce: Duration,
    ) -> Proxy {
        let text = std::fs::read_to_string(path).unwrap();
        let (config, dir) = parse(&text, &path.display().to_string(), &lookup(env));
        let source = ConfigSource {
            path: path.to_path_buf(),
            env: Box::new(lookup(env)),
        };
        let state = State::with_source(config, Some(source)).unwrap();
        let watcher = hermes_proxy::runtime::reload::watch_every(state.clone(), debounce).unwrap();
        Self::serve(state, watcher, dir).await
    }

    async fn serve(
        state: Arc<State>,
        watcher: Option<notify::RecommendedWatcher>,
        store_dir: tempfile::TempDir,
    ) -> Proxy {
        Self::serve_on(state, watcher, store_dir, None).await
    }

    /// Serves on the test's runtime, or on `workers` threads.
    async fn serve_on(
        state: Arc<State>,
        watcher: Option<notify::RecommendedWatcher>,
        store_dir: tempfile::TempDir,
        workers: Option<usize>,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let stop = async {
            let _ = rx.await;
        };
        let drain = Duration::from_secs(30);
        let task = match workers {
            None => tokio::spawn(server::run(listener, state.clone(), stop, drain)),
            Some(n) => {
                let served = server::run_workers(listener, n, state.clone(), stop, drain);
                tokio::spawn(async move { served.await.unwrap() })
            }
        };
        Proxy {
            addr,
            state,
            _watcher: watcher,
            _store_dir: store_dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a JSON body to `path` with no client key.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        http().post(self.url(path)).json(body).send().await.unwrap()
    }

    /// The OpenAI client a user would point at the proxy.
    pub fn openai(&self, key: &str) -> async_openai::Client<OpenAIConfig> {
        async_openai::Client::with_config(
            OpenAIConfig::new()
                .with_api_base(self.base_url())
                .with_api_key(key),
        )
    }

    pub fn metrics(&self) -> String {
        String::from_utf8(self.state.render_metrics()).unwrap()
    }

    /// Asks the server to stop and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A routes.toml with one OpenAI-wire provider per (name, base_url) and a
/// route `main` over them in order; `extra` is appended verbatim.
pub fn config_for(upstreams: &[(&str, &str)], extra: &str) -> String {
    let mut toml = String::from("[defaults]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\n");
    for (name, url) in upstreams {
        toml.push_str(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n"
        ));
    }
    toml.push_str("[routes.main]\ntargets = [\n");
    for (name, _) in upstreams {
        toml.push_str(&format!(
            "  {{ provider = \"{name}\", model = \"{name}-model\" }},\n"
        ));
    }
    toml.push_str("]\n");
    toml.push_str(extra);
    toml
}

/// A plain HTTP client for what async-openai hides (headers, raw bodies).
/// Built once (building one costs tens of milliseconds) and without idle
/// connections, which would outlive the test runtime that opened them.
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        })
        .clone()
}

/// Reads a whole SSE body into its `data:` payloads (comments dropped).
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

fn lookup(env: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Parses a test config; its store goes into a fresh temporary folder
/// unless the config names a `[store]` of its own.
fn parse(
    toml: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (config::Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    match config::parse(toml, path, env) {
        Ok(mut c) => {
            if !toml.contains("[store]") {
                c.store.path = dir.path().join("hermes.db").display().to_string();
            }
            (c, dir)
        }
        Err(errors) => panic!(
            "test config is invalid:\n{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}
