//! The checker's promises: every error at once, each on its line, with a
//! hint where one can be guessed; and `config show` output that parses back
//! to the same config.

use std::net::SocketAddr;
use std::time::Duration;

use super::read::DURATION_HINT;
use super::validate::DEFAULT_TOOLS;
use super::*;

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse_ok(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    match parse(text, "routes.toml", env) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors: {errors:#?}"),
    }
}

pub(super) fn parse_err(text: &str) -> Vec<ConfigError> {
    match parse(text, "routes.toml", &no_env) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    }
}

/// The single error on `line`, failing if there is not exactly one.
pub(super) fn error_on(errors: &[ConfigError], line: usize) -> &ConfigError {
    let on_line: Vec<_> = errors.iter().filter(|e| e.line == line).collect();
    assert_eq!(on_line.len(), 1, "errors on line {line}: {errors:#?}");
    on_line[0]
}

pub(super) const MINIMAL: &str = r#"
[providers.demo]
kind = "mock"

[routes.default]
targets = [{ provider = "demo", model = "demo" }]
"#;

#[test]
fn embedded_file_parses_without_env() {
    let config = parse_ok(EMBEDDED, &no_env);
    assert_eq!(config.source, "routes.toml");
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.server.max_body_bytes, 10_485_760);
    assert_eq!(config.server.cors_origins, vec!["*"]);
    assert_eq!(
        config.server.admin_key_env.as_deref(),
        Some("HERMES_ADMIN_KEY")
    );
    assert!(config.server.admin_key.is_none());
    assert_eq!(config.defaults, Defaults::default());

    let enabled = |name: &str| config.provider(name).unwrap().enabled;
    assert!(!enabled("kimi"));
    assert!(!enabled("openrouter"));
    assert!(enabled("local"));
    assert!(enabled("demo"));
    let names: Vec<_> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["kimi", "openrouter", "local", "demo"], "file order");

    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    let kimi_line = EMBEDDED
        .lines()
        .position(|l| l.starts_with("api_key_env = \"MOONSHOT_API_KEY\""))
        .unwrap()
        + 1;
    assert_eq!(
        config.warnings[0],
        format!("routes.toml:{kimi_line}: provider `kimi` disabled: MOONSHOT_API_KEY is not set")
    );
    assert!(config.warnings[1].contains("provider `openrouter` disabled: OPENROUTER_API_KEY"));

    let openrouter = config.provider("openrouter").unwrap();
    assert_eq!(
        openrouter.base_url.as_deref(),
        Some("https://openrouter.ai/api/v1")
    );
    assert_eq!(openrouter.headers[0].0, "HTTP-Referer");
    assert_eq!(
        openrouter.headers[1],
        ("X-Title".into(), "hermes-proxy".into())
    );
    let kimi = config.provider("kimi").unwrap();
    assert_eq!((kimi.rpm, kimi.tpm), (Some(200), Some(2_000_000)));
    let demo = config.provider("demo").unwrap();
    assert_eq!(demo.kind, ProviderKind::Mock);
    assert_eq!(demo.base_url, None);
    assert_eq!(demo.mock.chunk_delay, Duration::from_millis(20));

    let route = config.route("default").unwrap();
    assert_eq!(route.strategy, Strategy::Fallback);
    assert!(route.compression && !route.agent && !route.resume);
    assert_eq!(route.targets.len(), 4);
    assert_eq!(route.targets[0].context_window, Some(262_144));
    assert_eq!(route.targets[1].context_window, None);
    assert!(route.targets.iter().all(|t| t.weight == 1));

    assert_eq!(config.agent.workspace, "./workspace");
    assert_eq!(config.agent.tools, DEFAULT_TOOLS);
    assert_eq!(config.agent.max_steps, 12);
    assert_eq!(config.agent.tool_timeout, Duration::from_secs(30));
    assert_eq!(config.store.path, "./data/hermes.db");
    assert_eq!(config.store.max_responses, 10_000);
    assert_eq!(config.store.ttl, Duration::from_secs(30 * 24 * 3600));
}

#[test]
fn store_limits_are_read_and_checked() {
    let text =
        format!("[store]\npath = \"/tmp/h.db\"\nmax_responses = 500\nttl = \"2h\"\n{MINIMAL}");
    let config = parse_ok(&text, &no_env);
    assert_eq!(config.store.path, "/tmp/h.db");
    assert_eq!(config.store.max_responses, 500);
    assert_eq!(config.store.ttl, Duration::from_secs(7200));

    let errors = parse_err(&format!(
        "[store]\nmax_responses = 0\nttl = \"0s\"\n{MINIMAL}"
    ));
    assert!(
        error_on(&errors, 2).message.contains("max_responses"),
        "{errors:?}"
    );
    assert!(
        error_on(&errors, 3).message.contains("longer than zero"),
        "{errors:?}"
    );
}

#[test]
fn env_key_enables_provider_and_stays_hidden() {
    let env = |var: &str| match var {
        "MOONSHOT_API_KEY" => Some("sk-very-secret".to_string()),
        "OPENROUTER_API_KEY" => Some(String::new()), // empty counts as unset
        "HERMES_ADMIN_KEY" => Some("admin-secret".to_string()),
        _ => None,
    };
    let config = parse_ok(EMBEDDED, &env);
    let kimi = config.provider("kimi").unwrap();
    assert!(kimi.enabled);
    assert_eq!(kimi.api_key.as_ref().unwrap().expose(), "sk-very-secret");
    assert!(!format!("{kimi:?}").contains("sk-very-secret"));
    assert!(!format!("{config:?}").contains("secret"));
    assert!(!config.provider("openrouter").unwrap().enabled);
    assert_eq!(config.warnings.len(), 1);
    assert_eq!(
        config.server.admin_key.as_ref().unwrap().expose(),
        "admin-secret"
    );
}

#[test]
fn reports_every_mistake_with_its_line() {
    let text = r#"[server]
listne = "127.0.0.1:8080"

[defaults]
cooldown = "thirty seconds"
max_attempts = "5"

[providers.demo]
kind = "mock"

[routes.default]
targets = [
  { provider = "demo", model = "demo" },
  { provider = "kimmi", model = "x" },
]
"#;
    let errors = parse_err(text);
    assert_eq!(errors.len(), 4, "{errors:#?}");

    let unknown = error_on(&errors, 2);
    assert_eq!(unknown.message, "unknown key `listne` in [server]");
    assert_eq!(unknown.hint.as_deref(), Some("did you mean `listen`?"));

    let duration = error_on(&errors, 5);
    assert!(
        duration.message.contains("`cooldown` in [defaults]"),
        "{duration:?}"
    );
    assert_eq!(
        duration.hint.as_deref(),
        Some(r#"write durations like "250ms", "30s" or "5m""#)
    );

    let wrong_type = error_on(&errors, 6);
    assert_eq!(
        wrong_type.message,
        "`max_attempts` in [defaults] must be a positive integer, not a string"
    );
    assert_eq!(wrong_type.hint.as_deref(), Some("remove the quotes"));

    let provider = error_on(&errors, 14);
    assert_eq!(
        provider.message,
        "unknown provider `kimmi` in target 2 of [routes.default]"
    );
    assert_eq!(
        provider.hint.as_deref(),
        Some("defined providers: demo; add a [providers.<name>] table")
    );

    // Sorted by line, and printed as `path:line: message (hint: ...)`.
    let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 5, 6, 14]);
    assert_eq!(
        errors[0].to_string(),
        "routes.toml:2: unknown key `listne` in [server] (hint: did you mean `listen`?)"
    );
}

#[test]
fn unknown_provider_hint_lists_defined_providers() {
    let text = MINIMAL.replace("provider = \"demo\"", "provider = \"openai\"");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 6);
    let hint = errors[0].hint.as_deref().unwrap();
    assert!(hint.contains("defined providers: demo"), "{hint}");
}

#[test]
fn syntax_error_gives_its_line() {
    let errors = parse_err("[server]\nlisten = \"127.0.0.1:8080\"\nmax_body_bytes = \n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 3);
    assert!(
        errors[0].message.starts_with("invalid TOML"),
        "{:?}",
        errors[0]
    );
    assert!(!errors[0].message.contains('\n'));
}

#[test]
fn non_loopback_without_keys_is_refused() {
    let text = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{MINIMAL}");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 2);
    assert!(errors[0]
        .message
        .starts_with("no [[server.keys]] configured"));
    assert!(errors[0].hint.is_some());

    // With a client key the same address is fine.
    let with_key = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[[server.keys]]\nname = \"a\"\nkey_env = \"KEY_A\"\nrpm = 60\nroutes = [\"default\"]\n{MINIMAL}"
    );
    let config = parse_ok(&with_key, &|v: &str| {
        (v == "KEY_A").then(|| "k".to_string())
    });
    let key = &config.server.keys[0];
    assert_eq!((key.name.as_str(), key.rpm), ("a", Some(60)));
    assert_eq!(key.key.as_ref().unwrap().expose(), "k");
    assert_eq!(key.routes.as_deref(), Some(&["default".to_string()][..]));
    assert!(config.warnings.is_empty());
}

#[test]
fn client_key_checks() {
    let text = format!(
        "[[server.keys]]\nname = \"a\"\nkey_env = \"KEY_A\"\nroutes = [\"*\", \"defualt\"]\n[[server.keys]]\nrpm = 0\n{MINIMAL}"
    );
    let errors = parse_err(&text);
    let route = error_on(&errors, 4);
    assert!(
        route.message.contains("unknown route `defualt`"),
        "{route:?}"
    );
    assert_eq!(route.hint.as_deref(), Some("did you mean `default`?"));
    let messages: Vec<_> = errors
        .iter()
        .filter(|e| e.line == 5)
        .map(|e| &e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("missing required key `name`")),
        "{messages:?}"
    );
    assert!(messages
        .iter()
        .any(|m| m.contains("missing required key `key_env`")));
    assert!(error_on(&errors, 6)
        .message
        .contains("positive integer, not 0"));

    // An unset key variable is a warning, not an error.
    let text = format!("[[server.keys]]\nname = \"a\"\nkey_env = \"KEY_A\"\n{MINIMAL}");
    let config = parse_ok(&text, &no_env);
    assert!(config.server.keys[0].key.is_none());
    assert_eq!(
        config.warnings,
        ["routes.toml:3: client key `a` cannot be used: KEY_A is not set"]
    );
}

#[test]
fn provider_checks() {
    let text = r#"[providers.a]
kind = "anthropic"
base_url = "https://api.anthropic.com"

[providers.b]
kind = "openai"
base_url = "api.example.com"
chunk_delay = "5ms"

[providers.c]
kind = "mock"
base_url = "http://x"
rate_limit_ratio = 1.5

[providers.d]
kind = "opanai"

[providers.e]
base_url = "https://x/v1/"
rpm = -1
headers = { "Bad Header" = "x", "X-Ok" = 3 }

[routes.r]
targets = [{ provider = "a", model = "" }]
"#;
    let errors = parse_err(text);
    assert!(
        errors.iter().all(|e| e.line != 2),
        "kind = \"anthropic\" is accepted: {errors:?}"
    );
    assert!(error_on(&errors, 7)
        .message
        .contains("must start with http://"));
    assert!(error_on(&errors, 8)
        .message
        .contains("only applies to kind = \"mock\""));
    assert!(error_on(&errors, 12)
        .message
        .contains("`base_url` is not allowed"));
    assert!(error_on(&errors, 13).message.contains("between 0 and 1"));
    assert_eq!(
        error_on(&errors, 16).hint.as_deref(),
        Some("did you mean \"openai\"?")
    );
    assert!(error_on(&errors, 18)
        .message
        .contains("missing required key `kind`"));
    assert!(error_on(&errors, 20)
        .message
        .contains("positive integer, not -1"));
    let header_errors = errors.iter().filter(|e| e.line == 21).count();
    assert_eq!(header_errors, 2, "{errors:#?}");
    assert!(error_on(&errors, 24)
        .message
        .contains("`model` in target 1 of [routes.r] must not be empty"));
}

#[test]
fn base_url_trailing_slash_is_stripped() {
    let text = format!(
        "[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1/\"\n{MINIMAL}"
    );
    let config = parse_ok(&text, &no_env);
    let x = config.provider("x").unwrap();
    assert_eq!(x.base_url.as_deref(), Some("http://127.0.0.1:8000/v1"));
    assert!(x.enabled && x.api_key.is_none());
}

#[test]
fn route_checks() {
    let text = r#"[providers.demo]
kind = "mock"

[routes."a/b"]
strategy = "fastest"
compression = false
agent = true
targets = []

[routes.c]
resume = "yes"
"#;
    let errors = parse_err(text);
    assert!(error_on(&errors, 4)
        .message
        .contains("must not contain '/'"));
    assert!(error_on(&errors, 5)
        .message
        .contains("one of \"fallback\", \"weighted\", \"latency\""));
    assert!(error_on(&errors, 6).message.contains("not a boolean"));
    // The agent loop is built: `agent = true` is no error.
    assert!(errors.iter().all(|e| e.line != 7), "{errors:?}");
    assert!(error_on(&errors, 8).message.contains("at least one target"));
    assert!(error_on(&errors, 10)
        .message
        .contains("missing required key `targets`"));
    assert!(error_on(&errors, 11)
        .message
        .contains("must be true or false"));
}

#[test]
fn route_and_target_values() {
    let text = r#"[providers.demo]
kind = "mock"
first_byte_delay = "1s"
rate_limit_ratio = 0.25
context_error_ratio = 1

[routes.w]
strategy = "weighted"
compression = "off"
resume = true

[[routes.w.targets]]
provider = "demo"
model = "m1"
weight = 3
context_window = 8_192
"#;
    let config = parse_ok(text, &no_env);
    let route = config.route("w").unwrap();
    assert_eq!(route.strategy, Strategy::Weighted);
    assert!(!route.compression && route.resume);
    assert_eq!(
        route.targets,
        [Target {
            provider: "demo".into(),
            model: "m1".into(),
            context_window: Some(8192),
            weight: 3
        }]
    );
    let mock = &config.provider("demo").unwrap().mock;
    assert_eq!(mock.first_byte_delay, Duration::from_secs(1));
    assert_eq!(
        (mock.rate_limit_ratio, mock.context_error_ratio),
        (0.25, 1.0)
    );
}

#[test]
fn defaults_agent_and_store_checks() {
    let text = format!(
        r#"[defaults]
max_attempts = 0
backoff_base = "10s"
backoff_max = "1s"
request_timeout = 30
connect_timeout = "0s"

[agent]
tools = ["read_file", "web_fecth"]
max_steps = 3.5
workspace = "/srv/ws"

[store]
pth = "x"

[servr]
{MINIMAL}"#
    );
    let errors = parse_err(&text);
    assert!(error_on(&errors, 2)
        .message
        .contains("positive integer, not 0"));
    assert!(error_on(&errors, 3)
        .message
        .contains("longer than `backoff_max`"));
    let timeout = error_on(&errors, 5);
    assert!(timeout
        .message
        .contains("must be a duration string, not an integer"));
    assert_eq!(timeout.hint.as_deref(), Some(DURATION_HINT));
    assert!(error_on(&errors, 6).message.contains("longer than zero"));
    assert_eq!(
        error_on(&errors, 9).hint.as_deref(),
        Some("did you mean `web_fetch`?")
    );
    assert!(error_on(&errors, 10).message.contains("not a float"));
    assert_eq!(
        error_on(&errors, 14).hint.as_deref(),
        Some("did you mean `path`?")
    );
    let top = error_on(&errors, 16);
    assert_eq!(top.message, "unknown key `servr` at the top level");
    assert_eq!(top.hint.as_deref(), Some("did you mean `server`?"));
}

#[test]
fn bad_listen_and_wrong_section_type() {
    let text = format!("server = 5\n{MINIMAL}");
    let errors = parse_err(&text);
    assert_eq!(
        errors[0].message,
        "`server` at the top level must be a table, not an integer"
    );

    let text = format!("[server]\nlisten = \"localhost:8080\"\n{MINIMAL}");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 2);
    assert!(errors[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("\"127.0.0.1:8080\""));
}

#[test]
fn empty_file_uses_defaults() {
    let config = parse_ok("", &no_env);
    assert!(config.providers.is_empty() && config.routes.is_empty());
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(config.server.keys.is_empty() && config.server.cors_origins.is_empty());
    assert_eq!(config.agent.tools, DEFAULT_TOOLS);
    assert!(config.agent.terminal_allow.is_empty() && !config.agent.web_allow_private);
}

#[test]
fn check_listen_rule() {
    let public: SocketAddr = "0.0.0.0:80".parse().unwrap();
    let loopback: SocketAddr = "[::1]:80".parse().unwrap();
    assert!(check_listen(&public, &[]).is_err());
    assert!(check_listen(&loopback, &[]).is_ok());
}

#[test]
fn a_key_allowlist_takes_provider_wildcards_of_defined_providers_only() {
    let base = "[providers.demo]\nkind = \"mock\"\n[routes.main]\ntargets = [{ provider = \"demo\", model = \"m\" }]\n\
                [[server.keys]]\nname = \"a\"\nkey_env = \"K\"\n";
    let ok = parse_ok(&format!("{base}routes = [\"main\", \"demo/*\"]\n"), &no_env);
    assert_eq!(
        ok.server.keys[0].routes.as_deref(),
        Some(&["main".to_string(), "demo/*".to_string()][..])
    );
    let errors = parse_err(&format!("{base}routes = [\"nope/*\"]\n"));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("nope/*"), "{}", errors[0]);
}

/// `config show` writes the typed config; reading it back must give the same
/// config, which holds the serialized field names to the keys `raw.rs` reads.
#[test]
fn show_round_trips() {
    let env = |var: &str| (var != "OPENROUTER_API_KEY").then(|| "sk-hidden".to_string());
    let full = format!(
        "[server]\nlisten = \"0.0.0.0:9000\"\nadmin_key_env = \"ADMIN\"\n\
         idle_timeout = \"2m\"\nmax_connections = 50\nmax_event_bytes = 1024\n\
         [[server.keys]]\nname = \"a\"\nkey_env = \"KEY_A\"\nrpm = 5\nroutes = [\"default\", \"m/*\"]\n\
         [defaults]\ncooldown = \"1m 30s\"\nmax_cooldown = \"10m\"\n\
         [providers.m]\nkind = \"mock\"\nfirst_byte_delay = \"1s\"\nrate_limit_ratio = 0.5\n\
         [routes.w]\nstrategy = \"weighted\"\ncompression = \"off\"\nresume = true\n\
         targets = [{{ provider = \"m\", model = \"x\", weight = 3, context_window = 4096 }}]\n\
         [agent]\ntools = [\"terminal\"]\nterminal_allow = [\"ls\"]\nweb_allow_private = true\n\
         [compression]\nsummarizer = \"w\"\ntarget_ratio = 0.25\nkeep_tool_outputs = 1\n{MINIMAL}"
    );
    for text in [EMBEDDED, full.as_str()] {
        let config = parse_ok(text, &env);
        let shown = config.to_toml();
        assert!(!shown.contains("sk-hidden"), "{shown}");
        let again = parse_ok(&shown, &env);
        assert_eq!(again.providers, config.providers, "{shown}");
        assert_eq!(again.routes, config.routes, "{shown}");
        assert_eq!(again.defaults, config.defaults);
        assert_eq!(again.agent, config.agent);
        assert_eq!(again.store, config.store);
        assert_eq!(again.compression, config.compression);
        assert_eq!(again.warnings.len(), config.warnings.len());
        let (a, b) = (&again.server, &config.server);
        assert_eq!(a.listen, b.listen);
        assert_eq!(a.max_body_bytes, b.max_body_bytes);
        assert_eq!(a.header_read_timeout, b.header_read_timeout);
        assert_eq!(a.body_read_timeout, b.body_read_timeout);
        assert_eq!(a.idle_timeout, b.idle_timeout);
        assert_eq!(a.max_connections, b.max_connections);
        assert_eq!(a.max_answer_bytes, b.max_answer_bytes);
        assert_eq!(a.max_event_bytes, b.max_event_bytes);
        assert_eq!(a.cors_origins, b.cors_origins);
        assert_eq!(a.admin_key_env, b.admin_key_env);
        assert_eq!(a.admin_key, b.admin_key);
        let keys = |s: &Server| -> Vec<_> {
            s.keys
                .iter()
                .map(|k| (k.name.clone(), k.key_env.clone(), k.rpm, k.routes.clone()))
                .collect()
        };
        assert_eq!(keys(a), keys(b));
    }
}

#[test]
fn show_hides_secrets_and_says_whether_they_are_set() {
    let text = format!(
        "[server]\nadmin_key_env = \"ADMIN\"\n\
         [providers.x]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key_env = \"X_KEY\"\n\
         headers = {{ Authorization = \"Bearer sk-header\", \"X-Title\" = \"t\" }}\n{MINIMAL}"
    );
    let env = |var: &str| (var == "X_KEY").then(|| "sk-env".to_string());
    let shown = parse_ok(&text, &env).to_toml();
    assert!(
        !shown.contains("sk-env") && !shown.contains("sk-header"),
        "{shown}"
    );
    assert!(shown.contains("X-Title = \"t\""), "{shown}");
    let line = |var: &str| shown.lines().find(|l| l.contains(var)).unwrap();
    assert!(line("X_KEY").ends_with("# set (value hidden)"), "{shown}");
    assert!(line("ADMIN").ends_with("# not set"), "{shown}");
}

#[test]
fn wrong_shapes_are_reported_once_each() {
    let text = "providers = { a = 1 }\n[routes.r]\ntargets = [1, { provider = \"a\", model = \"m\", colour = 2 }]\n";
    let errors = parse_err(text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "`a` in [providers] must be a table, not an integer"
    );
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("write it as a [providers.a] section")
    );
    let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.contains(&"entry 1 of `targets` in [routes.r] must be a table, not an integer")
    );
    assert!(messages.contains(&"unknown key `colour` in target 2 of [routes.r]"));
    assert!(messages.contains(&"unknown provider `a` in target 2 of [routes.r]"));
}

mod cluster;
mod limits;
