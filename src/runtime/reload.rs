//! Live reload of routes.toml: from a file watcher, SIGHUP, or
//! `POST /admin/reload`.
//!
//! The whole file is parsed and validated away from the request path; only a
//! valid config is swapped in, whole, with one `ArcSwap` store. Requests in
//! flight keep the generation they loaded. What must outlive a config (the
//! connection pool, cooldowns, provider limiters keyed by unchanged
//! settings, latency estimates, learned windows) lives in the `Handles`, so
//! an unchanged provider keeps it all. A rejected file leaves the old config
//! serving and is counted as `hermes_config_reloads_total{result="failure"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::State;
use crate::config::{self, Config, ConfigError};

/// Where the config comes from, so it can be read again.
pub struct ConfigSource {
    pub path: PathBuf,
    /// Reads the variables the file names (the process environment in
    /// production; a fixed map in tests).
    pub env: Env,
}

/// A lookup of environment variables by name.
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl ConfigSource {
    pub fn from_env(path: PathBuf) -> Self {
        ConfigSource {
            path,
            env: Box::new(|name| std::env::var(name).ok()),
        }
    }

    fn load(&self) -> Result<Config, Vec<String>> {
        let label = self.path.display().to_string();
        let bytes =
            std::fs::read(&self.path).map_err(|e| vec![format!("{label}: cannot read: {e}")])?;
        self.parse(&bytes)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Config, Vec<String>> {
        let label = self.path.display().to_string();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            vec![format!(
                "{label}: not UTF-8 text (invalid byte at offset {}): save it as UTF-8",
                e.valid_up_to()
            )]
        })?;
        config::parse(text, &label, &*self.env)
            .map_err(|errors| errors.iter().map(ConfigError::to_string).collect())
    }
}

/// What a reload did: the admin endpoint's answer and the log's summary.
#[derive(Debug, Serialize, PartialEq)]
pub struct Outcome {
    pub result: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq, Default)]
pub struct Changes {
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub routes_changed: Vec<String>,
    pub providers_added: Vec<String>,
    pub providers_removed: Vec<String>,
    pub providers_changed: Vec<String>,
}

impl Changes {
    fn between(old: &Config, new: &Config) -> Changes {
        let mut c = Changes::default();
        diff(
            old.routes.iter().map(|r| (r.name.as_str(), r)),
            new.routes.iter().map(|r| (r.name.as_str(), r)),
            (
                &mut c.routes_added,
                &mut c.routes_removed,
                &mut c.routes_changed,
            ),
        );
        diff(
            old.providers.iter().map(|p| (p.name.as_str(), p)),
            new.providers.iter().map(|p| (p.name.as_str(), p)),
            (
                &mut c.providers_added,
                &mut c.providers_removed,
                &mut c.providers_changed,
            ),
        );
        c
    }

    fn summary(&self) -> String {
        let parts = [
            ("routes added", &self.routes_added),
            ("routes removed", &self.routes_removed),
            ("routes changed", &self.routes_changed),
            ("providers added", &self.providers_added),
            ("providers removed", &self.providers_removed),
            ("providers changed", &self.providers_changed),
        ];
        let said: Vec<String> = parts
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what}: {}", names.join(", ")))
            .collect();
        if said.is_empty() {
            "no route or provider changed".into()
        } else {
            said.join("; ")
        }
    }
}

type Lists<'a> = (
    &'a mut Vec<String>,
    &'a mut Vec<String>,
    &'a mut Vec<String>,
);

fn diff<'a, T: PartialEq + 'a>(
    old: impl Iterator<Item = (&'a str, &'a T)> + Clone,
    new: impl Iterator<Item = (&'a str, &'a T)> + Clone,
    (added, removed, changed): Lists<'_>,
) {
    for (name, item) in new.clone() {
        match old.clone().find(|(n, _)| *n == name) {
            None => added.push(name.to_owned()),
            Some((_, before)) if before != item => changed.push(name.to_owned()),
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if !new.clone().any(|(n, _)| n == name) {
            removed.push(name.to_owned());
        }
    }
}

/// Reads, validates and (if valid) swaps in the config. `trigger` is for the log.
pub fn reload(state: &State, trigger: &str) -> Outcome {
    let Some(source) = &state.source else {
        return Outcome {
            result: "failure",
            errors: vec!["the proxy runs on the embedded config: there is no file to reload (start it with --config)".into()],
            changes: None,
            warnings: vec![],
        };
    };
    apply(state, trigger, source.load())
}

/// Swaps in a loaded config, or reports why it was rejected.
fn apply(state: &State, trigger: &str, loaded: Result<Config, Vec<String>>) -> Outcome {
    match loaded {
        Ok(config) => {
            let old = state.current();
            let changes = Changes::between(&old.config, &config);
            let mut warnings = config.warnings.clone();
            if config.server.listen != old.config.server.listen {
                warnings.push(format!(
                    "listen changed to {}: this takes a restart; still serving on {}",
                    config.server.listen, old.config.server.listen
                ));
            }
            if config.store.path != old.config.store.path {
                warnings.push(format!(
                    "[store] path changed to {}: this takes a restart; still using {}",
                    config.store.path, old.config.store.path
                ));
            }
            if config.cluster != old.config.cluster {
                warnings.push(
                    "[cluster] changed: this takes a restart (still sharing as at start)".into(),
                );
            }
            if config.defaults.connect_timeout != old.config.defaults.connect_timeout {
                warnings.push(
                    "connect_timeout changed: this takes a restart (connection pools are kept)"
                        .into(),
                );
            }
            state.install(config);
            state
                .handles
                .metrics
                .config_reloads
                .with_label_values(&["success"])
                .inc();
            tracing::info!(trigger, "config reloaded: {}", changes.summary());
            for w in &warnings {
                tracing::warn!("{w}");
            }
            Outcome {
                result: "success",
                errors: vec![],
                changes: Some(changes),
                warnings,
            }
        }
        Err(errors) => {
            state
                .handles
                .metrics
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            for e in &errors {
                tracing::error!(trigger, "config reload rejected, old config kept: {e}");
            }
            Outcome {
                result: "failure",
                errors,
                changes: None,
                warnings: vec![],
            }
        }
    }
}

/// Editors save in bursts (write, rename, chmod): one reload per burst.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the config file's directory (a rename-swap save replaces the
/// file's inode, so watching the file itself would go deaf after the first
/// save) and reloads when the file's content changed and has settled.
/// A config that is a symlink into its own directory is followed one step:
/// Kubernetes mounts a ConfigMap as `routes.toml -> ..data/routes.toml` and
/// updates it by renaming a new `..data` link into place, an event that
/// never names `routes.toml`. Returns the watcher, which stops watching when
/// dropped.
pub fn watch(state: Arc<State>) -> notify::Result<Option<notify::RecommendedWatcher>> {
    watch_every(state, DEBOUNCE)
}

/// As [`watch`], with the quiet time a change must keep before it is read.
pub fn watch_every(
    state: Arc<State>,
    debounce: Duration,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    use notify::Watcher;
    let Some(path) = state.source.as_ref().map(|s| s.path.clone()) else {
        return Ok(None);
    };
    let file_name = path.file_name().map(|n| n.to_owned());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let config = path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let Some(name) = file_name.as_deref() else {
            return;
        };
        // Writes into a file (a log kept beside the config) swap no link:
        // no `readlink` for each of them.
        let may_swap = !matches!(
            event.kind,
            notify::EventKind::Modify(
                notify::event::ModifyKind::Data(_) | notify::event::ModifyKind::Metadata(_)
            )
        );
        if event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name) || (may_swap && leads_to(&config, p)))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    // Read now, not when the task first runs: a save in between would
    // otherwise look like no change.
    let mut last = read(&path);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let Some(now) = settled(&path, &mut rx, debounce).await else {
                break;
            };
            // A removed or truncated file is not a change yet: the save's
            // final rename or write will arrive as another event.
            let blank = now
                .as_deref()
                .is_none_or(|b| b.iter().all(u8::is_ascii_whitespace));
            if blank || now == last {
                continue;
            }
            last = now;
            if let (Some(source), Some(bytes)) = (&state.source, &last) {
                apply(&state, "file change", source.parse(bytes));
            }
        }
    });
    Ok(Some(watcher))
}

/// Whether `changed`, an entry of the config's directory, is the first step
/// of the config's symlink (`..data` for `routes.toml -> ..data/routes.toml`):
/// replacing it changes what the config path reads. Read at each event, as
/// the link itself may have been replaced.
fn leads_to(config: &Path, changed: &Path) -> bool {
    let Ok(target) = std::fs::read_link(config) else {
        return false;
    };
    let first = target
        .components()
        .find(|c| !matches!(c, std::path::Component::CurDir));
    match (first, changed.file_name()) {
        (Some(std::path::Component::Normal(step)), Some(name)) => step == name,
        _ => false,
    }
}

/// The file's content once it has stopped changing: the same bytes at both
/// ends of a `debounce` with no write between. An in-place save lands in
/// pieces, and a valid prefix read too early would be loaded as the whole
/// file (a route missing until the rest arrives). None when the watcher is gone.
async fn settled(
    path: &Path,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    debounce: Duration,
) -> Option<Option<Vec<u8>>> {
    let mut seen = None;
    loop {
        tokio::time::sleep(debounce).await;
        let mut written = false;
        loop {
            match events.try_recv() {
                Ok(()) => written = true,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
        let now = read(path);
        if seen.as_ref() == Some(&now) && !written {
            return Some(now);
        }
        seen = Some(now);
    }
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Reloads on every SIGHUP until the process ends.
#[cfg(unix)]
pub fn on_sighup(state: Arc<State>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload instead");
            return;
        };
        while hup.recv().await.is_some() {
            reload(&state, "SIGHUP");
        }
    });
}
