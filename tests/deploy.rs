//! deploy/ holds together: the Dockerfile builds a non-root image with a
//! health check, the compose stack runs two replicas on one Redis with
//! Prometheus scraping both and Grafana showing dashboards/, and the
//! Kubernetes base has the probes, a grace period longer than the proxy's
//! drain, a ConfigMap whose routes.toml `hermes-proxy check` accepts, and a
//! Secret carrying every variable that routes.toml names.
//!
//! `docker compose config` is not on the test machines, so the YAML is read
//! here. The Kubernetes base is checked twice: from the files
//! kustomization.yaml lists (always), and as `kubectl kustomize` renders it
//! (when kubectl is on PATH; the test says which ran).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hermes-proxy");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML stream, as JSON values (empty documents left out).
fn yaml_docs(text: &str, label: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{label}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: one YAML document expected");
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, got {v}"))
}

/// How long the proxy drains in-flight requests after SIGTERM: DRAIN in src/main.rs.
fn drain_seconds() -> u64 {
    let main = read("src/main.rs");
    let rest = main
        .split("const DRAIN: Duration = Duration::from_secs(")
        .nth(1)
        .expect("src/main.rs: `const DRAIN: Duration = Duration::from_secs(N);`");
    rest[..rest.find(')').unwrap()].trim().parse().unwrap()
}

/// The variables a routes.toml names (`key_env`, `api_key_env`, ...).
fn env_vars_named(toml: &str) -> Vec<String> {
    toml.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap().trim();
            let (key, value) = l.split_once('=')?;
            key.trim()
                .ends_with("_env")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// `[store] path` of a routes.toml.
fn store_path(toml: &str) -> String {
    let store = toml.split("\n[store]").nth(1).expect("a [store] table");
    let line = store
        .lines()
        .find(|l| l.trim_start().starts_with("path"))
        .expect("[store] path");
    line.split('"').nth(1).unwrap().to_owned()
}

fn run_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env_clear()
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// `hermes-proxy check` accepts `text`, `[cluster]` table included.
fn assert_config_valid(text: &str, label: &str) {
    assert!(
        text.contains("[cluster]"),
        "{label}: replicas share state through [cluster]"
    );
    let (ok, said) = run_check(text);
    assert!(ok, "hermes-proxy check rejects {label}:\n{said}");
    assert!(said.contains(": ok ("), "{label}: {said}");
}

// ------------------------------------------------------------------ Dockerfile

#[test]
fn the_dockerfile_builds_a_non_root_image_with_a_health_check() {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(
        froms.len() >= 2,
        "multi-stage: a build stage and a runtime stage"
    );
    let build = lines[froms[0]].split_whitespace().collect::<Vec<_>>();
    assert!(
        build[1].starts_with("rust:"),
        "build stage from a rust image: {build:?}"
    );
    let stage = build.last().unwrap();
    let last = *froms.last().unwrap();
    let runtime = &lines[last..];
    assert!(
        !lines[last].contains("rust:"),
        "the runtime stage is not the toolchain image"
    );
    assert!(
        lines[..last]
            .iter()
            .any(|l| l.contains("cargo build --release --locked")),
        "the build stage runs `cargo build --release --locked`"
    );
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with(&format!("COPY --from={stage} "))),
        "the runtime stage copies the binary from `{stage}`"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap().trim();
    assert_eq!(uid, "10001", "non-root user 10001");
    let health = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(health.contains("127.0.0.1:8080/health"), "{health}");
    if health.contains("curl") {
        assert!(
            runtime
                .iter()
                .any(|l| l.starts_with("RUN ") && l.contains("install") && l.contains(" curl")),
            "the health check runs curl: the runtime stage must install it"
        );
    }
    assert!(runtime.contains(&"EXPOSE 8080"), "EXPOSE 8080");
    let env = runtime
        .iter()
        .filter(|l| l.starts_with("ENV "))
        .copied()
        .collect::<String>();
    assert!(env.contains("HERMES_LISTEN=0.0.0.0:8080"), "{env}");
    assert!(
        env.contains("HERMES_CONFIG=/etc/hermes/routes.toml"),
        "{env}"
    );
    // Every file the build context must provide exists.
    for copy in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let args: Vec<&str> = copy.split_whitespace().skip(1).collect();
        for src in &args[..args.len() - 1] {
            assert!(repo().join(src).exists(), "{copy}: {src} is missing");
        }
    }
    let ignore = read(".dockerignore");
    for must in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == must),
            ".dockerignore lacks {must}"
        );
    }
    assert_config_valid(&read("deploy/routes.toml"), "deploy/routes.toml");
}

// ---------------------------------------------------------------- compose

/// A service's bind mounts as (source, target) pairs.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let parts: Vec<&str> = str_of(m, "a volume").split(':').collect();
                    (parts[0].to_owned(), parts[1].to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mounted_at(service: &Value, source: &str) -> Option<String> {
    mounts(service)
        .into_iter()
        .find(|(s, _)| s == source)
        .map(|(_, t)| t)
}

#[test]
fn compose_runs_two_replicas_on_one_redis_with_prometheus_and_grafana() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let routes = read("deploy/routes.toml");
    let drain = drain_seconds();
    let redis = services
        .iter()
        .find(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("redis:")))
        .map(|(name, _)| name.clone())
        .expect("a redis service");
    let mut published = Vec::new();
    for name in ["hermes-a", "hermes-b"] {
        let s = &services[name];
        assert_eq!(
            s["build"]["context"], "..",
            "{name}: built from the repository root"
        );
        let dockerfile = str_of(&s["build"]["dockerfile"], "build.dockerfile");
        assert!(
            repo().join(dockerfile).ends_with("deploy/Dockerfile"),
            "{name}: {dockerfile}"
        );
        let env = &s["environment"];
        let url = str_of(&env["HERMES_REDIS_URL"], "HERMES_REDIS_URL");
        assert!(
            url.starts_with(&format!("redis://{redis}:6379")),
            "{name}: {url}"
        );
        for var in env_vars_named(&routes) {
            assert!(
                env.get(&var).is_some(),
                "{name}: routes.toml names {var}, the service does not set it"
            );
        }
        let config = env["HERMES_CONFIG"]
            .as_str()
            .unwrap_or("/etc/hermes/routes.toml");
        assert_eq!(
            mounted_at(s, "./routes.toml").as_deref(),
            Some(config),
            "{name}: mounts deploy/routes.toml"
        );
        let data = std::path::Path::new(&store_path(&routes))
            .parent()
            .unwrap()
            .to_owned();
        assert!(
            mounts(s).iter().any(|(_, t)| data.starts_with(t)),
            "{name}: no volume holds the store's folder {}",
            data.display()
        );
        let grace = humantime::parse_duration(str_of(&s["stop_grace_period"], "stop_grace_period"))
            .unwrap();
        assert!(
            grace.as_secs() > drain,
            "{name}: stop_grace_period {grace:?} <= drain {drain}s"
        );
        published.push(s["ports"][0].clone());
    }
    assert_ne!(
        published[0], published[1],
        "the replicas publish different ports"
    );

    let prometheus = services
        .values()
        .find(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("prom/prometheus"))
        })
        .expect("a prometheus service");
    let target =
        mounted_at(prometheus, "./prometheus/prometheus.yml").expect("mounts prometheus.yml");
    let args = prometheus["command"].to_string();
    assert!(args.contains(&format!("--config.file={target}")), "{args}");
    let scrape = yaml("deploy/prometheus/prometheus.yml");
    let jobs = scrape["scrape_configs"].as_array().expect("scrape_configs");
    let scraped: Vec<&str> = jobs
        .iter()
        .filter(|j| j["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics")
        .flat_map(|j| j["static_configs"].as_array().into_iter().flatten())
        .flat_map(|c| c["targets"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for replica in ["hermes-a:8080", "hermes-b:8080"] {
        assert!(
            scraped.contains(&replica),
            "prometheus does not scrape {replica}: {scraped:?}"
        );
    }

    let grafana = services
        .values()
        .find(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("grafana/"))
        })
        .expect("a grafana service");
    assert_eq!(
        mounted_at(grafana, "./grafana/provisioning").as_deref(),
        Some("/etc/grafana/provisioning")
    );
    let dashboards = mounted_at(grafana, "../dashboards").expect("grafana mounts ../dashboards");
    let providers = yaml("deploy/grafana/provisioning/dashboards/hermes.yml");
    assert!(
        providers["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["options"]["path"] == json!(dashboards)),
        "no dashboard provider reads {dashboards}"
    );
    let sources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let prom_name = services
        .iter()
        .find(|(_, s)| std::ptr::eq(*s, prometheus))
        .map(|(n, _)| n.clone())
        .unwrap();
    assert!(
        sources["datasources"].as_array().unwrap().iter().any(|d| {
            d["type"] == "prometheus" && d["url"] == json!(format!("http://{prom_name}:9090"))
        }),
        "no data source points at http://{prom_name}:9090"
    );
    assert!(repo().join("dashboards/hermes-proxy.json").exists());

    // Every bind-mounted file or folder is in the repository.
    for (name, s) in services {
        for (source, _) in mounts(s).iter().filter(|(s, _)| s.starts_with('.')) {
            assert!(
                repo().join("deploy").join(source).exists(),
                "{name}: {source} is missing"
            );
        }
    }
    if let Some(lb) = services.get("lb") {
        let conf = read("deploy/nginx.conf");
        assert!(mounted_at(lb, "./nginx.conf").is_some());
        for replica in ["hermes-a:8080", "hermes-b:8080"] {
            assert!(
                conf.contains(replica),
                "nginx.conf does not balance onto {replica}"
            );
        }
    }
}

// --------------------------------------------------------------- Kubernetes

/// The Kubernetes objects kustomization.yaml makes, read from its files:
/// every resource, and the ConfigMaps of configMapGenerator.
fn kustomized_from_files() -> Vec<Value> {
    let k = yaml("deploy/k8s/kustomization.yaml");
    let mut docs = Vec::new();
    for res in k["resources"].as_array().expect("resources") {
        let rel = format!("deploy/k8s/{}", str_of(res, "a resource"));
        docs.extend(yaml_docs(&read(&rel), &rel));
    }
    assert!(
        k.get("secretGenerator").is_none(),
        "secretGenerator: not read by this test"
    );
    for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
        let mut data = serde_json::Map::new();
        for file in generator["files"].as_array().expect("files") {
            let file = str_of(file, "a file");
            let (key, path) = file.split_once('=').unwrap_or((file, file));
            data.insert(key.to_owned(), json!(read(&format!("deploy/k8s/{path}"))));
        }
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": data,
        }));
    }
    docs
}

fn kubectl() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn check_kubernetes(docs: &[Value], how: &str) {
    let drain = drain_seconds();
    let deploy = find(docs, "Deployment", "hermes-proxy");
    assert!(
        deploy["spec"]["replicas"].as_u64().unwrap() >= 2,
        "{how}: 2 replicas"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{how}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{how}");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .filter(|a| a.first() == Some(&json!("sleep")))
        .map_or(0, |a| str_of(&a[1], "sleep").parse::<u64>().unwrap());
    assert!(
        grace > drain + pre_stop,
        "{how}: grace {grace}s <= drain {drain}s + preStop {pre_stop}s"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{how}");
    assert_ne!(pod["securityContext"]["runAsUser"], 0, "{how}");
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"], true,
        "{how}"
    );

    // The config: the ConfigMap mounted as a directory, a key of it passed to --config.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let config_path = Path::new(args[at + 1]);
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &Value| volumes.iter().find(|v| &v["name"] == name).unwrap();
    let config_mount = mounts
        .iter()
        .find(|m| config_path.parent() == Some(Path::new(str_of(&m["mountPath"], "mountPath"))))
        .expect("a volume mounted at the --config file's folder");
    assert!(
        config_mount.get("subPath").is_none(),
        "{how}: a subPath mount never updates"
    );
    let cm_name = str_of(
        &volume(&config_mount["name"])["configMap"]["name"],
        "configMap.name",
    );
    assert_eq!(
        cm_name, "hermes-routes",
        "{how}: the ConfigMap keeps a stable name (no hash suffix)"
    );
    let cm = find(docs, "ConfigMap", cm_name);
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let routes = str_of(&cm["data"][key], "the ConfigMap's routes.toml");
    assert_config_valid(routes, &format!("the ConfigMap's {key} ({how})"));

    // The store's folder is writable: an emptyDir (or a claim) is mounted over it.
    let store = store_path(routes);
    let data = mounts
        .iter()
        .find(|m| Path::new(&store).starts_with(str_of(&m["mountPath"], "mountPath")))
        .unwrap_or_else(|| panic!("{how}: nothing writable mounted over {store}"));
    let v = volume(&data["name"]);
    assert!(
        v.get("emptyDir").is_some() || v.get("persistentVolumeClaim").is_some(),
        "{how}: {v}"
    );

    // The Secret carries every variable routes.toml names.
    let secret_name = c["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["secretRef"]["name"].as_str())
        .expect("envFrom a Secret");
    let secret = find(docs, "Secret", secret_name);
    let has =
        |var: &str| secret["stringData"].get(var).is_some() || secret["data"].get(var).is_some();
    for var in env_vars_named(routes) {
        assert!(
            has(&var),
            "{how}: routes.toml names {var}, Secret {secret_name} lacks it"
        );
    }
    let url = str_of(
        &secret["stringData"]["HERMES_REDIS_URL"],
        "HERMES_REDIS_URL",
    );
    let host = url
        .trim_start_matches("redis://")
        .split([':', '/'])
        .next()
        .unwrap();
    if docs
        .iter()
        .any(|d| d["kind"] == "Service" && d["metadata"]["name"] == host)
    {
        println!("{how}: Redis is the Service {host}");
    } else {
        println!("{how}: Redis at {host} is outside this base");
    }

    // The Service reaches the pods.
    let service = find(docs, "Service", "hermes-proxy");
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(labels.get(k), Some(v), "{how}: the Service selects {k}={v}");
    }
    let port = &service["spec"]["ports"][0]["targetPort"];
    let container_port = &c["ports"][0];
    assert!(
        port == &container_port["name"] || port == &container_port["containerPort"],
        "{how}: targetPort {port}"
    );
}

#[test]
fn the_kubernetes_files_make_probes_grace_config_and_secret() {
    println!("checking the files kustomization.yaml lists");
    check_kubernetes(&kustomized_from_files(), "files");
    let k = yaml("deploy/k8s/kustomization.yaml");
    for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
        assert_eq!(
            generator["options"]["disableNameSuffixHash"], true,
            "a hash suffix rolls the pods on every change instead of reloading live"
        );
    }
}

#[test]
fn kubectl_kustomize_renders_the_same_base() {
    let Some(kubectl) = kubectl() else {
        println!("kubectl not on PATH: `kubectl kustomize` not run (the files were checked by the_kubernetes_files_make_probes_grace_config_and_secret)");
        return;
    };
    println!("rendering with {} kustomize deploy/k8s", kubectl.display());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy/k8s"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap(), "kubectl kustomize");
    check_kubernetes(&docs, "kubectl kustomize");
}
