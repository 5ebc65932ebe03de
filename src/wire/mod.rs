//! Dialects at the edges: how requests, answers, streams and errors look on
//! the wire. Parsing and encoding only; nothing here sends or routes.
//!
//! - [`chat`]: the Chat Completions dialect (and completions, embeddings)
//! - [`sse`]: server-sent events, read and written
//! - [`encode`]: a relayed stream written in the client's dialect
//! - [`usage`]: one schema for usage and reasoning, whatever the upstream called them
//! - [`error`]: errors in the OpenAI shape
//! - [`responses`]: the Responses dialect
//! - [`messages`]: the Anthropic Messages dialect, as upstream and as ingress
//! - [`agent`]: the agent loop's tool calls, as each dialect shows them
//! - [`visit`]: pieces of the visitors that read JSON without building it
//!
//! A new dialect (Responses, Anthropic Messages) is a new file here that
//! translates onto the same canonical request and back.

pub mod agent;
pub mod chat;
pub mod encode;
pub mod error;
pub mod messages;
pub mod responses;
pub mod sse;
pub mod usage;
pub(crate) mod visit;
