//! Integration tests: a real proxy on a loopback port, real clients
//! (async-openai, reqwest), and scripted mock upstreams speaking each
//! provider's wire format.

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod anthropic;
mod anthropic_ingress;
mod anthropic_overload;
mod browsers;
mod chat;
mod chromium;
mod clients;
mod compression;
mod errors;
mod failover;
mod hostile_upstream;
mod load;
mod metrics;
mod probe;
mod reasoning;
mod reload;
mod reload_configmap;
mod reload_settle;
mod responses;
mod route_layer;
mod server;
mod streaming;
mod upstream_pool;
