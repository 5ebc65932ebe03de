//! The command line: `serve` (default), `check`, `models`, `config show`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::BodyExt;

use crate::config::{self, Config, ConfigError, ProviderKind};

#[derive(Debug, Parser)]
#[command(
    name = "hermes-proxy",
    version,
    about = "Every LLM provider behind one OpenAI-compatible API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// routes.toml to use [default: ./routes.toml, else the embedded default]
    #[arg(long, global = true, env = "HERMES_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve on, overriding [server] listen.
    #[arg(long, global = true, env = "HERMES_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the proxy (the default command).
    Serve,
    /// Validate the config: every error as `path:line: message`; exit 2 on error.
    Check,
    /// List routes and their targets; --probe asks each provider's /models.
    Models {
        /// Ask each enabled provider which model ids it serves.
        #[arg(long)]
        probe: bool,
    },
    /// Config commands.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective config, secrets redacted.
    Show,
}

/// Where the config text comes from.
pub struct Source {
    pub path: Option<PathBuf>,
    pub label: String,
    pub text: String,
}

impl Cli {
    /// The named file; else ./routes.toml when it exists; else the embedded default.
    pub fn source(&self) -> anyhow::Result<Source> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("routes.toml")).filter(|p| p.exists()),
        };
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                Ok(Source {
                    label: path.display().to_string(),
                    path: Some(path),
                    text,
                })
            }
            None => Ok(Source {
                path: None,
                label: "<embedded>".into(),
                text: config::EMBEDDED.into(),
            }),
        }
    }
}

impl Source {
    pub fn parse(&self) -> Result<Config, Vec<ConfigError>> {
        config::parse(&self.text, &self.label, &|name| std::env::var(name).ok())
    }
}

/// `check`: every warning and error, then a one-line verdict. Exit 2 on error.
pub fn check(source: &Source) -> i32 {
    match source.parse() {
        Ok(config) => {
            for w in &config.warnings {
                println!("warning: {w}");
            }
            let enabled = config.providers.iter().filter(|p| p.enabled).count();
            println!(
                "{}: ok ({} routes, {} providers, {} enabled)",
                source.label,
                config.routes.len(),
                config.providers.len(),
                enabled
            );
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", source.label, errors.len());
            2
        }
    }
}

/// `models`: every route and target; with `probe`, which configured ids each
/// provider's /models does not list (the usual "model not found" trap).
pub async fn models(config: &Config, probe: bool) -> i32 {
    let client = crate::upstream::Client::new(config.defaults.connect_timeout);
    let mut listed: std::collections::HashMap<String, Result<Vec<String>, String>> =
        Default::default();
    if probe {
        for p in config
            .providers
            .iter()
            .filter(|p| p.enabled && p.kind == ProviderKind::OpenAi)
        {
            listed.insert(p.name.clone(), probe_models(&client, p).await);
        }
    }
    let mut missing = 0;
    for route in &config.routes {
        println!(
            "{} (strategy: {})",
            route.name,
            format!("{:?}", route.strategy).to_lowercase()
        );
        for t in &route.targets {
            let provider = config.provider(&t.provider);
            let state = match provider {
                Some(p) if !p.enabled => "disabled (key variable unset)".to_owned(),
                Some(p) => match listed.get(&p.name) {
                    Some(Ok(ids)) if ids.iter().any(|id| id == &t.model) => {
                        "listed by provider".to_owned()
                    }
                    Some(Ok(_)) => {
                        missing += 1;
                        "NOT LISTED by the provider's /models: requests will fail with model not found".to_owned()
                    }
                    Some(Err(e)) => format!("probe failed: {e}"),
                    None => "enabled".to_owned(),
                },
                None => "unknown provider".to_owned(),
            };
            println!("  {}/{}  {state}", t.provider, t.model);
        }
    }
    i32::from(missing > 0)
}

async fn probe_models(
    client: &crate::upstream::Client,
    p: &config::Provider,
) -> Result<Vec<String>, String> {
    let url = format!("{}/models", p.base_url.as_deref().unwrap_or_default());
    let mut req = http::Request::get(url);
    if let Some(key) = &p.api_key {
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", key.expose()),
        );
    }
    for (k, v) in &p.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(crate::body::empty()).map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = client.send(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(String::from))
            .collect())
    };
    tokio::time::timeout(Duration::from_secs(15), fetch)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// `config show`: the effective config as TOML, with every secret replaced
/// by whether it is set.
pub fn show(config: &Config) -> String {
    config.to_toml()
}
