use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::mock_upstream::{MockUpstream, Reply};
use crate::support::proxy::{http, Proxy};

const ADMIN: &str = "sk-admin-test";

/// A temp dir holding routes.toml, removed on drop.
struct ConfigDir(PathBuf);

impl ConfigDir {
    fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hermes-reload-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let me = ConfigDir(dir);
        std::fs::write(me.path(), text).unwrap();
        me
    }
    fn path(&self) -> PathBuf {
        self.0.join("routes.toml")
    }
    /// Saves like an editor does: write a temp file, rename it over the original.
    fn rename_swap(&self, text: &str) {
        let tmp = self.0.join(".routes.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn config(routes: &[&str]) -> String {
    let mut t = String::from("[server]\nadmin_key_env = \"ADMIN\"\n[providers.demo]\nkind = \"mock\"\nchunk_delay = \"0ms\"\n");
    for r in routes {
        t.push_str(&format!(
            "[routes.{r}]\ntargets = [{{ provider = \"demo\", model = \"{r}-model\" }}]\n"
        ));
    }
    t
}

pub(crate) async fn models(proxy: &Proxy) -> Vec<String> {
    let v: Value = http()
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_reload(proxy: &Proxy, key: Option<&str>) -> reqwest::Response {
    let mut req = http().post(proxy.url("/admin/reload"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn admin_reload_applies_a_valid_change_and_reports_it() {
    let dir = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    // written in place: the watcher may pick it up too, which is fine
    std::fs::write(dir.path(), config(&["alpha", "beta"])).unwrap();
    let resp = admin_reload(&proxy, Some(ADMIN)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"], "success");
    assert!(models(&proxy).await.contains(&"beta".to_string()));
    assert!(proxy
        .metrics()
        .contains("hermes_config_reloads_total{result=\"success\"}"));
}

#[tokio::test]
async fn settings_read_only_at_start_are_reported_as_needing_a_restart() {
    let dir = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    let moved = config(&["alpha"])
        + "[store]\npath = \"elsewhere.db\"\n[cluster]\nredis_url_env = \"NO_SUCH_REDIS\"\n";
    std::fs::write(dir.path(), moved).unwrap();
    let v: Value = admin_reload(&proxy, Some(ADMIN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"], "success", "{v}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("[store] path changed"), "{v}");
    assert!(
        warnings.contains("[cluster] changed: this takes a restart"),
        "{v}"
    );
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_config_and_is_counted() {
    let dir = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    let broken = config(&["alpha"]) + "[routes.gamma]\nstrategy = \"fastest\"\ntargets = [{ provider = \"nope\", model = \"x\" }]\n";
    std::fs::write(dir.path(), &broken).unwrap();
    let resp = admin_reload(&proxy, Some(ADMIN)).await;
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"], "failure");
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("routes.toml:")),
        "{errors:?}"
    );
    assert_eq!(models(&proxy).await, ["alpha", "demo/alpha-model"]);
    let chat = proxy
        .post(
            "/v1/chat/completions",
            &json!({"model": "alpha", "messages": [{"role": "user", "content": "still here?"}]}),
        )
        .await;
    assert_eq!(chat.status(), 200);
    assert!(proxy
        .metrics()
        .contains("hermes_config_reloads_total{result=\"failure\"}"));
}

#[tokio::test]
async fn the_admin_endpoint_needs_the_admin_key_and_is_off_without_one() {
    let dir = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    assert_eq!(admin_reload(&proxy, None).await.status(), 401);
    assert_eq!(admin_reload(&proxy, Some("sk-wrong")).await.status(), 401);

    let off = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&off.path(), &[]).await; // ADMIN unset
    assert_eq!(admin_reload(&proxy, Some(ADMIN)).await.status(), 404);
}

#[tokio::test]
async fn a_rename_swap_save_is_picked_up_by_the_watcher() {
    let dir = ConfigDir::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    for (i, routes) in [vec!["alpha", "beta"], vec!["alpha", "beta", "gamma"]]
        .into_iter()
        .enumerate()
    {
        dir.rename_swap(&config(&routes));
        let want = routes.last().unwrap().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !models(&proxy).await.contains(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "save {i} was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_under_load_fails_no_request() {
    let dir = ConfigDir::new(&config(&["alpha", "beta"]));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (failed, done, stop, url) = (failed.clone(), done.clone(), stop.clone(), proxy.url("/v1/chat/completions"));
            tokio::spawn(async move {
                for _ in 0..5000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let resp = http()
                        .post(&url)
                        .json(&json!({"model": "alpha", "stream": fastrand::bool(), "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    let ok = match resp {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 0..40 {
        let routes = if i % 2 == 0 {
            vec!["alpha"]
        } else {
            vec!["alpha", "beta"]
        };
        dir.rename_swap(&config(&routes));
        let resp = admin_reload(&proxy, Some(ADMIN)).await;
        assert_eq!(resp.status(), 200);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) >= 40,
        "too few requests overlapped the reloads"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_providers_cooldown_survives_a_reload() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "60"),
    );
    let text = |extra: &str| {
        format!(
            "[server]\nadmin_key_env = \"ADMIN\"\n[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\n[providers.b]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [routes.main]\ntargets = [{{ provider = \"a\", model = \"m\" }}, {{ provider = \"b\", model = \"m\" }}]\n{extra}",
            a.base_url(),
            b.base_url()
        )
    };
    let dir = ConfigDir::new(&text(""));
    let proxy = Proxy::start_watching(&dir.path(), &[("ADMIN", ADMIN)]).await;
    let ask = || async {
        proxy
            .post(
                "/v1/chat/completions",
                &json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
    };
    assert_eq!(ask().await.headers()["x-hermes-provider"], "b");
    std::fs::write(
        dir.path(),
        text("[routes.other]\ntargets = [{ provider = \"b\", model = \"m\" }]\n"),
    )
    .unwrap();
    assert_eq!(admin_reload(&proxy, Some(ADMIN)).await.status(), 200);
    assert_eq!(ask().await.headers()["x-hermes-provider"], "b");
    assert_eq!(
        a.request_count(),
        1,
        "a was asked again during its cooldown"
    );
}
