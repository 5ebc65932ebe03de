//! The middle of the request path: one canonical [`Exchange`] goes down a
//! route's stack, one [`Served`] answer comes back.
//!
//! - [`exchange`]: the canonical request and answer, the [`RouteService`] type
//!   and the per-config [`RouteTable`]
//! - [`service`]: builds each route's stack (its layers around [`Failover`])
//! - [`failover`]: attempts over the plan's targets; per-attempt hooks for
//!   proactive limits and compression
//! - [`agent`]: the agent loop, a layer on routes with `agent = true`
//! - [`compress`]: fitting a conversation into a context window
//! - [`reasoning`]: reasoning restored on the tool-call turns clients send back
//! - [`relay`]: a stream's remaining events back to the client
//! - [`handles`]: the process-lifetime state the pipeline reads and updates

pub mod agent;
pub mod compress;
pub mod exchange;
pub mod failover;
pub mod handles;
pub mod reasoning;
pub mod relay;
pub mod service;

pub use exchange::{AgentReport, Caller, Exchange, RouteService, RouteTable, Served};
pub use failover::Failover;
pub use handles::Handles;
