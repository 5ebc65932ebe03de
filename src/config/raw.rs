//! The shape of routes.toml: every table and key, declared once.
//!
//! Each field's type says how its value is read (`NonZero` durations,
//! positive integers, `EnvVar` names...); `=> example` makes a key required
//! and gives the value shown in the hint. The list of valid keys for "unknown
//! key" errors comes from these declarations, and `config show` writes the
//! typed [`Config`](super::Config), whose field names match these, so adding a
//! key means adding it here and to the typed struct (the `show_round_trips`
//! test fails if the two disagree).

use std::net::SocketAddr;
use std::time::Duration;

use toml_span::Value;

use super::error::{Place, Report};
use super::read::{read_choice, section, At, Choice, Entries, Entry, EnvVar, Field, Map, Named};
use super::read::{NonEmpty, NonZero, Ratio, Read};
use super::{ProviderKind, Strategy};

pub(super) const TARGETS_EXAMPLE: &str = "[{ provider = \"demo\", model = \"demo\" }]";

section! {
    /// The whole file.
    pub(super) struct RawConfig {
        server: RawServer,
        defaults: RawDefaults,
        providers: Named<RawProvider>,
        routes: Named<RawRoute>,
        agent: RawAgent,
        store: RawStore,
        compression: RawCompression,
        cluster: RawCluster,
    }
}

section! {
    /// `[server]`
    pub(super) struct RawServer {
        listen: SocketAddr,
        max_body_bytes: usize,
        header_read_timeout: NonZero,
        body_read_timeout: NonZero,
        idle_timeout: NonZero,
        max_connections: u32,
        max_answer_bytes: usize,
        max_event_bytes: usize,
        cors_origins: Vec<Field<String>>,
        admin_key_env: EnvVar,
        keys: Entries<RawClientKey>,
    }
}

section! {
    /// `[[server.keys]]`: one client and its key.
    pub(super) struct RawClientKey {
        name: NonEmpty => "\"team-a\"",
        key_env: EnvVar => "\"HERMES_KEY_TEAM_A\"",
        rpm: u32,
        /// "*", route names, or "provider/*".
        routes: Vec<Field<String>>,
    }
}

impl Entry for RawClientKey {}

section! {
    /// `[defaults]`
    pub(super) struct RawDefaults {
        request_timeout: NonZero,
        connect_timeout: NonZero,
        first_byte_timeout: NonZero,
        max_attempts: u32,
        backoff_base: Duration,
        backoff_max: Duration,
        max_retry_wait: Duration,
        cooldown: Duration,
        max_cooldown: NonZero,
    }
}

section! {
    /// `[providers.<name>]`
    pub(super) struct RawProvider {
        kind: ProviderKind => "\"openai\"",
        base_url: NonEmpty,
        api_key_env: EnvVar,
        rpm: u32,
        tpm: u64,
        headers: Map<String>,
    }
    flatten {
        mock: RawMock,
    }
}

section! {
    /// The keys of a kind = "mock" provider, written in its own table.
    pub(super) struct RawMock {
        first_byte_delay: Duration,
        chunk_delay: Duration,
        rate_limit_ratio: Ratio,
        context_error_ratio: Ratio,
    }
}

section! {
    /// `[routes.<name>]`
    pub(super) struct RawRoute {
        strategy: Strategy,
        compression: CompressionMode,
        agent: bool,
        resume: bool,
        targets: Entries<RawTarget> => TARGETS_EXAMPLE,
    }
}

section! {
    /// One entry of a route's `targets`.
    pub(super) struct RawTarget {
        provider: NonEmpty => "\"demo\"",
        model: NonEmpty => "\"gpt-4o-mini\"",
        context_window: u32,
        weight: u32,
    }
}

impl Entry for RawTarget {
    fn place(_key: &str, n: usize, parent: &Place) -> String {
        format!("in target {n} of [{}]", parent.path)
    }
}

section! {
    /// `[agent]`
    pub(super) struct RawAgent {
        workspace: NonEmpty,
        tools: Vec<Field<String>>,
        terminal_allow: Vec<Field<String>>,
        max_steps: u32,
        tool_timeout: NonZero,
        web_allow_private: bool,
    }
}

section! {
    /// `[store]`
    pub(super) struct RawStore {
        path: NonEmpty,
        max_responses: u32,
        ttl: NonZero,
    }
}

section! {
    /// `[cluster]`
    pub(super) struct RawCluster {
        redis_url_env: EnvVar => "\"HERMES_REDIS_URL\"",
        prefix: NonEmpty,
        timeout: NonZero,
    }
}

section! {
    /// `[compression]`
    pub(super) struct RawCompression {
        summarizer: NonEmpty,
        recent_tokens: u32,
        target_ratio: Ratio,
        keep_tool_outputs: usize,
    }
}

/// A route's `compression`: "auto" (on) or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CompressionMode(pub bool);

impl Choice for ProviderKind {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("openai", ProviderKind::OpenAi),
        ("anthropic", ProviderKind::Anthropic),
        ("mock", ProviderKind::Mock),
    ];
}

impl Choice for Strategy {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("fallback", Strategy::Fallback),
        ("weighted", Strategy::Weighted),
        ("latency", Strategy::Latency),
    ];
}

impl Choice for CompressionMode {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("auto", CompressionMode(true)),
        ("off", CompressionMode(false)),
    ];
}

macro_rules! choice_reader {
    ($($t:ty),*) => {$(
        impl Read for $t {
            fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
                read_choice(value, at, cx)
            }
        }
    )*};
}
choice_reader!(ProviderKind, Strategy, CompressionMode);
