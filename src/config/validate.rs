//! From the raw document to a [`Config`]: defaults, environment variables,
//! and the checks that need more than one value (a target's provider must be
//! defined, a mock-only key on an openai provider, backoff_base against
//! backoff_max, ...). Like the reading, every check reports into the
//! [`Report`] and carries on, so one run finds every mistake.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{Place, Report};
use super::raw::{
    RawAgent, RawClientKey, RawCluster, RawCompression, RawConfig, RawDefaults, RawMock,
    RawProvider, RawRoute, RawServer, RawStore, RawTarget, TARGETS_EXAMPLE,
};
use super::read::{closest, Field};
use super::{
    Agent, ClientKey, Cluster, Compression, CompressionSettings, Config, Defaults, MockSettings,
    Provider, ProviderKind, Route, Secret, Server, Store, Strategy, Target, DEFAULT_LISTEN,
};

const DEFAULT_MAX_BODY_BYTES: usize = 10_485_760;
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
const DEFAULT_MAX_ANSWER_BYTES: usize = 33_554_432;
const DEFAULT_MAX_EVENT_BYTES: usize = 8_388_608;
const DEFAULT_WORKSPACE: &str = "./workspace";
const DEFAULT_STORE_PATH: &str = "./data/hermes.db";
const DEFAULT_MAX_RESPONSES: u32 = 10_000;
const DEFAULT_STORE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_CLUSTER_PREFIX: &str = "hermes";
const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_MAX_STEPS: u32 = 12;
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_TOOLS: &[&str] = &[
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "web_fetch",
    "memory",
];
/// Every tool the agent loop knows (the tools module runs these); "terminal"
/// is opt-in, so not a default.
pub const KNOWN_TOOLS: &[&str] = &[
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "web_fetch",
    "memory",
    "terminal",
];

/// The value of an optional field, if it was given and valid.
fn get<T>(field: Option<Field<T>>) -> Option<T> {
    field.map(|f| f.value)
}

/// Refuses to serve without client auth anywhere but loopback. Public so
/// that a `--listen` / `HERMES_LISTEN` override, applied after parsing, can be
/// held to the same rule; the error reads "message (hint: ...)".
pub fn check_listen(listen: &SocketAddr, keys: &[ClientKey]) -> Result<(), String> {
    match open_listen_problem(listen, keys) {
        Some((message, hint)) => Err(format!("{message} (hint: {hint})")),
        None => Ok(()),
    }
}

/// With no client keys there is no auth, which is acceptable only on loopback.
fn open_listen_problem(listen: &SocketAddr, keys: &[ClientKey]) -> Option<(String, String)> {
    if !keys.is_empty() || listen.ip().is_loopback() {
        return None;
    }
    let message = "no [[server.keys]] configured: refusing to listen on a non-loopback \
                   address without client auth";
    let hint = format!(
        "add a [[server.keys]] entry (name, key_env), or listen on a loopback address \
         such as \"{DEFAULT_LISTEN}\""
    );
    Some((message.to_string(), hint))
}

/// Hint for a name that refers to nothing: the closest defined one, or all.
fn reference_hint(name: &str, defined: &[&str], what: &str, otherwise: &str) -> String {
    if let Some(near) = closest(name, defined) {
        return format!("did you mean `{near}`?");
    }
    if defined.is_empty() {
        return format!("no {what} are defined; {otherwise}");
    }
    format!("defined {what}: {}; {otherwise}", defined.join(", "))
}

/// Builds the config from what was read, reporting what does not hold.
pub(super) struct Checker<'r, 'a> {
    pub cx: &'r mut Report<'a>,
    pub env: &'r dyn Fn(&str) -> Option<String>,
    /// Every name under [providers] and [routes], even broken ones, so that a
    /// broken provider does not also turn every target naming it into an error.
    provider_names: Vec<String>,
    route_names: Vec<String>,
}

impl<'r, 'a> Checker<'r, 'a> {
    pub fn new(cx: &'r mut Report<'a>, env: &'r dyn Fn(&str) -> Option<String>) -> Self {
        Checker {
            cx,
            env,
            provider_names: Vec::new(),
            route_names: Vec::new(),
        }
    }

    pub fn config(&mut self, raw: RawConfig, source: &str) -> Config {
        let providers = get(raw.providers).unwrap_or_default().0;
        let routes = get(raw.routes).unwrap_or_default().0;
        self.provider_names = providers.iter().map(|(name, _)| name.clone()).collect();
        self.route_names = routes.iter().map(|(name, _)| name.clone()).collect();
        Config {
            source: source.to_string(),
            server: self.server(get(raw.server).unwrap_or_default()),
            defaults: self.defaults(get(raw.defaults).unwrap_or_default()),
            providers: providers
                .into_iter()
                .filter_map(|(name, p)| self.provider(name, p))
                .collect(),
            routes: routes
                .into_iter()
                .map(|(name, r)| self.route(name, r))
                .collect(),
            agent: self.agent(get(raw.agent).unwrap_or_default()),
            store: self.store(get(raw.store).unwrap_or_default()),
            compression: self.compression(get(raw.compression).unwrap_or_default()),
            cluster: get(raw.cluster).and_then(|c| self.cluster(c)),
            warnings: Vec::new(),
        }
    }

    /// A secret from the environment; an empty variable counts as unset, so
    /// that `export KEY=` cannot turn into an empty (matching-anything) key.
    fn read_env(&self, var: &str) -> Option<Secret> {
        (self.env)(var)
            .filter(|value| !value.is_empty())
            .map(Secret::new)
    }

    fn names(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    // ----- [server] -----

    fn server(&mut self, s: RawServer) -> Server {
        let (listen, listen_line) = match &s.listen {
            Some(field) => (field.value, field.line),
            None => (DEFAULT_LISTEN.parse().expect("valid default"), s.at.line),
        };
        let admin_key_env = get(s.admin_key_env).map(|v| v.0);
        // Unset = admin endpoints off, which is a normal setup, not a warning.
        let admin_key = admin_key_env.as_deref().and_then(|var| self.read_env(var));
        let entries = get(s.keys).map_or_else(Vec::new, |e| e.0);
        let mut keys: Vec<ClientKey> = Vec::new();
        for entry in entries {
            if let Some(key) = self.client_key(entry, &keys) {
                keys.push(key);
            }
        }
        // A listen that did not parse is already reported; the default is loopback.
        if s.listen.is_some() {
            if let Some((message, hint)) = open_listen_problem(&listen, &keys) {
                self.cx.error(listen_line, message, Some(hint));
            }
        }
        Server {
            listen,
            max_body_bytes: get(s.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES),
            header_read_timeout: get(s.header_read_timeout)
                .map_or(DEFAULT_HEADER_READ_TIMEOUT, |v| v.0),
            body_read_timeout: get(s.body_read_timeout).map_or(DEFAULT_BODY_READ_TIMEOUT, |v| v.0),
            idle_timeout: get(s.idle_timeout).map_or(DEFAULT_IDLE_TIMEOUT, |v| v.0),
            max_connections: get(s.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_answer_bytes: get(s.max_answer_bytes).unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
            max_event_bytes: get(s.max_event_bytes).unwrap_or(DEFAULT_MAX_EVENT_BYTES),
            cors_origins: get(s.cors_origins)
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.value)
                .collect(),
            admin_key_env,
            admin_key,
            keys,
        }
    }

    fn client_key(&mut self, k: RawClientKey, earlier: &[ClientKey]) -> Option<ClientKey> {
        let routes = k.routes.map(|f| self.route_allowlist(f.value, &k.at));
        let (Some(name), Some(key_env)) = (&k.name, &k.key_env) else {
            return None;
        };
        let name_value = &name.value.0;
        if earlier.iter().any(|e| &e.name == name_value) {
            let message = format!("duplicate client key name `{name_value}`");
            self.cx.error(name.line, message, None);
            return None;
        }
        let key = self.read_env(&key_env.value.0);
        if key.is_none() {
            self.cx.warn(
                key_env.line,
                format_args!(
                    "client key `{name_value}` cannot be used: {} is not set",
                    key_env.value.0
                ),
            );
        }
        Some(ClientKey {
            name: name.value.0.clone(),
            key_env: key_env.value.0.clone(),
            key,
            rpm: get(k.rpm),
            routes,
        })
    }

    /// `routes = [...]` of a client key: "*", names of defined routes, or
    /// "provider/*" for direct `provider/model` addressing.
    fn route_allowlist(&mut self, routes: Vec<Field<String>>, at: &Place) -> Vec<String> {
        let route_names = Self::names(&self.route_names);
        for route in &routes {
            let name = route.value.as_str();
            let direct = name
                .strip_suffix("/*")
                .is_some_and(|p| self.provider_names.iter().any(|n| n == p));
            if name != "*" && !direct && !route_names.contains(&name) {
                let message = format!("unknown route `{name}` in `{}` {}", route.key, at.text);
                let hint = reference_hint(
                    name,
                    &route_names,
                    "routes",
                    "\"*\" allows every route, \"<provider>/*\" one provider's models",
                );
                self.cx.error(route.line, message, Some(hint));
            }
        }
        routes.into_iter().map(|f| f.value).collect()
    }

    // ----- [defaults] -----

    fn defaults(&mut self, d: RawDefaults) -> Defaults {
        let base = Defaults::default();
        let backoff_line = d
            .backoff_base
            .as_ref()
            .or(d.backoff_max.as_ref())
            .map_or(d.at.line, |f| f.line);
        let defaults = Defaults {
            request_timeout: get(d.request_timeout).map_or(base.request_timeout, |v| v.0),
            connect_timeout: get(d.connect_timeout).map_or(base.connect_timeout, |v| v.0),
            first_byte_timeout: get(d.first_byte_timeout).map_or(base.first_byte_timeout, |v| v.0),
            max_attempts: get(d.max_attempts).unwrap_or(base.max_attempts),
            backoff_base: get(d.backoff_base).unwrap_or(base.backoff_base),
            backoff_max: get(d.backoff_max).unwrap_or(base.backoff_max),
            max_retry_wait: get(d.max_retry_wait).unwrap_or(base.max_retry_wait),
            cooldown: get(d.cooldown).unwrap_or(base.cooldown),
            max_cooldown: d
                .max_cooldown
                .as_ref()
                .map_or(base.max_cooldown, |f| f.value.0),
        };
        if defaults.cooldown > defaults.max_cooldown {
            let line = d.max_cooldown.as_ref().map_or(d.at.line, |f| f.line);
            let message = format!(
                "`cooldown` ({}) is longer than `max_cooldown` ({}) {}",
                humantime::format_duration(defaults.cooldown),
                humantime::format_duration(defaults.max_cooldown),
                d.at.text
            );
            let hint = "max_cooldown caps every cooldown, the default one too".to_string();
            self.cx.error(line, message, Some(hint));
        }
        if defaults.backoff_base > defaults.backoff_max {
            let message = format!(
                "`backoff_base` ({}) is longer than `backoff_max` ({}) {}",
                humantime::format_duration(defaults.backoff_base),
                humantime::format_duration(defaults.backoff_max),
                d.at.text
            );
            let hint = "backoff grows from backoff_base up to backoff_max".to_string();
            self.cx.error(backoff_line, message, Some(hint));
        }
        defaults
    }

    // ----- [providers.<name>] -----

    fn provider(&mut self, name: String, p: RawProvider) -> Option<Provider> {
        self.check_name(&name, &p.at, "provider");
        let kind = p.kind.as_ref().map(|f| f.value);
        let base_url = self.base_url(&p, kind);
        let mock = self.mock_settings(p.mock, kind);
        let headers = self.headers(p.headers, &p.at);
        let api_key_env = p.api_key_env.as_ref().map(|f| f.value.0.clone());

        // A missing key disables the provider rather than failing the file, so
        // the embedded config runs with no keys set (the demo answers).
        let (api_key, enabled) = match &p.api_key_env {
            None => (None, true),
            Some(var) => match self.read_env(&var.value.0) {
                Some(secret) => (Some(secret), true),
                None => {
                    let message = format!("provider `{name}` disabled: {} is not set", var.value.0);
                    self.cx.warn(var.line, message);
                    (None, false)
                }
            },
        };
        Some(Provider {
            name,
            kind: kind?,
            base_url,
            api_key_env,
            api_key,
            enabled,
            rpm: get(p.rpm),
            tpm: get(p.tpm),
            headers,
            mock,
        })
    }

    /// Route and provider names become parts of model ids ("provider/model"),
    /// which split on the first '/'.
    fn check_name(&mut self, name: &str, at: &Place, what: &str) {
        if name.trim().is_empty() {
            let message = format!("a {what} name must not be empty");
            self.cx.error(at.line, message, None);
        } else if name.contains('/') {
            let message = format!("{what} name `{name}` must not contain '/'");
            let hint = "clients address one provider's model as \"provider/model\", so '/' \
                        would be ambiguous"
                .to_string();
            self.cx.error(at.line, message, Some(hint));
        }
    }

    fn base_url(&mut self, p: &RawProvider, kind: Option<ProviderKind>) -> Option<String> {
        let example = "\"https://api.openai.com/v1\"";
        match (kind, &p.base_url) {
            (Some(ProviderKind::Mock), Some(url)) => {
                let message = format!(
                    "`{}` is not allowed {}: kind = \"mock\" has no upstream",
                    url.key, p.at.text
                );
                let hint = format!("remove {}", url.key);
                self.cx.error(url.line, message, Some(hint));
                None
            }
            (Some(ProviderKind::Mock), None) => None,
            (Some(_), None) => {
                self.cx.missing(&p.at, "base_url", example);
                None
            }
            (None, None) => None,
            (_, Some(url)) => {
                let text = url.value.0.trim();
                let rest = text
                    .strip_prefix("https://")
                    .or_else(|| text.strip_prefix("http://"));
                if rest.is_none_or(|host| host.trim_end_matches('/').is_empty()) {
                    let message = format!(
                        "`{}` {} must start with http:// or https://, not \"{text}\"",
                        url.key, p.at.text
                    );
                    let hint = format!("e.g. {} = {example}", url.key);
                    self.cx.error(url.line, message, Some(hint));
                    return None;
                }
                // Paths are appended as "{base_url}/chat/completions".
                Some(text.trim_end_matches('/').to_string())
            }
        }
    }

    /// Extra upstream headers, in file order. A name or value that `http`
    /// would refuse would otherwise fail every request at run time.
    fn headers(
        &mut self,
        headers: Option<Field<super::read::Map<String>>>,
        at: &Place,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value, line) in get(headers).unwrap_or_default().0 {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                let message = format!("`{name}` {} is not a valid HTTP header name", at.text);
                self.cx.error(line, message, None);
            } else if http::HeaderValue::from_str(&value).is_err() {
                let message = format!(
                    "header `{name}` {} must not contain line breaks or control characters",
                    at.text
                );
                self.cx.error(line, message, None);
            } else {
                out.push((name, value));
            }
        }
        out
    }

    fn mock_settings(&mut self, m: RawMock, kind: Option<ProviderKind>) -> MockSettings {
        let d = MockSettings::default();
        if kind.is_some_and(|k| k != ProviderKind::Mock) {
            // Silently ignoring them would hide a kind = "..." mistake.
            for (key, line) in m.present() {
                let message = format!(
                    "`{key}` {} only applies to kind = \"mock\" providers",
                    m.at.text
                );
                self.cx.error(line, message, Some(format!("remove {key}")));
            }
            return d;
        }
        MockSettings {
            first_byte_delay: get(m.first_byte_delay).unwrap_or(d.first_byte_delay),
            chunk_delay: get(m.chunk_delay).unwrap_or(d.chunk_delay),
            rate_limit_ratio: get(m.rate_limit_ratio).map_or(d.rate_limit_ratio, |r| r.0),
            context_error_ratio: get(m.context_error_ratio).map_or(d.context_error_ratio, |r| r.0),
        }
    }

    // ----- [routes.<name>] -----

    fn route(&mut self, name: String, r: RawRoute) -> Route {
        self.check_name(&name, &r.at, "route");
        let targets = match &r.targets {
            Some(targets) if targets.value.0.is_empty() => {
                let message = format!(
                    "`{}` {} must list at least one target",
                    targets.key, r.at.text
                );
                let hint = format!("e.g. {} = {TARGETS_EXAMPLE}", targets.key);
                self.cx.error(targets.line, message, Some(hint));
                Vec::new()
            }
            _ => get(r.targets).map_or_else(Vec::new, |t| t.0),
        };
        Route {
            name,
            strategy: get(r.strategy).unwrap_or(Strategy::Fallback),
            compression: get(r.compression).is_none_or(|c| c.0),
            agent: get(r.agent).unwrap_or(false),
            resume: get(r.resume).unwrap_or(false),
            targets: targets.into_iter().filter_map(|t| self.target(t)).collect(),
        }
    }

    fn target(&mut self, t: RawTarget) -> Option<Target> {
        if let Some(provider) = &t.provider {
            let name = provider.value.0.as_str();
            let defined = Self::names(&self.provider_names);
            if !defined.contains(&name) {
                let message = format!("unknown provider `{name}` {}", t.at.text);
                let hint = reference_hint(
                    name,
                    &defined,
                    "providers",
                    "add a [providers.<name>] table",
                );
                self.cx.error(provider.line, message, Some(hint));
            }
        }
        Some(Target {
            provider: get(t.provider)?.0,
            model: get(t.model)?.0,
            context_window: get(t.context_window),
            weight: get(t.weight).unwrap_or(1),
        })
    }

    // ----- [agent], [store], [compression] -----

    fn agent(&mut self, a: RawAgent) -> Agent {
        let tools = match a.tools {
            Some(tools) => self.known_tools(tools.value, &a.at),
            None => DEFAULT_TOOLS.iter().map(|t| t.to_string()).collect(),
        };
        let terminal_allow = get(a.terminal_allow).unwrap_or_default();
        for program in &terminal_allow {
            if program.value.trim().is_empty() {
                let message = format!(
                    "`{}` {} must not contain empty names",
                    program.key, a.at.text
                );
                self.cx.error(program.line, message, None);
            }
        }
        Agent {
            workspace: get(a.workspace).map_or_else(|| DEFAULT_WORKSPACE.to_string(), |w| w.0),
            tools,
            terminal_allow: terminal_allow.into_iter().map(|f| f.value).collect(),
            max_steps: get(a.max_steps).unwrap_or(DEFAULT_MAX_STEPS),
            tool_timeout: get(a.tool_timeout).map_or(DEFAULT_TOOL_TIMEOUT, |t| t.0),
            web_allow_private: get(a.web_allow_private).unwrap_or(false),
        }
    }

    /// A misspelt tool name would otherwise just never be offered to the model.
    fn known_tools(&mut self, tools: Vec<Field<String>>, at: &Place) -> Vec<String> {
        for tool in &tools {
            if !KNOWN_TOOLS.contains(&tool.value.as_str()) {
                let message = format!(
                    "unknown tool `{}` in `{}` {}",
                    tool.value, tool.key, at.text
                );
                let hint = match closest(&tool.value, KNOWN_TOOLS) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known tools: {}", KNOWN_TOOLS.join(", ")),
                };
                self.cx.error(tool.line, message, Some(hint));
            }
        }
        tools.into_iter().map(|f| f.value).collect()
    }

    fn store(&mut self, s: RawStore) -> Store {
        Store {
            path: get(s.path).map_or_else(|| DEFAULT_STORE_PATH.to_string(), |p| p.0),
            max_responses: get(s.max_responses).unwrap_or(DEFAULT_MAX_RESPONSES),
            ttl: get(s.ttl).map_or(DEFAULT_STORE_TTL, |t| t.0),
        }
    }

    fn cluster(&mut self, c: RawCluster) -> Option<Cluster> {
        let var = c.redis_url_env.as_ref()?;
        let redis_url = self.read_env(&var.value.0);
        if redis_url.is_none() {
            let message = format!(
                "[cluster] is off: {} is not set, so this replica keeps its state to itself",
                var.value.0
            );
            self.cx.warn(var.line, message);
        }
        Some(Cluster {
            redis_url_env: var.value.0.clone(),
            redis_url,
            prefix: get(c.prefix).map_or_else(|| DEFAULT_CLUSTER_PREFIX.to_string(), |p| p.0),
            timeout: get(c.timeout).map_or(DEFAULT_CLUSTER_TIMEOUT, |t| t.0),
        })
    }

    fn compression(&mut self, c: RawCompression) -> Compression {
        let defaults = CompressionSettings::default();
        if let Some(summarizer) = &c.summarizer {
            let route = summarizer.value.0.as_str();
            let defined = Self::names(&self.route_names);
            if !defined.contains(&route) {
                let hint = reference_hint(
                    route,
                    &defined,
                    "routes",
                    "leave it out to summarize with the request's own route",
                );
                let message = format!(
                    "`{}` names route `{route}`, which is not defined",
                    summarizer.key
                );
                self.cx.error(summarizer.line, message, Some(hint));
            }
        }
        // 0 would summarize to nothing, 1 would compress again on every turn.
        if let Some(ratio) = c
            .target_ratio
            .as_ref()
            .filter(|r| r.value.0 <= 0.0 || r.value.0 >= 1.0)
        {
            let hint = "e.g. 0.5: a summarized conversation fills half the window".to_string();
            let message = format!(
                "`{}` {} must be between 0 and 1, exclusive",
                ratio.key, c.at.text
            );
            self.cx.error(ratio.line, message, Some(hint));
        }
        let target_ratio = get(c.target_ratio).map_or(defaults.target_ratio, |r| r.0);
        Compression {
            summarizer: get(c.summarizer).map(|s| s.0),
            settings: CompressionSettings {
                keep_tool_outputs: get(c.keep_tool_outputs).unwrap_or(defaults.keep_tool_outputs),
                recent_tokens: get(c.recent_tokens).unwrap_or(defaults.recent_tokens),
                target_ratio,
            },
        }
    }
}
