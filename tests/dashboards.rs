//! The Grafana dashboards in `dashboards/` against the metrics the proxy
//! really exports: every query names only exported series, uses counters and
//! histograms the way PromQL needs, and every panel follows the data-source
//! variable. Pure: no network, no Prometheus (CI runs the real one, see
//! tests/e2e/prometheus_check.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hermes_proxy::metrics::Metrics;
use serde_json::Value;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// Every `*.json` under dashboards/, parsed.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {:?}", dashboards_dir());
    out
}

fn main_dashboard() -> Value {
    dashboards()
        .into_iter()
        .find(|(name, _)| name == "hermes-proxy.json")
        .expect("dashboards/hermes-proxy.json exists")
        .1
}

/// Metric family name -> Prometheus type, from the exposition of a fresh
/// registry with one child in every family (an empty family is not rendered).
fn exported_families() -> BTreeMap<String, String> {
    let m = Metrics::new();
    m.requests.with_label_values(&["r", "200"]).inc();
    m.request_duration.with_label_values(&["r"]).observe(0.1);
    m.ttft.with_label_values(&["r", "p"]).observe(0.1);
    m.overhead.with_label_values(&["r"]).observe(0.0001);
    m.upstream_requests.with_label_values(&["p", "ok"]).inc();
    m.upstream_duration.with_label_values(&["p"]).observe(0.1);
    m.retries.with_label_values(&["p", "rate_limited"]).inc();
    m.fallbacks.with_label_values(&["r", "p", "q"]).inc();
    m.cooldown.with_label_values(&["p"]).set(1);
    m.compressions.with_label_values(&["r", "ok"]).inc();
    m.tokens.with_label_values(&["p", "prompt"]).inc();
    m.inflight.inc();
    m.config_reloads.with_label_values(&["success"]).inc();
    m.agent_tool_calls
        .with_label_values(&["read_file", "ok"])
        .inc();
    m.agent_steps.with_label_values(&["r"]).observe(3.0);
    m.store_write_failures.inc();
    m.reasoning_roundtrip.with_label_values(&["restored"]).inc();
    m.cluster_up().set(1);
    let text = String::from_utf8(m.render()).unwrap();
    let families: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    // A family that did not render would make every query on it look invalid.
    assert_eq!(
        families.len(),
        18,
        "expected the 16 SPEC families, hermes_store_write_failures_total and hermes_reasoning_roundtrip_total, got {families:?}"
    );
    families
}

/// Series name -> (family, type): histograms add `_bucket`, `_sum`, `_count`.
fn exported_series() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for (family, kind) in exported_families() {
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{family}{suffix}"), (family.clone(), kind.clone()));
            }
        } else {
            out.insert(family.clone(), (family, kind));
        }
    }
    out
}

/// Every string under a key named `expr`, anywhere in the document, with a
/// path for messages.
fn exprs(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                match (k.as_str(), child) {
                    ("expr", Value::String(s)) => out.push((here, s.clone())),
                    _ => exprs(child, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                exprs(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn all_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    exprs(dash, "", &mut out);
    out
}

/// The expression with every quoted string blanked out (label values, regexes),
/// so what is left is names, functions and operators.
fn without_strings(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q != '`' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None => {
                if matches!(c, '"' | '\'' | '`') {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// `(identifier, byte offset just past it)` for every `hermes_...` name that
/// stands on its own (not inside a longer identifier).
fn hermes_names(code: &str) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &code[start..i];
            if word.starts_with("hermes_") {
                out.push((word.to_owned(), i));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Balanced (), [], {} outside strings, and every string closed.
fn check_balanced(expr: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in expr.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => stack.push((c, i)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((open, _)) if open == want => {}
                    Some((open, at)) => {
                        return Err(format!("`{c}` at {i} closes `{open}` opened at {at}"))
                    }
                    None => return Err(format!("`{c}` at {i} closes nothing")),
                }
            }
            _ => {}
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q}string"));
    }
    if let Some((open, at)) = stack.pop() {
        return Err(format!("`{open}` at {at} is never closed"));
    }
    Ok(())
}

/// What follows a series name, skipping a `{...}` matcher: `[` means a range
/// selector (what rate/increase need).
fn followed_by_range(code: &str, end: usize) -> bool {
    let rest = code[end..].trim_start();
    let rest = match rest.strip_prefix('{') {
        Some(inner) => match inner.find('}') {
            Some(close) => inner[close + 1..].trim_start(),
            None => return false,
        },
        None => rest,
    };
    rest.starts_with('[')
}

/// Every problem with one expression, as messages.
fn problems(expr: &str, series: &BTreeMap<String, (String, String)>) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = check_balanced(expr) {
        out.push(e);
        return out;
    }
    let code = without_strings(expr);
    let names = hermes_names(&code);
    if names.is_empty() {
        out.push("queries no hermes_ metric".into());
    }
    for (name, end) in &names {
        let Some((_, kind)) = series.get(name) else {
            out.push(format!("`{name}` is not an exported series"));
            continue;
        };
        let cumulative = kind == "counter" || kind == "histogram";
        // Raw counters and buckets only make sense as rates over a range;
        // a gauge never goes through rate().
        if cumulative && !followed_by_range(&code, *end) {
            out.push(format!("{kind} `{name}` used without a range selector"));
        }
        if kind == "gauge" && followed_by_range(&code, *end) && code.contains("rate(") {
            out.push(format!("gauge `{name}` put through rate()"));
        }
    }
    if code.contains("histogram_quantile") {
        if !names.iter().all(|(n, _)| n.ends_with("_bucket")) {
            out.push("histogram_quantile over a non-bucket series".into());
        }
        // sum by (le, ...) or the quantile is computed per series and wrong.
        let by_le = code.split("by").skip(1).any(|after| {
            after.trim_start().starts_with('(') && {
                let inner = &after.trim_start()[1..];
                let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
                inner.split(',').any(|l| l.trim() == "le")
            }
        });
        if !by_le {
            out.push("histogram_quantile without `by (le, ...)`".into());
        }
    }
    out
}

#[test]
fn every_dashboard_query_names_only_exported_metrics_and_is_well_formed() {
    let series = exported_series();
    let mut failures = Vec::new();
    let mut count = 0;
    for (file, dash) in dashboards() {
        for (path, expr) in all_exprs(&dash) {
            count += 1;
            for p in problems(&expr, &series) {
                failures.push(format!("{file}{path}: {p}\n    {expr}"));
            }
        }
    }
    assert!(count >= 20, "only {count} queries found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checks_catch_broken_queries() {
    // The test above must be able to fail: each of these is rejected.
    let series = exported_series();
    for bad in [
        "sum(rate(hermes_requests_total{route=~\"$route\"}[5m])",
        "sum(rate(hermes_requests_total{route=~\"$route}[5m]))",
        "sum(rate(hermes_request_total[5m]))",
        "sum(hermes_requests_total)",
        "histogram_quantile(0.9, sum by (route) (rate(hermes_overhead_seconds_bucket[5m])))",
        "histogram_quantile(0.9, sum by (le) (rate(hermes_overhead_seconds_sum[5m])))",
        "sum(rate(hermes_inflight_requests[5m]))",
        "up",
        "sum(rate(hermes_tokens_total[5m]) ]",
    ] {
        assert!(
            !problems(bad, &series).is_empty(),
            "accepted a broken query: {bad}"
        );
    }
    assert_eq!(
        problems(
            "histogram_quantile(0.99, sum by (le, route) (rate(hermes_overhead_seconds_bucket{route=~\"a|b\"}[$__rate_interval])))",
            &series
        ),
        Vec::<String>::new()
    );
}

#[test]
fn every_exported_family_has_a_panel() {
    let families = exported_families();
    let dash = main_dashboard();
    let used: BTreeSet<String> = all_exprs(&dash)
        .iter()
        .flat_map(|(_, e)| hermes_names(&without_strings(e)))
        .map(|(n, _)| n)
        .collect();
    let missing: Vec<&String> = families
        .iter()
        .filter(|(family, kind)| {
            if kind.as_str() == "histogram" {
                !used.contains(&format!("{family}_bucket"))
            } else {
                !used.contains(*family)
            }
        })
        .map(|(f, _)| f)
        .collect();
    assert!(missing.is_empty(), "no panel queries {missing:?}");
}

fn is_datasource_var(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "${datasource}" || s == "$datasource",
        Value::Object(o) => {
            o.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| u == "${datasource}" || u == "$datasource")
                && o.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "prometheus")
        }
        _ => false,
    }
}

/// Panels at the top level and inside (collapsed) rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("`panels` is an array") {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn every_panel_and_query_uses_the_datasource_variable() {
    for (file, dash) in dashboards() {
        let mut ids = BTreeSet::new();
        for p in panels(&dash) {
            let title = p["title"].as_str().unwrap_or("");
            let id = p["id"].as_u64().expect("every panel has a numeric id");
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            assert!(
                p["gridPos"]["w"].as_u64().is_some() && p["gridPos"]["h"].as_u64().is_some(),
                "{file}: panel {title:?} has no gridPos"
            );
            if p["type"] == "row" {
                assert!(
                    p.get("targets").is_none(),
                    "{file}: row {title:?} has targets"
                );
                continue;
            }
            assert!(!title.is_empty(), "{file}: panel {id} has no title");
            assert!(
                p["description"].as_str().is_some_and(|d| d.len() > 20),
                "{file}: panel {title:?} says nothing about what it shows"
            );
            assert!(
                is_datasource_var(&p["datasource"]),
                "{file}: panel {title:?} has datasource {}",
                p["datasource"]
            );
            let targets = p["targets"].as_array().unwrap_or_else(|| {
                panic!("{file}: panel {title:?} has no targets");
            });
            assert!(
                !targets.is_empty(),
                "{file}: panel {title:?} has no targets"
            );
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{file}: panel {title:?} has a target without expr"
                );
                if let Some(ds) = t.get("datasource") {
                    assert!(
                        is_datasource_var(ds),
                        "{file}: a target of {title:?} has datasource {ds}"
                    );
                }
            }
        }
        for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
            if a.get("expr").is_some() {
                assert!(
                    is_datasource_var(&a["datasource"]),
                    "{file}: annotation {} has datasource {}",
                    a["name"],
                    a["datasource"]
                );
            }
        }
    }
}

#[test]
fn the_dashboard_is_importable_and_has_its_variables() {
    let dash = main_dashboard();
    assert!(
        dash.get("__inputs").is_none(),
        "import must not ask for inputs"
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let uid = dash["uid"].as_str().expect("uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() > 10));
    assert!(dash["id"].is_null(), "a fixed id clashes on import");

    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let series = exported_series();
    for (name, metric, label) in [
        ("route", "hermes_requests_total", "route"),
        ("provider", "hermes_upstream_requests_total", "provider"),
    ] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert!(
            is_datasource_var(&v["datasource"]),
            "{name}: {}",
            v["datasource"]
        );
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("variable query text");
        let compact: String = query.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(compact, format!("label_values({metric},{label})"), "{name}");
        assert!(series.contains_key(metric));
        // Queries must filter on the variable as a regex, so All and multi work.
        let filter = format!("{label}=~\"${name}\"");
        assert!(
            all_exprs(&dash).iter().any(|(_, e)| e.contains(&filter)),
            "no query filters on {filter}"
        );
    }
    // A `$var` in a query must be one the dashboard defines (or a Grafana built-in).
    let names: BTreeSet<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    for (path, expr) in all_exprs(&dash) {
        for part in expr.split('$').skip(1) {
            let part = part.trim_start_matches('{');
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name.starts_with("__") || names.contains(name.as_str()),
                "{path}: unknown variable ${name}"
            );
        }
    }
}
