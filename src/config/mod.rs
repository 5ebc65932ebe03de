//! routes.toml: the validated configuration the rest of the proxy reads.
//!
//! `parse` turns the file's text into a [`Config`], or into every error it
//! contains at once (each with file, line and a hint), so `check` can list
//! them all and a reload can refuse a broken file while keeping the old one.

mod parse;

pub use parse::{check_listen, parse, ConfigError};

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The repository's routes.toml, compiled in: used when no file is given and
/// ./routes.toml does not exist.
pub const EMBEDDED: &str = include_str!("../../routes.toml");

/// A secret read from the environment. Its `Debug` never shows the value, so
/// a stray `{:?}` in a log line cannot leak it.
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

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the text came from: a path, or "<embedded>".
    pub source: String,
    pub server: Server,
    pub defaults: Defaults,
    /// In file order.
    pub providers: Vec<Provider>,
    /// In file order.
    pub routes: Vec<Route>,
    pub agent: Agent,
    pub store: Store,
    pub compression: Compression,
    /// Non-fatal findings, formatted `path:line: message` (e.g. a provider
    /// disabled because its key variable is unset).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub cors_origins: Vec<String>,
    pub admin_key_env: Option<String>,
    pub admin_key: Option<Secret>,
    pub keys: Vec<ClientKey>,
}

#[derive(Debug, Clone)]
pub struct ClientKey {
    pub name: String,
    pub key_env: String,
    /// None when the variable is unset: the key is then unusable (warning).
    pub key: Option<Secret>,
    pub rpm: Option<u32>,
    /// None = every route.
    pub routes: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_retry_wait: Duration,
    pub cooldown: Duration,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Mock,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash. None only for kind = "mock".
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key: Option<Secret>,
    /// False when `api_key_env` names an unset variable.
    pub enabled: bool,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// Extra headers sent upstream, in file order.
    pub headers: Vec<(String, String)>,
    pub mock: MockSettings,
}

/// How the built-in simulated upstream behaves (kind = "mock" only).
#[derive(Debug, Clone, PartialEq)]
pub struct MockSettings {
    /// Delay before the first byte of an answer.
    pub first_byte_delay: Duration,
    /// Delay between streamed words.
    pub chunk_delay: Duration,
    /// Fraction (0..=1) of requests answered with an OpenAI-style 429.
    pub rate_limit_ratio: f64,
    /// Fraction (0..=1) of requests answered with a context-length 400.
    pub context_error_ratio: f64,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub strategy: Strategy,
    pub compression: bool,
    pub agent: bool,
    pub resume: bool,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub provider: String,
    pub model: String,
    pub context_window: Option<u32>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub workspace: String,
    pub tools: Vec<String>,
    pub terminal_allow: Vec<String>,
    pub max_steps: u32,
    pub tool_timeout: Duration,
    pub web_allow_private: bool,
}

/// `[compression]`: how conversations are shrunk to fit a context window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Compression {
    /// The route that writes summaries; None = the request's own route.
    pub summarizer: Option<String>,
    pub settings: CompressionSettings,
}

/// How conversations are compressed (see the compressor).
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub path: String,
}

impl Config {
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
