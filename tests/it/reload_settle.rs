//! The file watcher against saves that go wrong: a file that is not UTF-8 is
//! rejected out loud, and an in-place write is read only once it has settled,
//! never while just its first part has landed. Real files, real watcher.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::proxy::Proxy;

/// A temp dir holding routes.toml, removed on drop.
struct ConfigDir(tempfile::TempDir);

impl ConfigDir {
    fn new(text: &str) -> Self {
        let me = ConfigDir(tempfile::tempdir().unwrap());
        std::fs::write(me.path(), text).unwrap();
        me
    }
    fn path(&self) -> PathBuf {
        self.0.path().join("routes.toml")
    }
}

fn config(routes: &[(&str, &str)]) -> String {
    let mut t = String::from("[providers.demo]\nkind = \"mock\"\n");
    for (name, model) in routes {
        t.push_str(&format!(
            "\n[routes.{name}]\ntargets = [{{ provider = \"demo\", model = \"{model}\" }}]\n"
        ));
    }
    t
}

fn reloads(proxy: &Proxy, result: &str) -> u64 {
    let needle = format!("hermes_config_reloads_total{{result=\"{result}\"}} ");
    proxy
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn route_model(proxy: &Proxy, route: &str) -> Option<String> {
    let generation = proxy.state.current();
    let route = generation.config.routes.iter().find(|r| r.name == route)?;
    Some(route.targets[0].model.clone())
}

/// Polls `done` every 20 ms for up to 10 s.
async fn eventually(mut done: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_routes_toml_that_is_not_utf8_is_rejected_and_counted() {
    let dir = ConfigDir::new(&config(&[("main", "m1")]));
    let proxy = Proxy::start_watching(&dir.path(), &[]).await;
    let mut binary = config(&[("main", "m2")]).into_bytes();
    binary.extend_from_slice(b"\n# caf\xe9 \xff\xfe\n");
    std::fs::write(dir.path(), &binary).unwrap();
    eventually(
        || reloads(&proxy, "failure") == 1,
        "the non-UTF-8 file to be reported as a failed reload",
    )
    .await;
    assert_eq!(reloads(&proxy, "success"), 0);
    assert_eq!(route_model(&proxy, "main").as_deref(), Some("m1"));
}

#[tokio::test]
async fn an_in_place_write_is_not_loaded_while_only_its_prefix_has_landed() {
    let debounce = Duration::from_millis(400);
    let before = config(&[("main", "m1"), ("extra", "e1")]);
    let after = config(&[("main", "m2"), ("extra", "e2")]);
    // The prefix is a valid config on its own: it lacks the route `extra`.
    let cut = after.find("\n[routes.extra]").unwrap();
    let dir = ConfigDir::new(&before);
    let proxy = Proxy::start_watching_every(&dir.path(), &[], debounce).await;

    let mut file = std::fs::File::create(dir.path()).unwrap();
    file.write_all(&after.as_bytes()[..cut]).unwrap();
    file.sync_all().unwrap();
    // The rest lands after one debounce has passed (when a watcher that reads
    // at the end of one would take the prefix) but before a second has.
    tokio::time::sleep(debounce * 3 / 2).await;
    file.write_all(&after.as_bytes()[cut..]).unwrap();
    file.sync_all().unwrap();
    drop(file);

    eventually(
        || route_model(&proxy, "extra").as_deref() == Some("e2"),
        "the whole new file to be loaded",
    )
    .await;
    tokio::time::sleep(debounce * 3).await;
    assert_eq!(
        reloads(&proxy, "success"),
        1,
        "the half-written file was loaded on its way"
    );
    assert_eq!(reloads(&proxy, "failure"), 0);
    assert_eq!(route_model(&proxy, "main").as_deref(), Some("m2"));
}
