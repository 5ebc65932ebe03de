//! routes.toml: the validated configuration the rest of the proxy reads.
//!
//! `parse` turns the file's text into a [`Config`], or into every error it
//! contains at once (each with file, line and a hint), so `check` can list
//! them all and a reload can refuse a broken file while keeping the old one.

mod error;
mod parse;
mod raw;
mod read;
mod show;
#[cfg(test)]
mod tests;
mod validate;

pub use error::ConfigError;
pub use parse::parse;
pub use validate::{check_listen, KNOWN_TOOLS};

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// Where the proxy listens when `[server] listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The repository's routes.toml, compiled in: used when no file is given and
/// ./routes.toml does not exist.
pub const EMBEDDED: &str = include_str!("../../routes.toml");

/// A secret read from the environment. Its `Debug` never shows the value, so
/// a stray `{:?}` in a log line cannot leak it, and it has no `Serialize`, so
/// `config show` cannot print it: every field holding one is skipped there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in constant time, so timing does not reveal how much of a
    /// guessed key was right.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `config show` serializes this (see `show.rs`), so its field names are the
/// keys of routes.toml.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the text came from: a path, or "<embedded>".
    #[serde(skip)]
    pub source: String,
    pub server: Server,
    pub defaults: Defaults,
    /// In file order.
    #[serde(serialize_with = "show::by_name")]
    pub providers: Vec<Provider>,
    /// In file order.
    #[serde(serialize_with = "show::by_name")]
    pub routes: Vec<Route>,
    pub agent: Agent,
    pub store: Store,
    pub compression: Compression,
    /// `[cluster]`: None without the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Non-fatal findings, formatted `path:line: message` (e.g. a provider
    /// disabled because its key variable is unset).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// A client must finish sending its request headers within this.
    #[serde(serialize_with = "show::duration")]
    pub header_read_timeout: Duration,
    /// ... and its body within this (else 408 `request_timeout`).
    #[serde(serialize_with = "show::duration")]
    pub body_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    #[serde(serialize_with = "show::duration")]
    pub idle_timeout: Duration,
    /// Open client connections; beyond it new ones wait in the backlog.
    pub max_connections: u32,
    /// A non-streamed upstream answer larger than this: 502, no retry.
    pub max_answer_bytes: usize,
    /// An SSE line or event larger than this ends the stream with an error.
    pub max_event_bytes: usize,
    pub cors_origins: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key_env: Option<String>,
    #[serde(skip)]
    pub admin_key: Option<Secret>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ClientKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientKey {
    pub name: String,
    pub key_env: String,
    /// None when the variable is unset: the key is then unusable (warning).
    #[serde(skip)]
    pub key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// None = every route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Defaults {
    #[serde(serialize_with = "show::duration")]
    pub request_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "show::duration")]
    pub first_byte_timeout: Duration,
    pub max_attempts: u32,
    #[serde(serialize_with = "show::duration")]
    pub backoff_base: Duration,
    #[serde(serialize_with = "show::duration")]
    pub backoff_max: Duration,
    #[serde(serialize_with = "show::duration")]
    pub max_retry_wait: Duration,
    #[serde(serialize_with = "show::duration")]
    pub cooldown: Duration,
    /// Every hint (Retry-After, reset headers, Kimi's text) is capped at this.
    #[serde(serialize_with = "show::duration")]
    pub max_cooldown: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            max_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            max_retry_wait: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Mock,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// The key of its [providers.<name>] table.
    #[serde(skip)]
    pub name: String,
    #[serde(serialize_with = "show::word")]
    pub kind: ProviderKind,
    /// Without a trailing slash. None only for kind = "mock".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(skip)]
    pub api_key: Option<Secret>,
    /// False when `api_key_env` names an unset variable.
    #[serde(skip)]
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Extra headers sent upstream, in file order.
    #[serde(
        serialize_with = "show::headers",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<(String, String)>,
    /// Written in the provider's own table; other kinds only have defaults.
    #[serde(flatten, skip_serializing_if = "MockSettings::is_default")]
    pub mock: MockSettings,
}

#[cfg(test)]
impl Provider {
    /// A provider with a name and a kind and nothing else set, for tests.
    pub(crate) fn named(name: &str, kind: ProviderKind) -> Provider {
        Provider {
            name: name.into(),
            kind,
            base_url: None,
            api_key_env: None,
            api_key: None,
            enabled: true,
            rpm: None,
            tpm: None,
            headers: vec![],
            mock: MockSettings::default(),
        }
    }
}

/// How the built-in simulated upstream behaves (kind = "mock" only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MockSettings {
    /// Delay before the first byte of an answer.
    #[serde(serialize_with = "show::duration")]
    pub first_byte_delay: Duration,
    /// Delay between streamed words.
    #[serde(serialize_with = "show::duration")]
    pub chunk_delay: Duration,
    /// Fraction (0..=1) of requests answered with an OpenAI-style 429.
    pub rate_limit_ratio: f64,
    /// Fraction (0..=1) of requests answered with a context-length 400.
    pub context_error_ratio: f64,
}

impl MockSettings {
    fn is_default(&self) -> bool {
        *self == MockSettings::default()
    }
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            first_byte_delay: Duration::ZERO,
            chunk_delay: Duration::from_millis(20),
            rate_limit_ratio: 0.0,
            context_error_ratio: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fallback,
    Weighted,
    Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The key of its [routes.<name>] table.
    #[serde(skip)]
    pub name: String,
    #[serde(serialize_with = "show::word")]
    pub strategy: Strategy,
    /// Written "auto" / "off".
    #[serde(serialize_with = "show::compression_mode")]
    pub compression: bool,
    pub agent: bool,
    pub resume: bool,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub provider: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub workspace: String,
    pub tools: Vec<String>,
    pub terminal_allow: Vec<String>,
    pub max_steps: u32,
    #[serde(serialize_with = "show::duration")]
    pub tool_timeout: Duration,
    pub web_allow_private: bool,
}

/// `[compression]`: how conversations are shrunk to fit a context window.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Compression {
    /// The route that writes summaries; None = the request's own route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summarizer: Option<String>,
    /// Written in the [compression] table itself.
    #[serde(flatten)]
    pub settings: CompressionSettings,
}

/// How conversations are compressed (see the compressor).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompressionSettings {
    /// Tool results kept verbatim, newest first.
    pub keep_tool_outputs: usize,
    /// Most tokens of recent turns kept verbatim around a summary.
    pub recent_tokens: u32,
    /// A summarized conversation aims at this share of the window, so a
    /// growing conversation is not compressed again on every turn.
    pub target_ratio: f64,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            keep_tool_outputs: 3,
            recent_tokens: 8000,
            target_ratio: 0.5,
        }
    }
}

/// `[store]`: the embedded store of responses (and, later, agent state).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Store {
    /// One SQLite file; survives restarts.
    pub path: String,
    /// Stored responses kept at most; the oldest go first.
    pub max_responses: u32,
    /// A stored response is forgotten this long after it was made.
    #[serde(serialize_with = "show::duration")]
    pub ttl: Duration,
}

/// `[cluster]`: several replicas share their state through Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub redis_url_env: String,
    /// The URL (it may hold a password), None when the variable is unset.
    #[serde(skip)]
    pub redis_url: Option<Secret>,
    /// Every key this deployment writes starts with `{prefix}:`.
    pub prefix: String,
    /// A Redis call that takes longer counts as Redis being down.
    #[serde(serialize_with = "show::duration")]
    pub timeout: Duration,
}

impl Config {
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
