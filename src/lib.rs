//! hermes-proxy: every LLM provider behind one OpenAI-compatible API.
//!
//! A request's path, one module per stage, in the order it runs:
//! - [`server`]: accept loop, HTTP/1.1 + h2c, graceful shutdown
//! - [`api`]: request id, CORS, dispatch by path, errors to responses, metrics
//! - [`proxy`]: auth ([`auth`]), body limits and checks, routing ([`route`]), the deadline
//! - [`failover`]: attempts over a route's targets in the [`balance`] strategy's
//!   order, with [`cooldown`]s, backoff and proactive [`limits`]
//! - [`provider`]: one attempt: OpenAI-wire or built-in mock upstream; error
//!   classification ([`provider::classify`]) and normalization ([`provider::normalize`])
//! - [`upstream`]: the pooled hyper client (rustls, HTTP/2 by ALPN)
//! - [`relay`]: a stream's remaining events back to the client
//!
//! Around it: [`config`] (routes.toml, validated with every error at once;
//! [`reload`]ed live),
//! [`state`] (the runtime behind an `ArcSwap`), [`metrics`], [`cli`].

pub mod api;
pub mod auth;
pub mod balance;
pub mod body;
pub mod cli;
pub mod compress;
pub mod config;
pub mod context;
pub mod cooldown;
pub mod error;
pub mod failover;
pub mod limits;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod route;
pub mod server;
pub mod state;
pub mod upstream;
