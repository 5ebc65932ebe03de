//! Live reload of a routes.toml that Kubernetes mounts from a ConfigMap.
//!
//! The kubelet lays a ConfigMap volume out as
//! `routes.toml -> ..data/routes.toml` and `..data -> ..<timestamp>/`, and
//! updates it atomically: it writes the new files into a new timestamped
//! folder, points a new symlink `..data_tmp` at it, renames `..data_tmp` over
//! `..data`, then removes the old folder. `routes.toml` itself is never
//! written, created or renamed, so a watcher that waits for an event naming
//! `routes.toml` never hears of the change. Real files, real watcher, the
//! kubelet's steps in its order; twice, so a watcher that goes deaf after the
//! first swap fails too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reload::{config, models};
use crate::support::proxy::Proxy;

/// A ConfigMap volume as the kubelet's atomic writer keeps it.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    /// The timestamped folder `..data` points at now.
    current: String,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut me = ConfigMapVolume {
            dir,
            current: String::new(),
            generation: 0,
        };
        me.current = me.write_payload(text);
        symlink(Path::new(&me.current), &me.dir.path().join("..data"));
        // The user-visible name, made once and never touched again.
        symlink(
            Path::new("..data/routes.toml"),
            &me.dir.path().join("routes.toml"),
        );
        me
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// Step 1 of an update: the payload in a new timestamped folder.
    fn write_payload(&mut self, text: &str) -> String {
        self.generation += 1;
        let name = format!(
            "..2026_12_02_10_00_{:02}.00000000{}",
            self.generation, self.generation
        );
        let folder = self.dir.path().join(&name);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("routes.toml"), text).unwrap();
        name
    }

    /// A ConfigMap update, step by step as the kubelet does it.
    fn update(&mut self, text: &str) {
        let old = self.current.clone();
        let new = self.write_payload(text);
        let tmp = self.dir.path().join("..data_tmp");
        symlink(Path::new(&new), &tmp);
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.path().join(old)).unwrap();
        self.current = new;
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[tokio::test]
async fn a_configmap_update_is_served_after_each_atomic_swap() {
    let mut volume = ConfigMapVolume::new(&config(&["alpha"]));
    let proxy = Proxy::start_watching(&volume.path(), &[]).await;
    assert!(models(&proxy).await.contains(&"alpha".to_string()));
    for (i, routes) in [vec!["alpha", "beta"], vec!["alpha", "beta", "gamma"]]
        .into_iter()
        .enumerate()
    {
        volume.update(&config(&routes));
        let want = routes.last().unwrap().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !models(&proxy).await.contains(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ConfigMap update {} was not picked up (routes: {:?})",
                i + 1,
                models(&proxy).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(proxy
        .metrics()
        .contains("hermes_config_reloads_total{result=\"success\"} 2"));
}
