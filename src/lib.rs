//! hermes-proxy: every LLM provider behind one OpenAI-compatible API.
//!
//! A request's path, one module per stage, in the order it runs (a module
//! only imports modules listed after it; `tests/architecture.rs` checks it):
//! - [`server`]: accept loop, HTTP/1.1 + h2c, graceful shutdown
//! - [`http`]: the edge layers (request id, access log and metrics, CORS),
//!   dispatch by path; a proxied request is read in its dialect and becomes
//!   one canonical [`pipeline::Exchange`]
//! - [`runtime`]: the current config's [`runtime::Generation`] (auth, every
//!   route's stack) behind an `ArcSwap`, [`runtime::reload`]ed live
//! - [`pipeline`]: a route's stack as a tower `Service`: its layers around
//!   [`pipeline::Failover`] (attempts, backoff, cooldowns, with per-attempt
//!   hooks for proactive limits and compression); the stream relay
//! - [`route`]: a client's `model` -> the plan of targets
//! - [`provider`]: `trait Provider`, one attempt: OpenAI-wire or the built-in
//!   mock; error classification
//! - [`tools`]: the agent loop's built-in tools (files, search, web, memory,
//!   terminal) and their sandbox; beside [`provider`], below the pipeline
//! - [`upstream`]: the pooled hyper client (rustls, HTTP/2 by ALPN); with an
//!   address-filtering resolver for the agent's `web_fetch`
//!
//! Beneath them all: [`auth`], [`metrics`], [`cluster`] (what replicas share
//! through Redis with `[cluster]`: cooldowns, limits, the store, caches;
//! local state while Redis is away), [`store`] (stored responses: the
//! embedded SQLite file), [`wire`] (dialects: parsing and
//! encoding), [`error`], [`config`] (routes.toml, every error at once) and
//! [`body`]. [`cli`] is the command line's other commands.

pub mod auth;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod provider;
pub mod route;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tools;
pub mod upstream;
pub mod wire;
