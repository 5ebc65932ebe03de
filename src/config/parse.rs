//! Reads routes.toml into a [`Config`].
//!
//! The document is walked by hand instead of through serde: serde stops at the
//! first mistake, while `hermes-proxy check` promises every error at once, each
//! with the line of the key or value at fault and, where one can be guessed, a
//! fix. `toml_edit::ImDocument` keeps the byte span of every key and value,
//! which is what makes the line numbers possible.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::{
    Agent, ClientKey, Compression, Config, Defaults, MockSettings, Provider, ProviderKind, Route,
    Secret, Server, Store, Strategy, Target,
};

/// One mistake in the file, printed as `path:line: message (hint: ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

const DURATION_HINT: &str = r#"write durations like "250ms", "30s" or "5m""#;
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY_BYTES: usize = 10_485_760;
const DEFAULT_WORKSPACE: &str = "./workspace";
const DEFAULT_STORE_PATH: &str = "./data/hermes.db";
const DEFAULT_MAX_STEPS: u32 = 12;
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_TOOLS: &[&str] = &[
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "web_fetch",
    "memory",
];
/// Every tool the agent loop knows; "terminal" is opt-in, so not a default.
const KNOWN_TOOLS: &[&str] = &[
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "web_fetch",
    "memory",
    "terminal",
];

const TOP_KEYS: &[&str] = &[
    "server",
    "defaults",
    "providers",
    "routes",
    "agent",
    "store",
    "compression",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "max_body_bytes",
    "cors_origins",
    "admin_key_env",
    "keys",
];
const CLIENT_KEY_KEYS: &[&str] = &["name", "key_env", "rpm", "routes"];
const DEFAULTS_KEYS: &[&str] = &[
    "request_timeout",
    "connect_timeout",
    "first_byte_timeout",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "max_retry_wait",
    "cooldown",
];
const MOCK_KEYS: &[&str] = &[
    "first_byte_delay",
    "chunk_delay",
    "rate_limit_ratio",
    "context_error_ratio",
];
const PROVIDER_KEYS: &[&str] = &[
    "kind",
    "base_url",
    "api_key_env",
    "rpm",
    "tpm",
    "headers",
    "first_byte_delay",
    "chunk_delay",
    "rate_limit_ratio",
    "context_error_ratio",
];
const ROUTE_KEYS: &[&str] = &["strategy", "compression", "agent", "resume", "targets"];
const TARGET_KEYS: &[&str] = &["provider", "model", "context_window", "weight"];
const AGENT_KEYS: &[&str] = &[
    "workspace",
    "tools",
    "terminal_allow",
    "max_steps",
    "tool_timeout",
    "web_allow_private",
];
const STORE_KEYS: &[&str] = &["path"];
const COMPRESSION_KEYS: &[&str] = &[
    "summarizer",
    "recent_tokens",
    "target_ratio",
    "keep_tool_outputs",
];

/// Parses and validates routes.toml. `path` is only used in messages (pass
/// "<embedded>" for the built-in file); `env` reads the variables the file
/// names, so tests and reloads need not touch the process environment.
pub fn parse(
    text: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    let lines = LineIndex::new(text);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(err) => return Err(vec![syntax_error(&err, path, &lines)]),
    };
    let mut cx = Checker {
        path,
        lines,
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
        provider_names: Vec::new(),
    };
    let root = Section {
        table: Some(doc.as_table()),
        place: "at the top level".to_string(),
        line: 1,
    };
    cx.known_keys(&root, TOP_KEYS);

    // Names are gathered before anything is validated so that references (a
    // target's provider, a client key's route allowlist) can be checked
    // whatever order the tables come in, and so that one broken provider does
    // not also turn every target naming it into an error.
    let providers_section = cx.section(&root, "providers", "in [providers]".to_string());
    let provider_entries = cx.entries(&providers_section, "providers");
    let provider_names: Vec<&str> = provider_entries.iter().map(|(name, _)| *name).collect();
    cx.provider_names = provider_names.iter().map(|n| n.to_string()).collect();
    let routes_section = cx.section(&root, "routes", "in [routes]".to_string());
    let route_entries = cx.entries(&routes_section, "routes");
    let route_names: Vec<&str> = route_entries.iter().map(|(name, _)| *name).collect();

    let server_section = cx.section(&root, "server", "in [server]".to_string());
    let server = cx.server(&server_section, &route_names);
    let defaults_section = cx.section(&root, "defaults", "in [defaults]".to_string());
    let defaults = cx.defaults(&defaults_section);
    let providers: Vec<Provider> = provider_entries
        .iter()
        .filter_map(|(name, section)| cx.provider(name, section))
        .collect();
    let routes: Vec<Route> = route_entries
        .iter()
        .map(|(name, section)| cx.route(name, section, &provider_names))
        .collect();
    let agent_section = cx.section(&root, "agent", "in [agent]".to_string());
    let agent = cx.agent(&agent_section);
    let store_section = cx.section(&root, "store", "in [store]".to_string());
    let store = cx.store(&store_section);
    let compression_section = cx.section(&root, "compression", "in [compression]".to_string());
    let compression = cx.compression(&compression_section, &route_names);

    match server {
        Some(server) if cx.errors.is_empty() => Ok(Config {
            source: path.to_string(),
            server,
            defaults,
            providers,
            routes,
            agent,
            store,
            compression,
            warnings: cx.warnings,
        }),
        _ => {
            // Checks run table by table; the user reads the file top to bottom.
            cx.errors.sort_by_key(|e| e.line);
            Err(cx.errors)
        }
    }
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

fn syntax_error(err: &toml_edit::TomlError, path: &str, lines: &LineIndex) -> ConfigError {
    // The parser's message spans several lines ("invalid string\nexpected ...");
    // `path:line: message` output wants one.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError {
        path: path.to_string(),
        line: err.span().map_or(1, |span| lines.line(span.start)),
        message: format!("invalid TOML: {message}"),
        hint: None,
    }
}

/// Byte offset -> 1-based line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// A table (or inline table) being read. `table` is None when it is absent
/// (every key then takes its default) or was not a table (already reported).
struct Section<'d> {
    table: Option<&'d dyn TableLike>,
    /// Where it is, for messages: "in [server]", "in target 2 of [routes.x]".
    place: String,
    /// Its first line: where errors about missing keys point.
    line: usize,
}

impl Section<'_> {
    fn has(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }
}

/// An element of an array of tables: the table (or, if it is something else,
/// what it is) and its span.
type ListElement<'d> = (
    Result<&'d dyn TableLike, &'static str>,
    Option<Range<usize>>,
);

/// One key's value inside a section.
struct Field<'d> {
    key: &'d str,
    item: &'d Item,
    /// The value's line (its key's, when the value has no span).
    line: usize,
}

/// Walks the document, collecting errors and warnings instead of stopping.
struct Checker<'a> {
    path: &'a str,
    lines: LineIndex,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Defined provider names, for `provider/*` in key allowlists.
    provider_names: Vec<String>,
}

impl<'a> Checker<'a> {
    // ----- reporting -----

    fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|span| self.lines.line(span.start))
    }

    fn error(&mut self, line: usize, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(ConfigError {
            path: self.path.to_string(),
            line,
            message: message.into(),
            hint,
        });
    }

    fn warn(&mut self, line: usize, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{}: {}", self.path, line, message));
    }

    fn wrong_type(
        &mut self,
        section: &Section,
        field: &Field,
        expected: &str,
        hint: Option<String>,
    ) {
        let message = format!(
            "`{}` {} must be {expected}, not {}",
            field.key,
            section.place,
            describe(field.item)
        );
        self.error(field.line, message, hint);
    }

    fn missing(&mut self, section: &Section, key: &str, hint: Option<String>) {
        let message = format!("missing required key `{key}` {}", section.place);
        self.error(section.line, message, hint);
    }

    // ----- structure -----

    fn field<'d>(&self, section: &Section<'d>, key: &str) -> Option<Field<'d>> {
        let (k, item) = section.table?.get_key_value(key)?;
        let line = self
            .line_of(item.span())
            .or_else(|| self.line_of(k.span()))
            .unwrap_or(section.line);
        Some(Field {
            key: k.get(),
            item,
            line,
        })
    }

    /// Typos must not pass silently: every key outside `valid` is an error.
    fn known_keys(&mut self, section: &Section, valid: &[&str]) {
        let Some(table) = section.table else { return };
        for (key, item) in table.iter() {
            if valid.contains(&key) {
                continue;
            }
            let line = self
                .line_of(table.key(key).and_then(|k| k.span()))
                .or_else(|| self.line_of(item.span()))
                .unwrap_or(section.line);
            let hint = match closest(key, valid) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("valid keys here: {}", valid.join(", ")),
            };
            let message = format!("unknown key `{key}` {}", section.place);
            self.error(line, message, Some(hint));
        }
    }

    /// The table under `key`; reports it if it is something else.
    fn section<'d>(&mut self, parent: &Section<'d>, key: &str, place: String) -> Section<'d> {
        let Some(field) = self.field(parent, key) else {
            return Section {
                table: None,
                place,
                line: parent.line,
            };
        };
        let table = field.item.as_table_like();
        if table.is_none() {
            self.wrong_type(parent, &field, "a table", None);
        }
        Section {
            table,
            place,
            line: field.line,
        }
    }

    /// The named sub-tables of [providers] or [routes], in file order.
    fn entries<'d>(&mut self, section: &Section<'d>, prefix: &str) -> Vec<(&'d str, Section<'d>)> {
        let Some(table) = section.table else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for (name, item) in table.iter() {
            let line = self
                .line_of(item.span())
                .or_else(|| self.line_of(table.key(name).and_then(|k| k.span())))
                .unwrap_or(section.line);
            let field = Field {
                key: name,
                item,
                line,
            };
            match item.as_table_like() {
                Some(sub) => entries.push((
                    name,
                    Section {
                        table: Some(sub),
                        place: format!("in [{prefix}.{name}]"),
                        line,
                    },
                )),
                None => self.wrong_type(
                    section,
                    &field,
                    "a table",
                    Some(format!("write it as a [{prefix}.{name}] section")),
                ),
            }
        }
        entries
    }

    /// An array of tables under `key`, written either as `[[a.b]]` sections
    /// or as an array of inline tables. None when absent or not an array.
    fn table_list<'d>(
        &mut self,
        section: &Section<'d>,
        key: &str,
        place_of: impl Fn(usize) -> String,
    ) -> Option<Vec<Section<'d>>> {
        let field = self.field(section, key)?;
        let elements: Vec<ListElement<'d>> = match field.item {
            Item::ArrayOfTables(array) => array
                .iter()
                .map(|t| (Ok(t as &dyn TableLike), t.span()))
                .collect(),
            Item::Value(Value::Array(array)) => array
                .iter()
                .map(|v| {
                    let table = v.as_inline_table().map(|t| t as &dyn TableLike);
                    (table.ok_or_else(|| describe_value(v)), v.span())
                })
                .collect(),
            _ => {
                self.wrong_type(section, &field, "an array of tables", None);
                return None;
            }
        };
        let mut sections = Vec::new();
        for (i, (table, span)) in elements.into_iter().enumerate() {
            let line = self.line_of(span).unwrap_or(field.line);
            let place = place_of(i + 1);
            match table {
                Ok(table) => sections.push(Section {
                    table: Some(table),
                    place,
                    line,
                }),
                Err(found) => self.error(
                    line,
                    format!(
                        "entry {} of `{key}` {} must be an inline table, not {found}",
                        i + 1,
                        section.place
                    ),
                    None,
                ),
            }
        }
        Some(sections)
    }

    // ----- typed values -----

    fn string(&mut self, section: &Section, key: &str) -> Option<String> {
        let field = self.field(section, key)?;
        match field.item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(section, &field, "a string", None);
                None
            }
        }
    }

    fn nonempty_string(&mut self, section: &Section, key: &str) -> Option<String> {
        let value = self.string(section, key)?;
        if value.trim().is_empty() {
            let line = self.field(section, key).map_or(section.line, |f| f.line);
            self.error(
                line,
                format!("`{key}` {} must not be empty", section.place),
                None,
            );
            return None;
        }
        Some(value)
    }

    fn boolean(&mut self, section: &Section, key: &str) -> Option<bool> {
        let field = self.field(section, key)?;
        match field.item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(section, &field, "true or false", None);
                None
            }
        }
    }

    /// A positive integer that fits `T`.
    fn positive<T: TryFrom<i64>>(&mut self, section: &Section, key: &str) -> Option<T> {
        let field = self.field(section, key)?;
        let Some(n) = field.item.as_integer() else {
            // `rpm = "200"` is a common slip; say how to fix it.
            let quoted_number = field
                .item
                .as_str()
                .is_some_and(|s| s.replace('_', "").parse::<i64>().is_ok());
            let hint = quoted_number.then(|| "remove the quotes".to_string());
            self.wrong_type(section, &field, "a positive integer", hint);
            return None;
        };
        if n <= 0 {
            let message = format!(
                "`{key}` {} must be a positive integer, not {n}",
                section.place
            );
            self.error(field.line, message, None);
            return None;
        }
        match T::try_from(n) {
            Ok(value) => Some(value),
            Err(_) => {
                let message = format!("`{key}` {} is too large: {n}", section.place);
                self.error(field.line, message, None);
                None
            }
        }
    }

    fn duration(&mut self, section: &Section, key: &str) -> Option<Duration> {
        let field = self.field(section, key)?;
        let Some(text) = field.item.as_str() else {
            let hint = Some(DURATION_HINT.to_string());
            self.wrong_type(section, &field, "a duration string", hint);
            return None;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(duration) => Some(duration),
            Err(err) => {
                let message = format!(
                    "`{key}` {} is not a valid duration: \"{text}\" ({err})",
                    section.place
                );
                self.error(field.line, message, Some(DURATION_HINT.to_string()));
                None
            }
        }
    }

    /// A duration that must be longer than zero (a zero timeout fails every request).
    fn nonzero_duration(&mut self, section: &Section, key: &str) -> Option<Duration> {
        let duration = self.duration(section, key)?;
        if duration.is_zero() {
            let line = self.field(section, key).map_or(section.line, |f| f.line);
            let message = format!("`{key}` {} must be longer than zero", section.place);
            self.error(line, message, Some(DURATION_HINT.to_string()));
            return None;
        }
        Some(duration)
    }

    /// A fraction in 0..=1, written as a float or as 0 / 1.
    fn ratio(&mut self, section: &Section, key: &str) -> Option<f64> {
        let field = self.field(section, key)?;
        let value = match field.item.as_value() {
            Some(Value::Float(f)) => *f.value(),
            Some(Value::Integer(i)) => *i.value() as f64,
            _ => {
                self.wrong_type(section, &field, "a number between 0 and 1", None);
                return None;
            }
        };
        if !(0.0..=1.0).contains(&value) {
            let message = format!(
                "`{key}` {} must be between 0 and 1, not {value}",
                section.place
            );
            self.error(
                field.line,
                message,
                Some("e.g. 0.1 means 10% of requests".into()),
            );
            return None;
        }
        Some(value)
    }

    /// An array of strings, each with its line (for errors about one entry).
    /// Entries that are not strings are reported and left out, so the others
    /// still get checked.
    fn strings(&mut self, section: &Section, key: &str) -> Option<Vec<(String, usize)>> {
        let field = self.field(section, key)?;
        let Some(array) = field.item.as_array() else {
            self.wrong_type(section, &field, "an array of strings", None);
            return None;
        };
        let mut out = Vec::new();
        for value in array.iter() {
            let line = self.line_of(value.span()).unwrap_or(field.line);
            match value.as_str() {
                Some(s) => out.push((s.to_string(), line)),
                None => {
                    let message = format!(
                        "`{key}` {} must contain only strings, not {}",
                        section.place,
                        describe_value(value)
                    );
                    self.error(line, message, None);
                }
            }
        }
        Some(out)
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(
        &mut self,
        section: &Section,
        key: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let field = self.field(section, key)?;
        let words: Vec<&str> = options.iter().map(|(word, _)| *word).collect();
        let expected = format!("one of {}", quoted_list(&words));
        let Some(text) = field.item.as_str() else {
            self.wrong_type(section, &field, &expected, None);
            return None;
        };
        if let Some((_, value)) = options.iter().find(|(word, _)| *word == text) {
            return Some(*value);
        }
        let hint = closest(text, &words).map(|near| format!("did you mean \"{near}\"?"));
        let message = format!(
            "`{key}` {} must be {expected}, not \"{text}\"",
            section.place
        );
        self.error(field.line, message, hint);
        None
    }

    /// The name of an environment variable (`api_key_env`, `key_env`, ...).
    fn env_var_name(&mut self, section: &Section, key: &str) -> Option<String> {
        let name = self.nonempty_string(section, key)?;
        if name.contains(['=', '\0']) || name.trim() != name {
            let line = self.field(section, key).map_or(section.line, |f| f.line);
            let message = format!(
                "`{key}` {} must name an environment variable, not \"{name}\"",
                section.place
            );
            self.error(line, message, Some(format!("e.g. {key} = \"MY_API_KEY\"")));
            return None;
        }
        Some(name)
    }

    /// A secret from the environment; an empty variable counts as unset, so
    /// that `export KEY=` cannot turn into an empty (matching-anything) key.
    fn read_env(&self, var: &str) -> Option<Secret> {
        (self.env)(var)
            .filter(|value| !value.is_empty())
            .map(Secret::new)
    }

    // ----- [server] -----

    fn server(&mut self, section: &Section, route_names: &[&str]) -> Option<Server> {
        self.known_keys(section, SERVER_KEYS);
        let listen = self.listen(section);
        let max_body_bytes = self
            .positive(section, "max_body_bytes")
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let cors_origins = self.strings(section, "cors_origins").unwrap_or_default();
        let cors_origins = cors_origins.into_iter().map(|(s, _)| s).collect();
        let admin_key_env = self.env_var_name(section, "admin_key_env");
        // Unset = admin endpoints off, which is a normal setup, not a warning.
        let admin_key = admin_key_env.as_deref().and_then(|var| self.read_env(var));
        let keys = self.client_keys(section, route_names);

        let (listen, listen_line) = listen?;
        if let Some((message, hint)) = open_listen_problem(&listen, &keys) {
            self.error(listen_line, message, Some(hint));
        }
        Some(Server {
            listen,
            max_body_bytes,
            cors_origins,
            admin_key_env,
            admin_key,
            keys,
        })
    }

    /// `listen` and its line (the section's line when defaulted).
    fn listen(&mut self, section: &Section) -> Option<(SocketAddr, usize)> {
        let Some(field) = self.field(section, "listen") else {
            let default = DEFAULT_LISTEN
                .parse()
                .expect("valid default listen address");
            return Some((default, section.line));
        };
        let text = self.string(section, "listen")?;
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some((addr, field.line)),
            Err(_) => {
                let message = format!(
                    "`listen` {} is not an IP address and port: \"{text}\"",
                    section.place
                );
                let hint = format!(
                    "e.g. \"{DEFAULT_LISTEN}\" (host names such as localhost are not accepted)"
                );
                self.error(field.line, message, Some(hint));
                None
            }
        }
    }

    fn client_keys(&mut self, section: &Section, route_names: &[&str]) -> Vec<ClientKey> {
        let entries = self
            .table_list(section, "keys", |n| format!("in [[server.keys]] #{n}"))
            .unwrap_or_default();
        let mut keys: Vec<ClientKey> = Vec::new();
        for entry in &entries {
            self.known_keys(entry, CLIENT_KEY_KEYS);
            let name = self.required_string(entry, "name", "name = \"team-a\"");
            let key_env =
                self.required_env_var(entry, "key_env", "key_env = \"HERMES_KEY_TEAM_A\"");
            let rpm = self.positive(entry, "rpm");
            let routes = self.route_allowlist(entry, route_names);
            let (Some(name), Some(key_env)) = (name, key_env) else {
                continue;
            };
            if keys.iter().any(|k| k.name == name) {
                let line = self.field(entry, "name").map_or(entry.line, |f| f.line);
                self.error(line, format!("duplicate client key name `{name}`"), None);
                continue;
            }
            let key = self.read_env(&key_env);
            if key.is_none() {
                let line = self.field(entry, "key_env").map_or(entry.line, |f| f.line);
                self.warn(
                    line,
                    format_args!("client key `{name}` cannot be used: {key_env} is not set"),
                );
            }
            keys.push(ClientKey {
                name,
                key_env,
                key,
                rpm,
                routes,
            });
        }
        keys
    }

    /// `routes = [...]` of a client key: "*", names of defined routes, or
    /// "provider/*" for direct `provider/model` addressing.
    fn route_allowlist(&mut self, entry: &Section, route_names: &[&str]) -> Option<Vec<String>> {
        let routes = self.strings(entry, "routes")?;
        let providers: Vec<String> = self.provider_names.clone();
        for (route, line) in &routes {
            let direct = route
                .strip_suffix("/*")
                .is_some_and(|p| providers.iter().any(|name| name == p));
            if route != "*" && !direct && !route_names.contains(&route.as_str()) {
                let message = format!("unknown route `{route}` in `routes` {}", entry.place);
                let hint = reference_hint(
                    route,
                    route_names,
                    "routes",
                    "\"*\" allows every route, \"<provider>/*\" one provider's models",
                );
                self.error(*line, message, Some(hint));
            }
        }
        Some(routes.into_iter().map(|(route, _)| route).collect())
    }

    fn required_string(&mut self, section: &Section, key: &str, example: &str) -> Option<String> {
        if !section.has(key) {
            self.missing(section, key, Some(format!("e.g. {example}")));
            return None;
        }
        self.nonempty_string(section, key)
    }

    fn required_env_var(&mut self, section: &Section, key: &str, example: &str) -> Option<String> {
        if !section.has(key) {
            self.missing(section, key, Some(format!("e.g. {example}")));
            return None;
        }
        self.env_var_name(section, key)
    }

    // ----- [defaults] -----

    fn defaults(&mut self, section: &Section) -> Defaults {
        self.known_keys(section, DEFAULTS_KEYS);
        let d = Defaults::default();
        let defaults = Defaults {
            request_timeout: self
                .nonzero_duration(section, "request_timeout")
                .unwrap_or(d.request_timeout),
            connect_timeout: self
                .nonzero_duration(section, "connect_timeout")
                .unwrap_or(d.connect_timeout),
            first_byte_timeout: self
                .nonzero_duration(section, "first_byte_timeout")
                .unwrap_or(d.first_byte_timeout),
            max_attempts: self
                .positive(section, "max_attempts")
                .unwrap_or(d.max_attempts),
            backoff_base: self
                .duration(section, "backoff_base")
                .unwrap_or(d.backoff_base),
            backoff_max: self
                .duration(section, "backoff_max")
                .unwrap_or(d.backoff_max),
            max_retry_wait: self
                .duration(section, "max_retry_wait")
                .unwrap_or(d.max_retry_wait),
            cooldown: self.duration(section, "cooldown").unwrap_or(d.cooldown),
        };
        if defaults.backoff_base > defaults.backoff_max {
            // Point at whichever of the two the user wrote.
            let line = self
                .field(section, "backoff_base")
                .or_else(|| self.field(section, "backoff_max"))
                .map_or(section.line, |f| f.line);
            let message = format!(
                "`backoff_base` ({}) is longer than `backoff_max` ({}) {}",
                humantime::format_duration(defaults.backoff_base),
                humantime::format_duration(defaults.backoff_max),
                section.place
            );
            let hint = "backoff grows from backoff_base up to backoff_max".to_string();
            self.error(line, message, Some(hint));
        }
        defaults
    }

    // ----- [providers.<name>] -----

    fn provider(&mut self, name: &str, section: &Section) -> Option<Provider> {
        self.known_keys(section, PROVIDER_KEYS);
        // "provider/model" addressing splits on the first '/', so a provider
        // name containing one could never be addressed.
        self.check_name(name, section, "provider");
        let kind = self.provider_kind(section);
        let base_url = self.base_url(section, kind);
        let api_key_env = self.env_var_name(section, "api_key_env");
        let rpm = self.positive(section, "rpm");
        let tpm = self.positive(section, "tpm");
        let headers = self.headers(section);
        let mock = self.mock_settings(section, kind);

        // A missing key disables the provider rather than failing the file, so
        // the embedded config runs with no keys set (the demo answers).
        let (api_key, enabled) = match &api_key_env {
            None => (None, true),
            Some(var) => match self.read_env(var) {
                Some(secret) => (Some(secret), true),
                None => {
                    let line = self
                        .field(section, "api_key_env")
                        .map_or(section.line, |f| f.line);
                    self.warn(
                        line,
                        format_args!("provider `{name}` disabled: {var} is not set"),
                    );
                    (None, false)
                }
            },
        };
        Some(Provider {
            name: name.to_string(),
            kind: kind?,
            base_url,
            api_key_env,
            api_key,
            enabled,
            rpm,
            tpm,
            headers,
            mock,
        })
    }

    /// Route and provider names become parts of model ids ("provider/model").
    fn check_name(&mut self, name: &str, section: &Section, what: &str) {
        if name.trim().is_empty() {
            self.error(
                section.line,
                format!("a {what} name must not be empty"),
                None,
            );
        } else if name.contains('/') {
            let message = format!("{what} name `{name}` must not contain '/'");
            let hint = "clients address one provider's model as \"provider/model\", so '/' \
                        would be ambiguous"
                .to_string();
            self.error(section.line, message, Some(hint));
        }
    }

    /// The kind, still returned for "anthropic" (after reporting it) so that
    /// the provider's other keys are checked against the right kind.
    fn provider_kind(&mut self, section: &Section) -> Option<ProviderKind> {
        if !section.has("kind") {
            self.missing(section, "kind", Some("e.g. kind = \"openai\"".into()));
            return None;
        }
        let kind = self.choice(
            section,
            "kind",
            &[
                ("openai", ProviderKind::OpenAi),
                ("anthropic", ProviderKind::Anthropic),
                ("mock", ProviderKind::Mock),
            ],
        )?;
        if kind == ProviderKind::Anthropic {
            let line = self.field(section, "kind").map_or(section.line, |f| f.line);
            let hint = "use kind = \"openai\" with an OpenAI-compatible endpoint".to_string();
            self.error(
                line,
                "provider kind \"anthropic\" is not supported by this build",
                Some(hint),
            );
        }
        Some(kind)
    }

    fn base_url(&mut self, section: &Section, kind: Option<ProviderKind>) -> Option<String> {
        let example = "e.g. base_url = \"https://api.openai.com/v1\"";
        match kind {
            Some(ProviderKind::Mock) => {
                if let Some(field) = self.field(section, "base_url") {
                    let message = format!(
                        "`base_url` is not allowed {}: kind = \"mock\" has no upstream",
                        section.place
                    );
                    self.error(field.line, message, Some("remove base_url".into()));
                }
                return None;
            }
            Some(_) if !section.has("base_url") => {
                self.missing(section, "base_url", Some(example.into()));
                return None;
            }
            _ => {}
        }
        let url = self.nonempty_string(section, "base_url")?;
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|host| host.trim_end_matches('/').is_empty()) {
            let line = self
                .field(section, "base_url")
                .map_or(section.line, |f| f.line);
            let message = format!(
                "`base_url` {} must start with http:// or https://, not \"{url}\"",
                section.place
            );
            self.error(line, message, Some(example.into()));
            return None;
        }
        // Paths are appended as "{base_url}/chat/completions".
        Some(url.trim_end_matches('/').to_string())
    }

    /// Extra upstream headers, in file order.
    fn headers(&mut self, section: &Section) -> Vec<(String, String)> {
        let Some(field) = self.field(section, "headers") else {
            return Vec::new();
        };
        let Some(table) = field.item.as_table_like() else {
            let hint = Some("e.g. headers = { \"X-Title\" = \"hermes-proxy\" }".to_string());
            self.wrong_type(section, &field, "a table of header names to strings", hint);
            return Vec::new();
        };
        let mut headers = Vec::new();
        for (name, item) in table.iter() {
            let line = self.line_of(item.span()).unwrap_or(field.line);
            let Some(value) = item.as_str() else {
                let message = format!(
                    "header `{name}` {} must be a string, not {}",
                    section.place,
                    describe(item)
                );
                self.error(line, message, None);
                continue;
            };
            if !is_header_name(name) {
                let message = format!("`{name}` {} is not a valid HTTP header name", section.place);
                self.error(line, message, None);
            } else if value.contains(['\r', '\n', '\0']) {
                let message = format!(
                    "header `{name}` {} must not contain line breaks",
                    section.place
                );
                self.error(line, message, None);
            } else {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        headers
    }

    fn mock_settings(&mut self, section: &Section, kind: Option<ProviderKind>) -> MockSettings {
        let d = MockSettings::default();
        if kind.is_some_and(|k| k != ProviderKind::Mock) {
            // Silently ignoring them would hide a kind = "..." mistake.
            for key in MOCK_KEYS {
                if let Some(field) = self.field(section, key) {
                    let message = format!(
                        "`{key}` {} only applies to kind = \"mock\" providers",
                        section.place
                    );
                    self.error(field.line, message, Some(format!("remove {key}")));
                }
            }
            return d;
        }
        MockSettings {
            first_byte_delay: self
                .duration(section, "first_byte_delay")
                .unwrap_or(d.first_byte_delay),
            chunk_delay: self
                .duration(section, "chunk_delay")
                .unwrap_or(d.chunk_delay),
            rate_limit_ratio: self
                .ratio(section, "rate_limit_ratio")
                .unwrap_or(d.rate_limit_ratio),
            context_error_ratio: self
                .ratio(section, "context_error_ratio")
                .unwrap_or(d.context_error_ratio),
        }
    }

    // ----- [routes.<name>] -----

    fn route(&mut self, name: &str, section: &Section, provider_names: &[&str]) -> Route {
        self.known_keys(section, ROUTE_KEYS);
        self.check_name(name, section, "route");
        let strategy = self
            .choice(
                section,
                "strategy",
                &[
                    ("fallback", Strategy::Fallback),
                    ("weighted", Strategy::Weighted),
                    ("latency", Strategy::Latency),
                ],
            )
            .unwrap_or(Strategy::Fallback);
        let compression = self
            .choice(section, "compression", &[("auto", true), ("off", false)])
            .unwrap_or(true);
        let agent = self.boolean(section, "agent").unwrap_or(false);
        if agent {
            let line = self
                .field(section, "agent")
                .map_or(section.line, |f| f.line);
            let hint = Some("set agent = false".to_string());
            self.error(line, "the agent loop is not available in this build", hint);
        }
        let resume = self.boolean(section, "resume").unwrap_or(false);
        let targets = self.targets(name, section, provider_names);
        Route {
            name: name.to_string(),
            strategy,
            compression,
            agent,
            resume,
            targets,
        }
    }

    fn targets(&mut self, route: &str, section: &Section, provider_names: &[&str]) -> Vec<Target> {
        let example = "e.g. targets = [{ provider = \"demo\", model = \"demo\" }]";
        if !section.has("targets") {
            self.missing(section, "targets", Some(example.into()));
            return Vec::new();
        }
        let place_of = |n: usize| format!("in target {n} of [routes.{route}]");
        let Some(entries) = self.table_list(section, "targets", place_of) else {
            return Vec::new();
        };
        if entries.is_empty() {
            let line = self
                .field(section, "targets")
                .map_or(section.line, |f| f.line);
            let message = format!("`targets` {} must list at least one target", section.place);
            self.error(line, message, Some(example.into()));
        }
        entries
            .iter()
            .filter_map(|entry| self.target(entry, provider_names))
            .collect()
    }

    fn target(&mut self, entry: &Section, provider_names: &[&str]) -> Option<Target> {
        self.known_keys(entry, TARGET_KEYS);
        let provider = self.required_string(entry, "provider", "provider = \"demo\"");
        if let Some(provider) = &provider {
            if !provider_names.contains(&provider.as_str()) {
                let line = self.field(entry, "provider").map_or(entry.line, |f| f.line);
                let message = format!("unknown provider `{provider}` {}", entry.place);
                let hint = reference_hint(
                    provider,
                    provider_names,
                    "providers",
                    "add a [providers.<name>] table",
                );
                self.error(line, message, Some(hint));
            }
        }
        let model = self.required_string(entry, "model", "model = \"gpt-4o-mini\"");
        let context_window = self.positive(entry, "context_window");
        let weight = self.positive(entry, "weight").unwrap_or(1);
        Some(Target {
            provider: provider?,
            model: model?,
            context_window,
            weight,
        })
    }

    // ----- [agent] and [store] -----

    fn agent(&mut self, section: &Section) -> Agent {
        self.known_keys(section, AGENT_KEYS);
        let workspace = self
            .nonempty_string(section, "workspace")
            .unwrap_or_else(|| DEFAULT_WORKSPACE.to_string());
        let tools = match self.strings(section, "tools") {
            Some(tools) => self.known_tools(section, tools),
            None => DEFAULT_TOOLS.iter().map(|t| t.to_string()).collect(),
        };
        let terminal_allow = self.strings(section, "terminal_allow").unwrap_or_default();
        for (program, line) in &terminal_allow {
            if program.trim().is_empty() {
                let message = format!(
                    "`terminal_allow` {} must not contain empty names",
                    section.place
                );
                self.error(*line, message, None);
            }
        }
        Agent {
            workspace,
            tools,
            terminal_allow: terminal_allow.into_iter().map(|(p, _)| p).collect(),
            max_steps: self
                .positive(section, "max_steps")
                .unwrap_or(DEFAULT_MAX_STEPS),
            tool_timeout: self
                .nonzero_duration(section, "tool_timeout")
                .unwrap_or(DEFAULT_TOOL_TIMEOUT),
            web_allow_private: self.boolean(section, "web_allow_private").unwrap_or(false),
        }
    }

    /// A misspelt tool name would otherwise just never be offered to the model.
    fn known_tools(&mut self, section: &Section, tools: Vec<(String, usize)>) -> Vec<String> {
        for (tool, line) in &tools {
            if !KNOWN_TOOLS.contains(&tool.as_str()) {
                let message = format!("unknown tool `{tool}` in `tools` {}", section.place);
                let hint = match closest(tool, KNOWN_TOOLS) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known tools: {}", KNOWN_TOOLS.join(", ")),
                };
                self.error(*line, message, Some(hint));
            }
        }
        tools.into_iter().map(|(tool, _)| tool).collect()
    }

    fn compression(&mut self, section: &Section, route_names: &[&str]) -> Compression {
        self.known_keys(section, COMPRESSION_KEYS);
        let defaults = super::CompressionSettings::default();
        let summarizer = self.nonempty_string(section, "summarizer");
        if let Some(route) = &summarizer {
            if !route_names.contains(&route.as_str()) {
                let line = self
                    .field(section, "summarizer")
                    .map_or(section.line, |f| f.line);
                let hint = reference_hint(
                    route,
                    route_names,
                    "routes",
                    "leave it out to summarize with the request's own route",
                );
                self.error(
                    line,
                    format!("`summarizer` names route `{route}`, which is not defined"),
                    Some(hint),
                );
            }
        }
        let target_ratio = self
            .ratio(section, "target_ratio")
            .unwrap_or(defaults.target_ratio);
        if target_ratio <= 0.0 || target_ratio >= 1.0 {
            let line = self
                .field(section, "target_ratio")
                .map_or(section.line, |f| f.line);
            let hint =
                Some("e.g. 0.5: a summarized conversation fills half the window".to_string());
            self.error(
                line,
                "`target_ratio` in [compression] must be between 0 and 1, exclusive".to_string(),
                hint,
            );
        }
        Compression {
            summarizer,
            settings: super::CompressionSettings {
                keep_tool_outputs: self
                    .positive(section, "keep_tool_outputs")
                    .unwrap_or(defaults.keep_tool_outputs),
                recent_tokens: self
                    .positive(section, "recent_tokens")
                    .unwrap_or(defaults.recent_tokens),
                target_ratio,
            },
        }
    }

    fn store(&mut self, section: &Section) -> Store {
        self.known_keys(section, STORE_KEYS);
        let path = self
            .nonempty_string(section, "path")
            .unwrap_or_else(|| DEFAULT_STORE_PATH.to_string());
        Store { path }
    }
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

/// The candidate within a small edit distance of `word`, if any.
fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(&word.to_lowercase(), c), *c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// RFC 9110 token characters; anything else would fail when the request is built.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// "a string", "an integer", ... for type errors.
fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(value) => describe_value(value),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::super::EMBEDDED;
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_ok(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
        match parse(text, "routes.toml", env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    fn parse_err(text: &str) -> Vec<ConfigError> {
        match parse(text, "routes.toml", &no_env) {
            Ok(_) => panic!("expected errors"),
            Err(errors) => errors,
        }
    }

    /// The single error on `line`, failing if there is not exactly one.
    fn error_on(errors: &[ConfigError], line: usize) -> &ConfigError {
        let on_line: Vec<_> = errors.iter().filter(|e| e.line == line).collect();
        assert_eq!(on_line.len(), 1, "errors on line {line}: {errors:#?}");
        on_line[0]
    }

    const MINIMAL: &str = r#"
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
            format!(
                "routes.toml:{kimi_line}: provider `kimi` disabled: MOONSHOT_API_KEY is not set"
            )
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
        let anthropic = error_on(&errors, 2);
        assert_eq!(
            anthropic.message,
            "provider kind \"anthropic\" is not supported by this build"
        );
        assert_eq!(
            anthropic.hint.as_deref(),
            Some("use kind = \"openai\" with an OpenAI-compatible endpoint")
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
        let agent = error_on(&errors, 7);
        assert_eq!(
            agent.message,
            "the agent loop is not available in this build"
        );
        assert_eq!(agent.hint.as_deref(), Some("set agent = false"));
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
}
